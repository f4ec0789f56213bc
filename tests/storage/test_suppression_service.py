"""The suppression service and the one-transaction feedback apply, on SQLite AND PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies import COMPLAINT_TTL, ListChange, SuppressionService
from relay.rules import load_tencent_rules
from storage import SqlStorage
from storage.records import (
    FeedbackEffects,
    ListKind,
    LogEntry,
    LogKind,
    MessageRecord,
    RecipientOutcome,
    Status,
    SubmissionRecord,
    SubStatus,
    SuppressionEntry,
)

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


async def _sent(storage: SqlStorage, *rcpts: str) -> int:
    acct = (await storage.accounts.ensure_account("acme")).id
    msg = MessageRecord(email_id="E1", account_id=acct, api_user="u1", sender="news@shop.example", subject="s",
                        label=None, email_type=None, size=10, request_time=T0, request_ip="192.0.2.1", node="n")
    await storage.statuses.record_submissions(
        [SubmissionRecord(msg, tuple(RecipientOutcome(r, Status.SENDING) for r in rcpts))])
    return acct


def _bounce(key: str = "dsn:E1:gone@example.com:5.1.1") -> FeedbackEffects:
    return FeedbackEffects(key, T0, "E1", "gone@example.com",
                           LogEntry(at=T0, kind=LogKind.FEEDBACK, text="bounce: 550 5.1.1 user unknown"),
                           Status.SOFT_BOUNCE, SubStatus.SB_NOT_EXIST, "550 5.1.1 user unknown")


async def test_feedback_apply_is_one_transaction(storage: SqlStorage) -> None:
    acct = await _sent(storage, "gone@example.com")
    lists = SuppressionService(storage, load_tencent_rules())
    change = ListChange(ListKind.BOUNCE, acct, "gone@example.com", "user unknown")

    class Broken(SuppressionService):
        def bounce_expiry_for(self, address: str, mx_hosts: object = ()) -> object:  # type: ignore[override]
            def fail(n: int) -> timedelta:
                raise RuntimeError("storage went away mid-apply")
            return fail

    # a failure after the seen mark: nothing stays written, so the retry applies it (not "duplicate")
    with pytest.raises(RuntimeError):
        await Broken(storage, load_tencent_rules()).apply_feedback(_bounce(), change)
    row = (await storage.statuses.get_message("E1"))[0]
    assert row.status is Status.SENDING and all(e.kind is not LogKind.FEEDBACK for e in row.log)
    assert (await storage.suppressions.list(acct, ListKind.BOUNCE)).items == []

    assert await lists.apply_feedback(_bounce(), change) is True
    row = (await storage.statuses.get_message("E1"))[0]
    assert row.status is Status.SOFT_BOUNCE and row.sub_status is SubStatus.SB_NOT_EXIST
    [entry] = (await storage.suppressions.list(acct, ListKind.BOUNCE)).items
    assert entry.hit_count == 1 and entry.expires_at == T0 + timedelta(days=30)

    assert await lists.apply_feedback(_bounce(), change) is False  # seen: nothing written twice
    [entry] = (await storage.suppressions.list(acct, ListKind.BOUNCE)).items
    assert entry.hit_count == 1
    assert sum(e.kind is LogKind.FEEDBACK for e in (await storage.statuses.get_message("E1"))[0].log) == 1


async def test_complaint_applies_log_and_180_days(storage: SqlStorage) -> None:
    acct = await _sent(storage, "angry@example.com")
    lists = SuppressionService(storage, load_tencent_rules())
    effects = FeedbackEffects("arf:E1:angry@example.com:abuse", T0, "E1", "angry@example.com",
                              LogEntry(at=T0, kind=LogKind.FEEDBACK, text="complaint (abuse)", rule="arf"))
    assert await lists.apply_feedback(effects, ListChange(ListKind.COMPLAINT, acct, "Angry@Example.com", "abuse"))
    [entry] = (await storage.suppressions.list(acct, ListKind.COMPLAINT)).items
    assert entry.value == "angry@example.com" and entry.expires_at == T0 + COMPLAINT_TTL == T0 + timedelta(days=180)
    row = (await storage.statuses.get_message("E1"))[0]
    assert row.status is Status.SENDING and row.log[-1].text == "complaint (abuse)"


@pytest.mark.parametrize(("address", "days"), [("a@vip.foxmail.com", 1), ("a@qq.com", 1), ("a@example.com", 30)])
async def test_every_writer_gets_the_same_bounce_expiry(storage: SqlStorage, address: str, days: int) -> None:
    """A first bounce lasts the same whether delivery, feedback or the CLI/API writes it (the CLI
    used a Tencent list without vip.foxmail.com: 30 days there, 1 day elsewhere)."""
    acct = (await storage.accounts.ensure_account("acme")).id
    lists = SuppressionService(storage, load_tencent_rules())
    manual = lists.with_default_expiry(SuppressionEntry(acct, ListKind.BOUNCE, address, created_at=T0))
    live = await lists.report_not_exist(acct, address, T0)
    assert manual.expires_at == live.expires_at == T0 + timedelta(days=days)


async def test_manual_entries_keep_a_given_expiry_and_lists_without_a_rule_never_expire(storage: SqlStorage) -> None:
    acct = (await storage.accounts.ensure_account("acme")).id
    lists = SuppressionService(storage, load_tencent_rules())
    n = await lists.add([SuppressionEntry(acct, ListKind.BLOCK, "x.example", created_at=T0),
                         SuppressionEntry(acct, ListKind.COMPLAINT, "c@x.example", created_at=T0),
                         SuppressionEntry(acct, ListKind.UNSUBSCRIBE, "u@x.example", created_at=T0,
                                          expires_at=T0 + timedelta(days=2))])
    assert n == 3
    assert (await storage.suppressions.list(acct, ListKind.BLOCK)).items[0].expires_at is None
    assert (await storage.suppressions.list(acct, ListKind.COMPLAINT)).items[0].expires_at == T0 + COMPLAINT_TTL
    assert (await storage.suppressions.list(acct, ListKind.UNSUBSCRIBE)).items[0].expires_at == T0 + timedelta(days=2)
