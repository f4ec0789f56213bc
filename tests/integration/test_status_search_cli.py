"""`mailrelay status search --limit N [--offset K]` walks keyset pages: every record once, in order."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.cli import main
from relay.commands import status
from storage import default_sqlite_url, open_storage
from storage.records import MessageRecord, RecipientOutcome, Status, SubmissionRecord

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


async def _seed(home: Path, n: int) -> None:
    st = await open_storage(default_sqlite_url(home))
    try:
        acct = (await st.accounts.ensure_account("acme")).id
        await st.statuses.record_submissions([
            SubmissionRecord(MessageRecord(f"e{i // 2:04d}", acct, "app1", "a@shop.example", "s", None, None, 1,
                                           T0 + timedelta(seconds=i // 2), "192.0.2.1"),
                             (RecipientOutcome(f"r{i}@x.example", Status.SENDING),))
            for i in range(n)
        ])
    finally:
        await st.close()


def _search(capsys: pytest.CaptureFixture[str], home: Path, *extra: str) -> list[str]:
    rc = main(["status", "search", "--home", str(home), "--account", "acme", "--json", *extra])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert all(r["log"] for r in rows)  # every record carries its send log
    return [r["recipient"] for r in rows]


def test_search_pages_through_every_record(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    assert main(["init", "--home", str(home), "--no-delivery"]) == 0
    asyncio.run(_seed(home, 23))  # two recipients per message: pages split messages too
    capsys.readouterr()
    whole = _search(capsys, home, "--limit", "100")
    assert len(whole) == 23 and len(set(whole)) == 23
    monkeypatch.setattr(status, "PAGE", 4)
    assert _search(capsys, home, "--limit", "100") == whole
    assert _search(capsys, home, "--limit", "9") == whole[:9]
    assert _search(capsys, home, "--limit", "8", "--offset", "3") == whole[3:11]
    assert _search(capsys, home, "--limit", "10", "--offset", "20") == whole[20:]
    assert main(["status", "search", "--home", str(home), "--account", "acme", "--offset", "-1"]) == 1
