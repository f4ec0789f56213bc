"""The benchmark data generator (storage/synthetic.py) on both backends: the documented mix, the
same rows on SQLite and PostgreSQL, resumable top-up, and data the real search and RCPT lookup read."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from storage import SqlStorage
from storage.records import ListKind, Status, StatusFilter, SuppressionHits
from storage.synthetic import fill_recipients, fill_suppressions
from tests.storage.test_conformance import T0


async def test_fill_recipients_mix_and_resume(storage: SqlStorage) -> None:
    big = (await storage.accounts.ensure_account("big")).id
    for i in range(1, 4):
        await storage.accounts.ensure_account(f"small{i}")
    seen: list[tuple[int, int]] = []
    assert await fill_recipients(storage, 600, first_account=big, accounts=4, end=T0, span=timedelta(days=90),
                                 chunk=250, progress=lambda d, t: seen.append((d, t))) == 600
    assert seen == [(250, 600), (500, 600), (600, 600)]
    assert await fill_recipients(storage, 1000, first_account=big, accounts=4, end=T0, span=timedelta(days=90),
                                 chunk=250) == 400  # tops up, never duplicates
    assert await fill_recipients(storage, 1000, first_account=big, accounts=4, end=T0, span=timedelta(days=90)) == 0
    everything = (await storage.statuses.search(StatusFilter(), limit=2000)).items
    assert len(everything) == 1000
    by_account = Counter(r.account_id for r in everything)
    assert by_account[big] == 500 and len(by_account) == 4  # half in the big account
    assert all(T0 - timedelta(days=90) < r.request_time <= T0 for r in everything)
    statuses = Counter(r.status for r in everything)
    assert 850 < statuses[Status.DELIVERED] < 950 and statuses[Status.SOFT_BOUNCE] > 20
    assert all((r.sub_status is None) == (r.status in (Status.DELIVERED, Status.SENDING)) for r in everything)
    assert 250 < sum(r.domain == "gmail.com" for r in everything) < 350
    assert all(len(r.log) == 1 and r.log[0].kind == "accepted" for r in everything)
    newest = (await storage.statuses.search(StatusFilter(account_id=big), limit=1)).items[0]
    assert (newest.email_id, newest.recipient) == ("S0000000000", "u0@gmail.com")


async def test_fill_suppressions_feeds_the_rcpt_lookup(storage: SqlStorage) -> None:
    first = (await storage.accounts.ensure_account("big")).id
    assert await fill_suppressions(storage, 500, first_account=first, accounts=2, now=T0, chunk=200) == 500
    assert await fill_suppressions(storage, 500, first_account=first, accounts=2, now=T0) == 0
    # entry i: s<i>@d<i % 1000>.example in account first + i % 2; kinds cycle complaint, bounce, block, ...
    hits = await storage.suppressions.hits(first, "app1", "s10@d10.example", "d10.example", T0)
    assert hits == SuppressionHits(complaint=True)
    hits = await storage.suppressions.hits(first + 1, "app1", "s11@d11.example", "d11.example", T0)
    assert hits == SuppressionHits(bounce_until=T0 + timedelta(days=30))
    hits = await storage.suppressions.hits(first, "app1", "s11@d11.example", "d11.example", T0)
    assert hits == SuppressionHits()  # another account's entry
    page = await storage.suppressions.list(first, ListKind.NO_INTERCEPTION, limit=100)
    assert page.total == 50
