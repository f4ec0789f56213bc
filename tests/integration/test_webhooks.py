"""The webhook sender against a real aiohttp endpoint on loopback (SQLite and PostgreSQL): signed
EngageLab-shaped bodies, per-recipient order, retries after 500s and timeouts, a slow endpoint
held to the concurrency cap, batching, disabling after a day (a fraction of a second here)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from relay.webhooks.sender import SenderSettings, WebhookSender, backoff
from storage import SqlStorage
from storage.records import (
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
from storage.webhooks import DEFAULT_EVENTS, WebhookEvent
from tests.helpers.webhook_receiver import Receiver
from tests.integration.relay_fixture import wait_until

# the receiver is on 127.0.0.1: these senders allow private destinations ([webhooks] allow_private_addresses)
FAST = SenderSettings(timeout=1.0, concurrency=4, retry_initial=0.05, retry_max=0.2, disable_after=3600, poll=0.02,
                      allow_private=True)
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@contextlib.asynccontextmanager
async def running(sender: WebhookSender) -> AsyncIterator[WebhookSender]:
    task = asyncio.create_task(sender.run())
    try:
        yield sender
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _setup(st: SqlStorage, r: Receiver, n: int, *, batch: int = 1,
                 events: tuple[WebhookEvent, ...] = DEFAULT_EVENTS) -> tuple[int, list[str]]:
    acct = await st.accounts.ensure_account("acme")
    hook = await st.webhooks.add(acct.id, r.url, events, "s3cret-key", batch, T0)
    r.secrets[hook.id] = "s3cret-key"
    rcpts = [f"user{i}@example.com" for i in range(n)]
    msg = MessageRecord(email_id="MSG1", account_id=acct.id, api_user="app1", sender="news@shop.example",
                        subject="Hello", label=None, email_type=None, size=10, request_time=T0,
                        request_ip="192.0.2.1", node="n1")
    await st.statuses.record_submissions([SubmissionRecord(msg, tuple(RecipientOutcome(x, Status.SENDING)
                                                                      for x in rcpts))])
    return hook.id, rcpts


async def drained(st: SqlStorage, timeout: float = 20) -> None:
    """Until the outbox is empty: every event sent AND settled."""
    async def empty() -> bool:
        return await st.webhooks.outbox_size() == 0

    await wait_until(empty, timeout)


async def _deliver(st: SqlStorage, rcpts: list[str]) -> None:
    for x in rcpts:
        await st.statuses.update_status("MSG1", x, Status.DELIVERED, None, "250 2.0.0 ok",
                                        LogEntry(at=T0, kind=LogKind.ATTEMPT, text="250 ok", code=250))


async def test_signed_engagelab_body_and_per_recipient_order(storage: SqlStorage, receiver: Receiver) -> None:
    st, r = storage, receiver
    hook_id, rcpts = await _setup(st, r, 20)
    # each recipient: deferred twice, then delivered or soft bounce; plus a complaint and an unsubscribe
    for i, x in enumerate(rcpts):
        for k in range(2):
            await st.statuses.update_status("MSG1", x, Status.SENDING, None, f"451 4.7.1 try {k}",
                                            LogEntry(at=T0, kind=LogKind.ATTEMPT, text=f"451 try {k}", code=451))
        if i % 2:
            await st.statuses.update_status("MSG1", x, Status.SOFT_BOUNCE, SubStatus.SB_NOT_EXIST, "550 5.1.1 gone")
        else:
            await _deliver(st, [x])
    await st.suppressions.add([SuppressionEntry(account_id=1, kind=ListKind.COMPLAINT, value=rcpts[0],
                                                created_at=T0, reason="abuse"),
                               SuppressionEntry(account_id=1, kind=ListKind.UNSUBSCRIBE, value=rcpts[1],
                                                created_at=T0)])
    async with running(WebhookSender(st, "n1", FAST)):
        await r.wait_for(62, 20)
        await drained(st)
    assert r.bad_signatures == 0
    per_rcpt: dict[str, list[str]] = {}
    for e in r.events:
        per_rcpt.setdefault(e["to"], []).append(e["status"]["message_status"])
    assert per_rcpt[rcpts[0]] == ["deferred", "deferred", "delivered", "report"]
    assert per_rcpt[rcpts[1]] == ["deferred", "deferred", "soft_bounce", "unsubscribe"]
    assert per_rcpt[rcpts[2]] == ["deferred", "deferred", "delivered"]
    bounce = next(e for e in r.events if e["status"]["message_status"] == "soft_bounce")
    assert bounce["server"] == "email" and bounce["message_id"] == "MSG1" and bounce["from"] == "news@shop.example"
    assert bounce["subject"] == "Hello" and bounce["custom_args"] == {} and isinstance(bounce["itime"], int)
    data = bounce["status"]["status_data"]
    assert data["email_id"] == f"MSG1${bounce['to']}" and data["api_user"] == "app1"
    assert (data["status"], data["sub_status"], data["sub_status_desc"]) == (5, 506, "Soft bounce: not exist")
    assert data["message"] == "550 5.1.1 gone"
    hook = await st.webhooks.get(hook_id)
    assert hook is not None and hook.pending == 0 and hook.sent == 62 and hook.failures == 0


async def test_failures_and_timeouts_are_retried_with_backoff(storage: SqlStorage, receiver: Receiver) -> None:
    st, r = storage, receiver
    hook_id, rcpts = await _setup(st, r, 5, batch=5)  # one POST at a time: a deterministic sequence
    await _deliver(st, rcpts)
    r.status = 500
    async with running(WebhookSender(st, "n1", FAST)) as sender:
        await wait_until(lambda: r.posts >= 3)
        r.status, r.delay = 200, 3.0  # now it hangs past the 1 s timeout
        failed = sender.failures
        await wait_until(lambda: sender.failures >= failed + 2)
        r.delay = 0.0
        await r.wait_for(5, 20)
        await drained(st)
    hook = await st.webhooks.get(hook_id)
    assert hook is not None and hook.pending == 0 and hook.failures == 0 and hook.disabled_at is None
    errors = {a.error for a in await st.webhooks.attempts(hook_id, 100)}
    assert "HTTP 500" in errors and "no answer within 1 s" in errors and "" in errors
    assert sorted(set(r.ids())) == sorted(set(r.ids()))[:5] and len(set(r.ids())) == 5


async def test_slow_endpoint_is_held_to_the_concurrency_cap_and_batches(storage: SqlStorage,
                                                                       receiver: Receiver) -> None:
    st, r = storage, receiver
    _, rcpts = await _setup(st, r, 60, batch=5)
    await _deliver(st, rcpts)
    r.delay = 0.2
    async with running(WebhookSender(st, "n1", FAST)):
        await r.wait_for(60, 20)
        await drained(st)
    assert r.max_in_flight <= FAST.concurrency and r.max_in_flight >= 2
    assert r.posts == 12  # 60 events, 5 per POST
    assert sorted(r.ids()) == sorted(set(r.ids()))


async def test_endpoint_failing_too_long_is_disabled_with_its_reason(storage: SqlStorage,
                                                                     receiver: Receiver) -> None:
    st, r = storage, receiver
    hook_id, rcpts = await _setup(st, r, 3)
    await _deliver(st, rcpts)
    r.status = 503
    settings = SenderSettings(timeout=1.0, concurrency=2, retry_initial=0.05, retry_max=0.1, disable_after=0.5,
                              poll=0.02, allow_private=True)
    async with running(WebhookSender(st, "n1", settings)):
        async def disabled() -> bool:
            hook = await st.webhooks.get(hook_id)
            return hook is not None and hook.disabled_at is not None

        await wait_until(disabled)
        h = await st.webhooks.get(hook_id)
        posts = r.posts
        await asyncio.sleep(0.3)
        assert r.posts == posts  # nothing more is sent to a disabled endpoint
    assert h is not None and "last error: HTTP 503" in h.disabled_reason and h.pending == 3
    # enabling it again sends the kept backlog
    r.status = 200
    assert await st.webhooks.enable(hook_id)
    async with running(WebhookSender(st, "n1", settings)):
        await r.wait_for(3, 10)


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    assert [backoff(n, 10, 3600, lambda: 1.0) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert backoff(30, 10, 3600, lambda: 1.0) == 3600 and backoff(30, 10, 3600, lambda: 0.0) == 1800
    assert backoff(1000, 10, 3600, lambda: 0.5) == 2700


async def test_a_failure_stops_the_posts_waiting_for_the_endpoint(storage: SqlStorage, receiver: Receiver) -> None:
    """POSTs queued behind a failing one are not tried at once: their events go back to the outbox
    (unsent, no attempt counted) and wait for the back-off like the rest."""
    st, r = storage, receiver
    hook_id, rcpts = await _setup(st, r, 20)
    await _deliver(st, rcpts)
    r.status, r.delay = 500, 0.05
    one_slot = SenderSettings(timeout=1.0, concurrency=1, retry_initial=30, retry_max=30, poll=0.02,
                              allow_private=True)
    async with running(WebhookSender(st, "n1", one_slot)) as sender:
        await wait_until(lambda: sender.failures >= 1)
        await asyncio.sleep(0.5)
    assert r.posts == 1 and sender.posts == 1
    hook = await st.webhooks.get(hook_id)
    assert hook is not None and hook.pending == 20 and hook.failures == 1
    events = await st.webhooks.claim("n2", datetime.now(UTC) + timedelta(minutes=1), timedelta(seconds=60), 100)
    assert sorted(e.attempts for e in events) == [1] * 19 + [2]  # only the one POSTed counted an attempt
