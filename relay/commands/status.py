"""`mailrelay status search`: per-recipient status records with their send logs."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from relay.commands.common import CommandError, account_or_fail, with_storage
from relay.status_json import record_json
from storage.protocols import Storage
from storage.records import EmailType, Status, StatusFilter, StatusRecord, SubStatus

_STATUS_NAMES = {"sending": Status.SENDING, "delivered": Status.DELIVERED, "soft_bounce": Status.SOFT_BOUNCE,
                 "invalid": Status.INVALID}


def add_parser(p: argparse.ArgumentParser, with_home: Callable[[argparse.ArgumentParser],
               argparse.ArgumentParser]) -> None:
    sub = p.add_subparsers(dest="status_command", required=True)
    sp = with_home(sub.add_parser("search", help="search status records (newest first)"))
    add_filter_arguments(sp)
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--offset", type=int, default=0)
    sp.add_argument("--json", action="store_true", help="one JSON object per record")
    sp.set_defaults(func=search)


def add_filter_arguments(sp: argparse.ArgumentParser) -> None:
    """The status-search filters, shared by `status search` and `exports create`."""
    sp.add_argument("--account", required=True)
    sp.add_argument("--email", help="recipient address")
    sp.add_argument("--email-id", action="append", default=[], help="message id (repeatable)")
    sp.add_argument("--api-user")
    sp.add_argument("--domain", help="receiving domain")
    sp.add_argument("--label")
    sp.add_argument("--type", choices=[t.value for t in EmailType])
    sp.add_argument("--status", action="append", default=[],
                    help="18|1|5|4 or sending|delivered|soft_bounce|invalid (repeatable)")
    sp.add_argument("--sub-status", action="append", default=[], help="e.g. 401 (repeatable)")
    sp.add_argument("--from", dest="start", help="request time from (ISO date/time, UTC)")
    sp.add_argument("--to", dest="end", help="request time until (UTC): a date includes that whole day, like "
                    "the API's end_date; a date-time is exclusive")


def filter_from_args(args: argparse.Namespace, account_id: int) -> StatusFilter:
    """The StatusFilter the flags of :func:`add_filter_arguments` describe (CommandError if invalid)."""
    start, end = _time(args.start, "--from"), _time(args.end, "--to")
    if end is not None and len(args.end.strip()) == 10:  # a bare date: through the end of that day
        end += timedelta(days=1)
    if start and end and end <= start:
        raise CommandError("--to must be after --from")
    return StatusFilter(
        account_id=account_id, recipient=args.email.lower() if args.email else None,
        email_ids=tuple(args.email_id), api_user=args.api_user,
        domain=args.domain.lower() if args.domain else None, label=args.label,
        email_type=EmailType(args.type) if args.type else None,
        statuses=tuple(_status(s) for s in args.status),
        sub_statuses=tuple(_sub_status(s) for s in args.sub_status),
        start=start, end=end,
    )


def _time(text: str | None, flag: str) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{flag}: expected an ISO date or date-time, got {text!r}") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _status(text: str) -> Status:
    if text.lower() in _STATUS_NAMES:
        return _STATUS_NAMES[text.lower()]
    try:
        return Status(int(text))
    except ValueError:
        raise CommandError(f"--status: unknown status {text!r}") from None


def _sub_status(text: str) -> SubStatus:
    try:
        return SubStatus(int(text))
    except ValueError:
        raise CommandError(f"--sub-status: unknown sub-status {text!r}") from None


#: Records fetched per storage round trip: the output streams page by page (keyset paging, each
#: page's send logs in one query), so time and memory grow linearly with --limit.
PAGE = 1000


def search(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CommandError("--limit must be at least 1")
    if args.offset < 0:
        raise CommandError("--offset must be at least 0")

    async def run(storage: Storage) -> None:
        flt = filter_from_args(args, (await account_or_fail(storage, args.account)).id)
        left, after = args.limit, None
        while left > 0:
            page = await storage.statuses.search(flt, limit=min(PAGE, left), offset=args.offset if after is None else 0,
                                                 after=after, count=False)
            for r in page.items:
                _print(r, args.json)
            left -= len(page.items)
            if not page.has_more or not page.items:
                return
            after = page.items[-1].key

    with_storage(args.home, run)
    return 0


def _print(r: StatusRecord, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record_json(r), ensure_ascii=False))
    else:
        sub = int(r.sub_status) if r.sub_status is not None else "-"
        print(f"{r.request_time:%Y-%m-%d %H:%M:%S} {r.email_id} {r.recipient:36} {int(r.status):>2} {sub:>3} "
              f"{r.reason}")
