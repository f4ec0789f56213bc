"""`mailrelay users add|list|revoke|rotate-key|set|show`: API users, the credentials for SMTP AUTH and the
HTTP API (`set`/`show`: their settings, ``relay/commands/user_settings.py``).

A revoke or a new key is written to the database only; every node's authenticator reads the user's
row at each AUTH, so it applies to the next AUTH everywhere without telling a running server."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Callable

from relay.commands import user_settings
from relay.commands.common import CommandError, account_or_fail, with_storage
from relay.keys import generate_key, hash_key
from storage.errors import Conflict
from storage.protocols import Storage
from storage.records import ALL_API_USERS, ApiUser, utcnow

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


def add_parser(p: argparse.ArgumentParser, with_home: Callable[[argparse.ArgumentParser],
               argparse.ArgumentParser]) -> None:
    sub = p.add_subparsers(dest="users_command", required=True)
    sp = with_home(sub.add_parser("add", help="create an API user; prints its key as the last line"))
    sp.add_argument("api_user")
    sp.add_argument("--account", required=True, help="account name (created if new)")
    sp.add_argument("--key", help="use this key (e.g. moving a customer's existing key over)")
    sp.set_defaults(func=add)
    sp = with_home(sub.add_parser("list", help="list API users"))
    sp.add_argument("--account", help="only this account")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=list_users)
    sp = with_home(sub.add_parser("revoke", help="revoke an API user (its key stops working)"))
    sp.add_argument("api_user")
    sp.set_defaults(func=revoke)
    sp = with_home(sub.add_parser("rotate-key", help="give an API user a new key (the old one stops working); "
                                                     "prints the new key as the last line"))
    sp.add_argument("api_user")
    sp.add_argument("--key", help="use this key instead of a generated one")
    sp.set_defaults(func=rotate_key)
    user_settings.add_parsers(sub, with_home)


def _new_key(given: str | None) -> str:
    key = given or generate_key()
    if len(key) < 8:
        raise CommandError("a key must have at least 8 characters")
    return key


def add(args: argparse.Namespace) -> int:
    name: str = args.api_user
    if not _NAME.match(name) or name.lower() == ALL_API_USERS:
        raise CommandError(f"invalid API_USER name {name!r} (letters, digits and ._@+-; not 'all')")
    key = _new_key(args.key)

    async def run(storage: Storage) -> ApiUser:
        acct = await account_or_fail(storage, args.account, create=True)
        key_hash = await asyncio.to_thread(hash_key, key)
        try:
            return await storage.accounts.add_api_user(name, acct.id, key_hash)
        except Conflict:
            raise CommandError(f"API_USER {name!r} already exists") from None

    user = with_storage(args.home, run)
    print(f"created API_USER {user.name} for account {user.account_name}; the key is shown only once:")
    print(key)
    return 0


def _row(u: ApiUser) -> dict[str, object]:
    return {
        "api_user": u.name,
        "account": u.account_name,
        "created_at": u.created_at.isoformat(),
        "revoked_at": u.revoked_at.isoformat() if u.revoked_at else None,
        "active": u.active,
    }


def list_users(args: argparse.Namespace) -> int:
    async def run(storage: Storage) -> tuple[list[ApiUser], list[dict[str, object]]]:
        acct_id = (await account_or_fail(storage, args.account)).id if args.account else None
        users = await storage.accounts.list_api_users(acct_id)
        # --json rows also carry the settings that apply and the API_USER's overrides (`users show`)
        docs = await user_settings.settings_docs(storage, users) if args.json else []
        return users, docs

    users, docs = with_storage(args.home, run)
    if args.json:
        for u, doc in zip(users, docs, strict=True):
            print(json.dumps({**_row(u), **doc}))
        return 0
    print(f"{'API_USER':32} {'ACCOUNT':24} {'STATE':8} CREATED")
    for u in users:
        print(f"{u.name:32} {u.account_name:24} {'active' if u.active else 'revoked':8} {u.created_at:%Y-%m-%d %H:%M}")
    return 0


def revoke(args: argparse.Namespace) -> int:
    async def run(storage: Storage) -> bool:
        return await storage.accounts.revoke_api_user(args.api_user, utcnow())

    if not with_storage(args.home, run):
        raise CommandError(f"no active API_USER {args.api_user!r}")
    print(f"revoked {args.api_user}")
    return 0


def rotate_key(args: argparse.Namespace) -> int:
    key = _new_key(args.key)

    async def run(storage: Storage) -> bool:
        key_hash = await asyncio.to_thread(hash_key, key)
        return await storage.accounts.replace_api_user_key(args.api_user, key_hash)

    if not with_storage(args.home, run):
        raise CommandError(f"no active API_USER {args.api_user!r}")
    print(f"new key for API_USER {args.api_user}; the old key no longer works; the key is shown only once:")
    print(key)
    return 0
