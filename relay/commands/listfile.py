"""Reading a block-list upload: CSV or one value per line, streamed, bad lines reported.

Accepted line shapes: ``value`` or ``value,api_user`` (CSV, optionally quoted), and for the block
list also ``value,api_user,expire_time`` (ISO date or date-time, UTC; empty = never expires); an
optional header row (``email_or_domain[,api_user[,expire_time]]``), blank lines and ``#`` comments
are skipped. A bad line yields
the string ``"line N: <why>"`` instead of an entry, so the caller reports it and goes on.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from relay.commands.values import normalize_value
from storage.records import ALL_API_USERS, ListKind, SuppressionEntry, utcnow

_HEADER_WORDS = {"email", "email_or_domain", "address", "domain", "value", "email address", "e-mail"}


def parse_line(lineno: int, raw: bytes, kind: ListKind, account_id: int, default_api_user: str,
               now: datetime) -> SuppressionEntry | str | None:
    """One line of an upload: an entry, ``"line N: <why>"`` for a bad line, or None (skipped)."""
    try:
        # a spreadsheet's CSV starts with a byte-order mark: not part of the first value
        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
    except UnicodeDecodeError:
        return f"line {lineno}: not valid UTF-8"
    if not line or line.startswith("#"):
        return None
    if "," in line or '"' in line:
        try:
            fields = next(csv.reader(io.StringIO(line)))
        except (csv.Error, StopIteration):
            return f"line {lineno}: malformed CSV"
    else:
        fields = [line]
    fields = [f.strip() for f in fields]
    if fields and fields[0].lower() in _HEADER_WORDS:  # a header row (none of these is a valid value)
        return None
    if not fields or not fields[0]:
        return f"line {lineno}: empty value"
    max_fields = 3 if kind is ListKind.BLOCK else 2
    if len(fields) > max_fields:
        shapes = "'value', 'value,api_user' or 'value,api_user,expire_time'" if kind is ListKind.BLOCK \
            else "'value' or 'value,api_user'"
        return f"line {lineno}: expected {shapes}, got {len(fields)} fields"
    value, err = normalize_value(fields[0], kind)
    if err:
        return f"line {lineno}: {err}: {fields[0][:80]!r}"
    api_user = fields[1] if len(fields) >= 2 and fields[1] else default_api_user
    expires = None
    if len(fields) == 3 and fields[2]:
        expires = _expire_time(fields[2])
        if expires is None:
            return f"line {lineno}: expire_time: expected YYYY-MM-DD or an ISO date-time, got {fields[2][:40]!r}"
        if expires <= now:
            return f"line {lineno}: expire_time {fields[2][:40]!r} is not in the future"
    return SuppressionEntry(account_id=account_id, kind=kind, value=value, api_user=api_user, created_at=now,
                            expires_at=expires)


def _expire_time(text: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    if not 1970 <= t.year <= 9000:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def parse_lines(lines: Iterable[bytes], kind: ListKind, account_id: int, default_api_user: str = ALL_API_USERS,
                ) -> Iterator[tuple[int, SuppressionEntry | str]]:
    """(line number, entry or "line N: <why>") for every line that is not skipped."""
    now = utcnow()
    for lineno, raw in enumerate(lines, 1):
        item = parse_line(lineno, raw, kind, account_id, default_api_user, now)
        if item is not None:
            yield lineno, item


def parse_list_file(path: Path, kind: ListKind, account_id: int, default_api_user: str = ALL_API_USERS,
                    *, progress: bool = False) -> Iterator[tuple[int, SuppressionEntry | str]]:
    total = path.stat().st_size
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"import {kind.value}", mininterval=0.5)
    done_bytes = 0

    def counted(fb: Iterable[bytes]) -> Iterator[bytes]:
        nonlocal done_bytes
        for lineno, raw in enumerate(fb, 1):
            done_bytes += len(raw)
            if bar is not None and lineno % 20000 == 0:
                bar.update(done_bytes - bar.n)
            yield raw

    with open(path, "rb") as fb:
        yield from parse_lines(counted(fb), kind, account_id, default_api_user)
    if bar is not None:
        bar.update(total - bar.n)
        bar.close()
