"""`python -m relay` runs the `mailrelay` command."""

import sys

from relay.cli import main

if __name__ == "__main__":  # not when a spawned worker process (DKIM signing) re-imports it
    sys.exit(main())
