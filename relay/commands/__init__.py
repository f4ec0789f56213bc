"""The `mailrelay` subcommands, one module per group."""
