"""`mailrelay accounts set|show`: an account's recipient-facing settings.

A change is written to the database; delivery on every node reads it within a few seconds."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from relay.account_settings import FIELDS, changed, settings_json
from relay.commands.common import CommandError, account_or_fail, with_storage
from storage.protocols import Storage
from storage.records import AccountSettings


def add_parser(p: argparse.ArgumentParser, with_home: Callable[[argparse.ArgumentParser],
               argparse.ArgumentParser]) -> None:
    sub = p.add_subparsers(dest="accounts_command", required=True)
    sp = with_home(sub.add_parser("set", help="turn List-Unsubscribe, open or click tracking on or off"))
    sp.add_argument("account")
    for f in FIELDS:
        sp.add_argument("--" + f.replace("_", "-"), dest=f, choices=["on", "off"], default=None)
    sp.set_defaults(func=set_settings)
    sp = with_home(sub.add_parser("show", help="an account's settings"))
    sp.add_argument("account")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=show)


def _print(account: str, st: AccountSettings, as_json: bool) -> None:
    doc = settings_json(account, st)
    if as_json:
        print(json.dumps(doc))
        return
    for f in FIELDS:
        print(f"{f.replace('_', '-'):18} {'on' if doc[f] else 'off'}")


def set_settings(args: argparse.Namespace) -> int:
    changes = {f: None if getattr(args, f) is None else getattr(args, f) == "on" for f in FIELDS}
    if all(v is None for v in changes.values()):
        raise CommandError("nothing to set: give --list-unsubscribe, --track-opens or --track-clicks on|off")

    async def run(storage: Storage) -> AccountSettings:
        acct = await account_or_fail(storage, args.account)
        st = changed(await storage.accounts.get_settings(acct.id), changes)
        await storage.accounts.set_settings(acct.id, st)
        return st

    _print(args.account, with_storage(args.home, run), False)
    return 0


def show(args: argparse.Namespace) -> int:
    async def run(storage: Storage) -> AccountSettings:
        return await storage.accounts.get_settings((await account_or_fail(storage, args.account)).id)

    _print(args.account, with_storage(args.home, run), args.json)
    return 0
