"""`python -m relay` runs the `mailrelay` command."""

import sys

from relay.cli import main

sys.exit(main())
