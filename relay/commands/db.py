"""`mailrelay db migrate|status`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from relay.commands.common import with_storage
from storage.protocols import Storage


def add_parser(p: argparse.ArgumentParser, with_home: Callable[[argparse.ArgumentParser],
               argparse.ArgumentParser]) -> None:
    sub = p.add_subparsers(dest="db_command", required=True)
    with_home(sub.add_parser("migrate", help="apply pending schema migrations")).set_defaults(func=migrate)
    with_home(sub.add_parser("status", help="show the schema version")).set_defaults(func=status)


def migrate(args: argparse.Namespace) -> int:
    async def run(storage: Storage) -> list[int]:
        return await storage.migrate()

    applied = with_storage(args.home, run, check_schema=False)
    print(f"applied migrations: {', '.join(map(str, applied))}" if applied else "schema is up to date")
    return 0


def status(args: argparse.Namespace) -> int:
    async def run(storage: Storage) -> str:
        st = await storage.schema_state()
        return f"schema version {st.current} of {st.latest}" + (" (behind: run `mailrelay db migrate`)"
                                                                if st.behind else " (up to date)")

    print(with_storage(args.home, run, check_schema=False))
    return 0
