"""`mailrelay users set|show API_USER`: an API_USER's overrides of its account's List-Unsubscribe and
tracking settings (`mailrelay accounts set`). Each setting is on, off, or inherit (the default: the
account's value applies). Delivery on every node reads a change within a few seconds."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from relay.account_settings import FIELDS, user_changed, user_settings_json
from relay.commands.common import CommandError, with_storage
from storage.protocols import Storage
from storage.records import ApiUser, ApiUserSettings

_VALUES = {"on": True, "off": False, "inherit": None}


def add_parsers(sub: Any, with_home: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    sp = with_home(sub.add_parser("set", help="override the account's List-Unsubscribe or tracking settings "
                                              "for one API_USER (on|off), or inherit them again"))
    sp.add_argument("api_user")
    for f in FIELDS:
        sp.add_argument("--" + f.replace("_", "-"), dest=f, choices=list(_VALUES), default=None)
    sp.set_defaults(func=set_settings)
    sp = with_home(sub.add_parser("show", help="an API_USER's settings: what applies, and where it comes from"))
    sp.add_argument("api_user")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=show)


async def settings_doc(storage: Storage, user: ApiUser) -> dict[str, Any]:
    own = await storage.accounts.get_user_settings(user.name)
    return user_settings_json(user.name, user.account_name, own, await storage.accounts.get_settings(user.account_id))


async def settings_docs(storage: Storage, users: list[ApiUser]) -> list[dict[str, Any]]:
    """:func:`settings_doc` of many users in a few queries (one per account, one for the overrides)."""
    overrides = await storage.accounts.list_user_settings()
    accounts = {a: await storage.accounts.get_settings(a) for a in {u.account_id for u in users}}
    return [user_settings_json(u.name, u.account_name, overrides.get(u.name, ApiUserSettings()), accounts[u.account_id])
            for u in users]


async def _user(storage: Storage, name: str) -> ApiUser:
    user = await storage.accounts.get_api_user(name)
    if user is None:
        raise CommandError(f"no such API_USER: {name!r}")
    return user


def _print(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc))
        return
    for f in FIELDS:
        source = "account" if doc["overrides"][f] is None else "API_USER"
        print(f"{f.replace('_', '-'):18} {'on' if doc[f] else 'off':4} ({source})")


def set_settings(args: argparse.Namespace) -> int:
    changes = {f: _VALUES[getattr(args, f)] for f in FIELDS if getattr(args, f) is not None}
    if not changes:
        raise CommandError("nothing to set: give --list-unsubscribe, --track-opens or --track-clicks on|off|inherit")

    async def run(storage: Storage) -> dict[str, Any]:
        user = await _user(storage, args.api_user)
        own = user_changed(await storage.accounts.get_user_settings(user.name), changes)
        await storage.accounts.set_user_settings(user.name, own)
        return await settings_doc(storage, user)

    _print(with_storage(args.home, run), False)
    return 0


def show(args: argparse.Namespace) -> int:
    async def run(storage: Storage) -> dict[str, Any]:
        return await settings_doc(storage, await _user(storage, args.api_user))

    _print(with_storage(args.home, run), args.json)
    return 0
