"""`mailrelay suppression add|remove|list|import`: the five lists of an account."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from policies import SuppressionService
from relay.commands.common import CommandError, account_or_fail, with_storage
from relay.commands.listfile import parse_list_file
from relay.commands.values import normalize_value
from relay.config import parse_duration
from relay.rules import packaged_tencent_rules
from storage.protocols import Storage
from storage.records import ALL_API_USERS, ListKind, SuppressionEntry, utcnow

IMPORT_CHUNK = 10_000


def add_parser(p: argparse.ArgumentParser, with_home: Callable[[argparse.ArgumentParser],
               argparse.ArgumentParser]) -> None:
    sub = p.add_subparsers(dest="suppression_command", required=True)

    def common(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        with_home(sp)
        sp.add_argument("--account", required=True)
        sp.add_argument("--list", required=True, dest="kind", choices=[k.value for k in ListKind])
        return sp

    sp = common(sub.add_parser("add", help="add addresses (or domains, for block/no-interception)"))
    sp.add_argument("values", nargs="+", metavar="VALUE")
    sp.add_argument("--api-user", default=ALL_API_USERS, help="one API_USER or 'all' (default)")
    sp.add_argument("--expires", help="lifetime, e.g. 30d (default: the list's rule)")
    sp.add_argument("--reason-code", type=int, choices=[0, 1, 2, 3], default=None,
                    help="unsubscribe reason (EngageLab codes 0-3)")
    sp.add_argument("--reason", default="", help="free-text note")
    sp.set_defaults(func=add)
    sp = common(sub.add_parser("remove", help="remove entries"))
    sp.add_argument("values", nargs="+", metavar="VALUE")
    sp.add_argument("--api-user", default=None, help="only this scope (default: every scope)")
    sp.set_defaults(func=remove)
    sp = common(sub.add_parser("list", help="list entries"))
    sp.add_argument("values", nargs="*", metavar="VALUE", help="only these values")
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--offset", type=int, default=0)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=list_entries)
    sp = common(sub.add_parser("import", help="bulk import from a CSV or one-per-line file: value[,api_user]"
                               "[,expire_time] (expire_time: block list only)"))
    sp.add_argument("file", type=Path)
    sp.add_argument("--api-user", default=ALL_API_USERS, help="scope for lines that name none")
    sp.add_argument("--no-progress", action="store_true")
    sp.set_defaults(func=import_file)


def _service(storage: Storage) -> SuppressionService:
    """Entries without --expires get the list's rule there (complaints 180 days, a first bounce by
    the Tencent rule or 30 days, the other lists until removed)."""
    return SuppressionService(storage, packaged_tencent_rules())


def _entries(account_id: int, kind: ListKind, values: list[str], api_user: str, expires: str | None,
             reason_code: int | None, reason: str) -> list[SuppressionEntry]:
    now = utcnow()
    out = []
    for raw in values:
        value, err = normalize_value(raw, kind)
        if err:
            raise CommandError(f"{raw!r}: {err}")
        ttl = timedelta(seconds=parse_duration(expires, "--expires")) if expires else None
        out.append(SuppressionEntry(
            account_id=account_id, kind=kind, value=value, api_user=api_user, created_at=now,
            expires_at=now + ttl if ttl else None, hit_count=1,
            reason_code=reason_code if kind is ListKind.UNSUBSCRIBE and reason_code is not None
            else (0 if kind is ListKind.UNSUBSCRIBE else None),
            reason=reason,
        ))
    return out


def add(args: argparse.Namespace) -> int:
    kind = ListKind(args.kind)

    async def run(storage: Storage) -> int:
        acct = await account_or_fail(storage, args.account)
        return await _service(storage).add(
            _entries(acct.id, kind, args.values, args.api_user, args.expires, args.reason_code, args.reason))

    n = with_storage(args.home, run)
    print(f"added {n} {kind.value} entr{'y' if n == 1 else 'ies'}")
    return 0


def remove(args: argparse.Namespace) -> int:
    kind = ListKind(args.kind)
    values = []
    for raw in args.values:
        value, err = normalize_value(raw, kind)
        if err:
            raise CommandError(f"{raw!r}: {err}")
        values.append(value)

    async def run(storage: Storage) -> int:
        acct = await account_or_fail(storage, args.account)
        return await storage.suppressions.remove(acct.id, kind, values, args.api_user)

    n = with_storage(args.home, run)
    if kind is ListKind.COMPLAINT and n:
        print("warning: removed complaint entries; the next mail to these addresses will be sent", file=sys.stderr)
    print(f"removed {n} {kind.value} entr{'y' if n == 1 else 'ies'}")
    return 0


def list_entries(args: argparse.Namespace) -> int:
    kind = ListKind(args.kind)

    async def run(storage: Storage) -> list[SuppressionEntry]:
        acct = await account_or_fail(storage, args.account)
        if not args.values:
            return (await storage.suppressions.list(acct.id, kind, offset=args.offset, limit=args.limit)).items
        found: list[SuppressionEntry] = []
        for raw in args.values:
            value, _ = normalize_value(raw, kind)
            found += (await storage.suppressions.list(acct.id, kind, value=value, limit=args.limit)).items
        return found

    for e in with_storage(args.home, run):
        row = {
            "value": e.value, "list": e.kind.value, "api_user": e.api_user,
            "create_time": e.created_at.isoformat(),
            "expire_time": e.expires_at.isoformat() if e.expires_at else None,
            "hit_count": e.hit_count, "reason_code": e.reason_code, "reason": e.reason,
        }
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
        else:
            exp = f"{e.expires_at:%Y-%m-%d %H:%M}" if e.expires_at else "never"
            print(f"{e.value:40} {e.api_user:16} created {e.created_at:%Y-%m-%d %H:%M}  expires {exp}")
    return 0


def import_file(args: argparse.Namespace) -> int:
    kind = ListKind(args.kind)
    path: Path = args.file
    if not path.is_file():
        raise CommandError(f"{path}: not a readable file")

    async def run(storage: Storage) -> tuple[int, int]:
        acct = await account_or_fail(storage, args.account)
        own = {u.name for u in await storage.accounts.list_api_users(acct.id)} | {ALL_API_USERS}
        if args.api_user not in own:
            raise CommandError(f"--api-user: {args.api_user!r} is not an API user of account {acct.name!r}")
        imported = bad = 0
        lists = _service(storage)
        chunk: list[SuppressionEntry] = []
        for lineno, item in parse_list_file(path, kind, acct.id, args.api_user, progress=not args.no_progress):
            if isinstance(item, SuppressionEntry) and item.api_user not in own:
                item = f"line {lineno}: api_user {item.api_user[:80]!r} is not an API user of this account (or 'all')"
            if isinstance(item, str):
                bad += 1
                print(item, file=sys.stderr)
                continue
            chunk.append(item)
            if len(chunk) >= IMPORT_CHUNK:
                imported += await lists.import_entries(chunk)
                chunk = []
                await asyncio.sleep(0)
        if chunk:
            imported += await lists.import_entries(chunk)
        return imported, bad

    imported, bad = with_storage(args.home, run)
    print(f"imported {imported} {kind.value} entries; skipped {bad} bad line{'s' if bad != 1 else ''}")
    if bad:  # the good lines are in; the exit status still tells a script that some were not
        sys.stdout.flush()
        print(f"mailrelay: {path}: {bad} bad line{'s' if bad != 1 else ''} skipped (listed above)", file=sys.stderr)
        return 1
    return 0
