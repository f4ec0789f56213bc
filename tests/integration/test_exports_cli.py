"""`mailrelay exports create|list|download|retry` without a running server: the command runs the
export itself and the downloaded CSV.gz holds the account's records."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from storage import default_sqlite_url, open_storage
from storage.records import MessageRecord, RecipientOutcome, Status, SubmissionRecord, utcnow
from tests.integration.test_cli import run


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    h = tmp_path / "home"
    assert run(capsys, "init", "--home", str(h), "--smtp", "127.0.0.1:0", "--no-delivery")[0] == 0

    async def seed() -> None:
        st = await open_storage(default_sqlite_url(h))
        try:
            acme = await st.accounts.ensure_account("acme")
            other = await st.accounts.ensure_account("other")
            subs = []
            for i, acct in enumerate([acme.id] * 3 + [other.id]):
                m = MessageRecord(f"m{i}", acct, "app1", "a@shop.example", "s", None, None, 10,
                                  utcnow() - timedelta(days=100 * i), "192.0.2.1")
                subs.append(SubmissionRecord(m, (RecipientOutcome(f"r{i}@example.com", Status.SENDING),)))
            await st.statuses.record_submissions(subs)
        finally:
            await st.close()

    asyncio.run(seed())
    return h


def test_exports_create_list_download(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = ("--home", str(home))
    rc, out, _ = run(capsys, "exports", "create", "--account", "acme", *h)
    assert rc == 0 and "succeeded, 3 rows; written by this command" in out
    export_id = out.strip().splitlines()[-1]
    rc, out, _ = run(capsys, "exports", "list", "--json", *h)
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["id"], r["status"], r["rows"]) for r in rows] == [(export_id, "succeeded", 3)]
    target = tmp_path / "out.csv.gz"
    rc, out, _ = run(capsys, "exports", "download", export_id, "-o", str(target), *h)
    assert rc == 0 and "3 rows" in out
    records = list(csv.DictReader(io.StringIO(gzip.decompress(target.read_bytes()).decode())))
    assert [r["email_id"] for r in records] == ["m0", "m1", "m2"]  # newest first, 200 days back, no cap
    rc, _, err = run(capsys, "exports", "retry", export_id, *h)
    assert rc == 1 and "only a failed export" in err
    rc, _, err = run(capsys, "exports", "download", "nope", *h)
    assert rc == 1 and "no export" in err
    rc, _, err = run(capsys, "exports", "download", export_id, "-o", str(tmp_path / "missing" / "x.gz"), *h)
    assert rc == 1 and "cannot write" in err and "Traceback" not in err

    rc, out, _ = run(capsys, "exports", "create", "--account", "acme", "--from", "2000-01-01", "--to",
                     (utcnow() - timedelta(days=50)).date().isoformat(), "--queue-only", *h)
    queued = out.strip().splitlines()[-1]
    assert rc == 0 and "queued" in out
    rc, _, err = run(capsys, "exports", "download", queued, *h)
    assert rc == 1 and "is queued" in err
    rc, out, _ = run(capsys, "exports", "create", "--account", "acme", "--status", "delivered", *h)
    assert rc == 0 and "succeeded, 0 rows" in out  # this run also ran the queued one
    rc, out, _ = run(capsys, "exports", "list", *h)
    assert rc == 0 and len(out.splitlines()) == 3
    assert f"{queued}  succeeded          2 rows" in out
    with pytest.raises(SystemExit):
        run(capsys, "exports", "create", "--help")
    assert "runs the export itself" in " ".join(capsys.readouterr().out.split())
