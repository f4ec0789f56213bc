"""The review loop's storage on SQLite and PostgreSQL: sightings add up per (source, text), the
examples stop at the cap, listing orders by count, removal drops a text, and ``decided`` finds the
final records with the send-log line that decided them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storage import SqlStorage
from storage.records import LogEntry, LogKind, MessageRecord, RecipientOutcome, Status, SubmissionRecord, SubStatus
from storage.unclassified import MAX_EXAMPLES, UnclassifiedHit

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _hit(text: str, n: int, at: datetime, *examples: str, source: str = "delivery",
         sample: str = "", rule: str = "default-5xx") -> UnclassifiedHit:
    return UnclassifiedHit(source=source, text=text, sample=sample or f"sample of {text}", rule=rule, code=550,
                           enhanced="5.0.0", count=n, first_seen=at, last_seen=at,
                           examples=tuple((e, f"{e}@x.example") for e in examples))


async def test_sightings_add_up_and_examples_are_capped(storage: SqlStorage) -> None:
    repo = storage.unclassified
    await repo.record([_hit("550 5.0.0 odd reply #", 2, T0, "e1", "e2", sample="first")])
    later = T0 + timedelta(hours=1)
    await repo.record([_hit("550 5.0.0 odd reply #", 3, later, *(f"e{i}" for i in range(2, 10)), sample="newest"),
                       _hit("550 5.0.0 odd reply #", 1, T0 - timedelta(hours=1), source="feedback",
                            rule="fallback")])
    rows = await repo.list()
    assert [(r.source, r.count) for r in rows] == [("delivery", 5), ("feedback", 1)]
    top = rows[0]
    assert top.first_seen == T0 and top.last_seen == later and top.sample == "newest"
    assert len(top.examples) == MAX_EXAMPLES
    assert top.examples[0] == ("e1", "e1@x.example")
    assert {e for e, _ in top.examples} <= {f"e{i}" for i in range(10)}
    # an older batch does not move last_seen back nor replace the newer sample
    await repo.record([_hit("550 5.0.0 odd reply #", 1, T0 - timedelta(days=1), sample="old")])
    top = (await repo.list(source="delivery"))[0]
    assert (top.count, top.sample, top.last_seen, top.first_seen) == (6, "newest", later, T0 - timedelta(days=1))
    assert [r.source for r in await repo.list(source="feedback")] == ["feedback"]
    assert await repo.list(since=later + timedelta(seconds=1)) == []


async def test_list_orders_by_count_and_limits(storage: SqlStorage) -> None:
    repo = storage.unclassified
    await repo.record([_hit(f"text {i}", i + 1, T0 + timedelta(minutes=i), f"m{i}") for i in range(5)])
    rows = await repo.list(limit=3)
    assert [r.text for r in rows] == ["text 4", "text 3", "text 2"]
    assert [r.examples for r in rows] == [(("m4", "m4@x.example"),), (("m3", "m3@x.example"),),
                                          (("m2", "m2@x.example"),)]
    assert await repo.remove([("delivery", "text 4"), ("delivery", "nope")]) == 1
    assert [r.text for r in await repo.list()] == ["text 3", "text 2", "text 1", "text 0"]


async def test_decided_lists_final_records_with_their_deciding_line(storage: SqlStorage) -> None:
    acct = await storage.accounts.ensure_account("acme")
    msg = MessageRecord(email_id="m1", account_id=acct.id, api_user="u1", sender="s@shop.example", subject="s",
                        label=None, email_type=None, size=10, request_time=T0, request_ip="192.0.2.1", node="n1")
    await storage.statuses.record_submissions([SubmissionRecord(msg, tuple(
        RecipientOutcome(r, Status.SENDING) for r in ("a@x.example", "b@x.example", "c@x.example")))])
    attempt = LogEntry(at=T0, kind=LogKind.ATTEMPT, text="rcpt: odd", code=550, enhanced="5.0.0",
                       mx_host="mx.x.example", rule="default-5xx")
    await storage.statuses.update_status("m1", "a@x.example", Status.INVALID, SubStatus.OTHERS, "550 5.0.0 odd",
                                         attempt)
    bounce = LogEntry(at=T0, kind=LogKind.FEEDBACK, text="bounce: 550 weird", code=550, enhanced="5.0.0",
                      rule="fallback")
    await storage.statuses.update_status("m1", "b@x.example", Status.SOFT_BOUNCE, SubStatus.SB_OTHERS, "550 weird",
                                         bounce)
    # c is still being sent: not a final record
    await storage.statuses.update_status("m1", "c@x.example", Status.SENDING, None, "451 later", attempt)
    since = datetime.now(UTC) - timedelta(minutes=5)
    found = await storage.unclassified.decided(since)
    assert [(d.recipient, d.status, d.sub_status, d.kind, d.rule, d.text) for d in found] == [
        ("a@x.example", Status.INVALID, SubStatus.OTHERS, LogKind.ATTEMPT, "default-5xx", "rcpt: odd"),
        ("b@x.example", Status.SOFT_BOUNCE, SubStatus.SB_OTHERS, LogKind.FEEDBACK, "fallback", "bounce: 550 weird"),
    ]
    assert found[0].code == 550 and found[0].enhanced == "5.0.0" and found[0].account_id == acct.id
    # keyset paging, and the time filter
    assert [d.recipient for d in await storage.unclassified.decided(since, after=("m1", "a@x.example"))] == [
        "b@x.example"]
    assert [d.recipient for d in await storage.unclassified.decided(since, limit=1)] == ["a@x.example"]
    assert await storage.unclassified.decided(datetime.now(UTC) + timedelta(minutes=5)) == []
