"""Event webhooks in storage, on SQLite and PostgreSQL: the triggers fill the outbox in the change's
transaction, claims are leases handed out once and in per-recipient order, failures back off and
disable, removal takes the backlog with it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from storage import SqlStorage, open_storage
from storage.records import (
    EventType,
    ListKind,
    LogEntry,
    LogKind,
    MessageRecord,
    RecipientEvent,
    RecipientOutcome,
    Status,
    SubmissionRecord,
    SubStatus,
    SuppressionEntry,
)
from storage.webhooks import DEFAULT_EVENTS, Delivered, WebhookEvent

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
ALL = DEFAULT_EVENTS


def _msg(email_id: str, account_id: int) -> MessageRecord:
    return MessageRecord(email_id=email_id, account_id=account_id, api_user="u1", sender="news@shop.example",
                         subject=f"subject {email_id}", label="promo", email_type=None, size=100, request_time=T0,
                         request_ip="192.0.2.1", node="n1")


async def _submit(st: SqlStorage, email_id: str, account_id: int, *rcpts: str,
                  status: Status = Status.SENDING) -> None:
    sub = SubStatus.BLACKLIST if status is Status.INVALID else None
    await st.statuses.record_submissions([SubmissionRecord(
        _msg(email_id, account_id), tuple(RecipientOutcome(r, status, sub, "policy" if sub else "") for r in rcpts))])


def _attempt(at: datetime, text: str = "250 ok") -> LogEntry:
    return LogEntry(at=at, kind=LogKind.ATTEMPT, text=text, code=int(text[:3]))


async def test_triggers_fill_outbox_only_for_accounts_with_webhooks(storage: SqlStorage) -> None:
    st = storage
    a = await st.accounts.ensure_account("acme")
    b = await st.accounts.ensure_account("other")
    hook = await st.webhooks.add(a.id, "http://127.0.0.1:9/h", ALL, "s3cret", 1, T0)
    only_delivered = await st.webhooks.add(a.id, "http://127.0.0.1:9/d", (WebhookEvent.DELIVERED,), "x", 1, T0)
    await _submit(st, "M1", a.id, "x@ex.com", "y@ex.com")
    await _submit(st, "M2", b.id, "z@ex.com")  # no webhook: no event
    await _submit(st, "M3", a.id, "stopped@ex.com", status=Status.INVALID)  # invalid at submission
    assert await st.webhooks.outbox_size() == 1

    t = T0 + timedelta(seconds=1)
    await st.statuses.update_status("M1", "x@ex.com", Status.SENDING, None, "451 later", _attempt(t, "451 later"))
    await st.statuses.update_status("M1", "x@ex.com", Status.DELIVERED, None, "250 ok", _attempt(t, "250 ok"))
    await st.statuses.update_status("M1", "y@ex.com", Status.SOFT_BOUNCE, SubStatus.SB_NOT_EXIST, "bounce")
    await st.statuses.update_status("M2", "z@ex.com", Status.DELIVERED, None, "250 ok", _attempt(t))
    await st.suppressions.add([SuppressionEntry(account_id=a.id, kind=ListKind.COMPLAINT, value="x@ex.com",
                                                created_at=t, reason="abuse"),
                               SuppressionEntry(account_id=a.id, kind=ListKind.UNSUBSCRIBE, value="y@ex.com",
                                                created_at=t),
                               SuppressionEntry(account_id=a.id, kind=ListKind.BLOCK, value="ex.org", created_at=t)])
    events = await st.webhooks.claim("n1", t, LEASE, 100)
    got = sorted((e.webhook_id, e.recipient, e.event) for e in events)
    # one at a time per (endpoint, recipient): the first of each
    assert got == sorted([(hook.id, "stopped@ex.com", "invalid"), (hook.id, "x@ex.com", "deferred"),
                          (hook.id, "y@ex.com", "soft_bounce"), (only_delivered.id, "x@ex.com", "delivered")])
    first = {(e.webhook_id, e.recipient): e for e in events}
    e = first[(hook.id, "y@ex.com")]
    assert (e.email_id, e.status, e.sub_status, e.api_user, e.sender, e.subject, e.label) == (
        "M1", 5, 506, "u1", "news@shop.example", "subject M1", "promo")
    assert e.attempts == 1
    # claimed events are not claimed again while leased, and later ones wait for them
    assert await st.webhooks.claim("n2", t, LEASE, 100) == []
    mine = tuple(x.id for x in events if x.webhook_id == hook.id)
    await st.webhooks.succeeded([Delivered(hook.id, mine, t, 200, 5)])
    nxt = await st.webhooks.claim("n1", t, LEASE, 100)
    assert sorted((x.recipient, x.event) for x in nxt) == [("x@ex.com", "delivered"), ("y@ex.com", "unsubscribe")]
    # two POSTs settled together
    await st.webhooks.succeeded([Delivered(hook.id, (x.id,), t, 200, 5) for x in nxt])
    last = await st.webhooks.claim("n1", t, LEASE, 100)
    assert [(x.recipient, x.event, x.email_id, x.reason) for x in last] == [("x@ex.com", "report", "", "abuse")]
    await st.webhooks.succeeded([Delivered(hook.id, tuple(x.id for x in last), t, 200, 5)])
    shown = await st.webhooks.get(hook.id)
    assert shown is not None and shown.sent == 6 and shown.pending == 0 and shown.account_name == "acme"
    assert [x.events for x in await st.webhooks.attempts(hook.id)] == [1, 1, 1, 3]
    assert (await st.webhooks.get(only_delivered.id)).pending == 1  # type: ignore[union-attr]
    assert [h.id for h in await st.webhooks.list()] == [hook.id, only_delivered.id]
    assert await st.webhooks.list(b.id) == [] and len(await st.webhooks.list(a.id)) == 2
    assert await st.webhooks.get(hook.id, b.id) is None


async def test_lease_expiry_and_release_node(storage: SqlStorage) -> None:
    st = storage
    a = await st.accounts.ensure_account("acme")
    hook = await st.webhooks.add(a.id, "http://127.0.0.1:9/h", ALL, "s", 1, T0)
    await _submit(st, "M1", a.id, "x@ex.com")
    await st.statuses.update_status("M1", "x@ex.com", Status.DELIVERED, None, "250 ok", _attempt(T0))
    assert len(await st.webhooks.claim("n1", T0, LEASE, 10)) == 1
    assert await st.webhooks.claim("n2", T0 + LEASE / 2, LEASE, 10) == []
    again = await st.webhooks.claim("n2", T0 + LEASE * 2, LEASE, 10)  # n1 died: its lease ran out
    assert [e.attempts for e in again] == [2]
    await st.webhooks.release([e.id for e in again])  # given back unsent: not an attempt
    again = await st.webhooks.claim("n2", T0 + LEASE * 2, LEASE, 10)
    assert [e.attempts for e in again] == [2]
    assert await st.webhooks.release_node("n2") == 1
    assert len(await st.webhooks.claim("n1", T0 + LEASE * 2, LEASE, 10)) == 1
    assert hook.events == ALL


async def test_failure_backs_off_then_disables_keeping_the_backlog(storage: SqlStorage) -> None:
    st = storage
    a = await st.accounts.ensure_account("acme")
    hook = await st.webhooks.add(a.id, "http://127.0.0.1:9/h", ALL, "s", 1, T0)
    await _submit(st, "M1", a.id, "x@ex.com")
    await st.statuses.update_status("M1", "x@ex.com", Status.DELIVERED, None, "250 ok", _attempt(T0))
    day = timedelta(days=1)
    ev = await st.webhooks.claim("n1", T0, LEASE, 10)
    await st.webhooks.failed(hook.id, [e.id for e in ev], T0, 500, "HTTP 500", 3, T0 + timedelta(minutes=1), day)
    assert await st.webhooks.claim("n1", T0 + timedelta(seconds=30), LEASE, 10) == []  # backing off
    ev = await st.webhooks.claim("n1", T0 + timedelta(minutes=2), LEASE, 10)
    assert [e.attempts for e in ev] == [2]
    late = T0 + day + timedelta(seconds=1)
    await st.webhooks.failed(hook.id, [e.id for e in ev], late, None, "timeout", 3000, late, day)
    shown = await st.webhooks.get(hook.id)
    assert shown is not None and shown.disabled_at == late and "last error: timeout" in shown.disabled_reason
    assert shown.failures == 2 and shown.failing_since == T0 and shown.pending == 1
    assert [(x.http_status, x.error) for x in await st.webhooks.attempts(hook.id)] == [(None, "timeout"),
                                                                                     (500, "HTTP 500")]
    # disabled: nothing is claimed, no new events are written
    await st.statuses.update_status("M1", "x@ex.com", Status.SOFT_BOUNCE, SubStatus.SB_OTHERS, "bounce")
    assert await st.webhooks.claim("n1", late + day, LEASE, 10) == []
    assert await st.webhooks.enable(hook.id)
    assert len(await st.webhooks.claim("n1", late + day, LEASE, 10)) == 1
    assert (await st.webhooks.get(hook.id)).pending == 1  # type: ignore[union-attr]
    assert await st.webhooks.remove(hook.id) and await st.webhooks.get(hook.id) is None
    assert await st.webhooks.outbox_size() == 0 and not await st.webhooks.remove(hook.id)


async def test_two_nodes_claim_disjoint_events(storage_url: str) -> None:
    """Two storages (two nodes) claiming at once never get the same event."""
    st1, st2 = await open_storage(storage_url), await open_storage(storage_url)
    try:
        await st1.migrate()
        a = await st1.accounts.ensure_account("acme")
        await st1.webhooks.add(a.id, "http://127.0.0.1:9/h", ALL, "s", 1, T0)
        rcpts = [f"r{i}@ex.com" for i in range(300)]
        await _submit(st1, "M1", a.id, *rcpts)
        for r in rcpts:
            await st1.statuses.update_status("M1", r, Status.DELIVERED, None, "250 ok", _attempt(T0))
        seen: list[int] = []

        async def node(st: SqlStorage, name: str) -> None:
            while True:
                got = await st.webhooks.claim(name, T0, LEASE, 7)
                if not got:
                    return
                seen.extend(e.id for e in got)

        await asyncio.gather(node(st1, "n1"), node(st2, "n2"))
        assert len(seen) == 300 and len(set(seen)) == 300
    finally:
        await st1.close()
        await st2.close()


def _tracked(at: datetime, ev: RecipientEvent) -> LogEntry:
    # the line relay/engagement.py queues for an open or click
    return LogEntry(at, LogKind.FEEDBACK, ev.link or ev.type.value, rule=ev.type.value, event=ev)


async def test_opens_and_clicks_enqueue_events_for_webhooks_that_want_them(storage: SqlStorage) -> None:
    st = storage
    a = await st.accounts.ensure_account("acme")
    b = await st.accounts.ensure_account("other")
    clicks = await st.webhooks.add(a.id, "http://127.0.0.1:9/c", (WebhookEvent.CLICK,), "s", 1, T0)
    both = await st.webhooks.add(a.id, "http://127.0.0.1:9/t", (WebhookEvent.OPEN, WebhookEvent.CLICK), "s", 1, T0)
    await st.webhooks.add(a.id, "http://127.0.0.1:9/d", (WebhookEvent.DELIVERED,), "s", 1, T0)
    await st.webhooks.add(b.id, "http://127.0.0.1:9/b", (WebhookEvent.DELIVERED,), "s", 1, T0)
    await _submit(st, "M1", a.id, "x@ex.com")
    await _submit(st, "M2", b.id, "z@ex.com")  # its only webhook does not want opens or clicks
    t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    await st.statuses.append_logs([
        ("M1", "x@ex.com", _tracked(t1, RecipientEvent(EventType.OPEN, "198.51.100.7", "Mail/1.0"))),
        ("M2", "z@ex.com", _tracked(t1, RecipientEvent(EventType.OPEN, "198.51.100.8", "Mail/1.0"))),
        ("M2", "z@ex.com", _tracked(t1, RecipientEvent(EventType.CLICK, "198.51.100.8", "Mail/1.0",
                                                       link="https://shop.example/b"))),
        ("M1", "x@ex.com", _tracked(t2, RecipientEvent(EventType.CLICK, "198.51.100.7", "Browser/2",
                                                       link="https://shop.example/sale?id=1"))),
        # an unsubscribe line is not an open or click (its event comes from the list entry)
        ("M1", "x@ex.com", _tracked(t2, RecipientEvent(EventType.UNSUBSCRIBE, "198.51.100.7", "Browser/2",
                                                       reason_type=1))),
        ("M1", "x@ex.com", _attempt(t2)),
    ])
    assert await st.webhooks.outbox_size() == 3
    got: list[tuple[int, str, str, str, str, datetime]] = []
    tracked: list[tuple[str, RecipientEvent | None]] = []
    now = t2
    for _ in range(3):  # one event per (endpoint, recipient) at a time
        events = await st.webhooks.claim("n1", now, LEASE, 100)
        got += [(e.webhook_id, e.event, e.email_id, e.recipient, e.reason, e.at) for e in events]
        tracked += [(e.event, e.tracking) for e in events]
        await st.webhooks.succeeded([Delivered(e.webhook_id, (e.id,), now, 200, 1) for e in events])
    assert sorted(got) == sorted([
        (clicks.id, "click", "M1", "x@ex.com", "https://shop.example/sale?id=1", t2),
        (both.id, "open", "M1", "x@ex.com", "", t1),
        (both.id, "click", "M1", "x@ex.com", "https://shop.example/sale?id=1", t2),
    ])
    # the body's ip, user agent and link come from the event's own send-log line
    click = RecipientEvent(EventType.CLICK, "198.51.100.7", "Browser/2", link="https://shop.example/sale?id=1")
    assert sorted(tracked, key=lambda x: x[0]) == [
        ("click", click), ("click", click), ("open", RecipientEvent(EventType.OPEN, "198.51.100.7", "Mail/1.0"))]
    assert await st.webhooks.outbox_size() == 0


async def test_events_carry_the_messages_custom_args(storage: SqlStorage) -> None:
    """migration 0016: messages.custom_args, read with each claimed event of the message."""
    from dataclasses import replace

    st = storage
    a = await st.accounts.ensure_account("acme")
    await st.webhooks.add(a.id, "http://127.0.0.1:9/h", ALL, "s", 1, T0)
    args = '{"order":"1042","名":"値","n":[1,2.5,true,null]}'
    await st.statuses.record_submissions([SubmissionRecord(
        replace(_msg("CA1", a.id), custom_args=args),
        (RecipientOutcome("ok@ex.com", Status.SENDING), RecipientOutcome("no@ex.com", Status.INVALID,
                                                                         SubStatus.BLACKLIST, "policy")))])
    await _submit(st, "CA2", a.id, "plain@ex.com")
    await st.statuses.update_status("CA1", "ok@ex.com", Status.DELIVERED, None, "250 ok", _attempt(T0))
    await st.statuses.update_status("CA2", "plain@ex.com", Status.DELIVERED, None, "250 ok", _attempt(T0))
    await st.suppressions.add([SuppressionEntry(account_id=a.id, kind=ListKind.COMPLAINT, value="c@ex.com",
                                                created_at=T0)])
    got = {(e.email_id, e.recipient, e.event): e.custom_args for e in await st.webhooks.claim("n1", T0, LEASE, 100)}
    assert got == {("CA1", "ok@ex.com", "delivered"): args, ("CA1", "no@ex.com", "invalid"): args,
                   ("CA2", "plain@ex.com", "delivered"): None, ("", "c@ex.com", "report"): None}


async def test_target_event_for_each_accepted_recipient_of_subscribers(storage: SqlStorage) -> None:
    """migration 0017: a recipient inserted still sending enqueues `target` for the webhooks that ask
    for it, before its later events; one refused at submission, a replayed submission and a webhook
    that did not ask get none."""
    st = storage
    a = await st.accounts.ensure_account("acme")
    b = await st.accounts.ensure_account("other")
    wants = await st.webhooks.add(a.id, "http://127.0.0.1:9/t", (WebhookEvent.TARGET, WebhookEvent.DELIVERED,
                                                                 WebhookEvent.INVALID), "s", 1, T0)
    await st.webhooks.add(a.id, "http://127.0.0.1:9/d", DEFAULT_EVENTS, "s", 1, T0)  # the default: no target
    await st.webhooks.add(b.id, "http://127.0.0.1:9/b", (WebhookEvent.DELIVERED,), "s", 1, T0)
    await st.statuses.record_submissions([SubmissionRecord(_msg("M1", a.id), (
        RecipientOutcome("x@ex.com", Status.SENDING), RecipientOutcome("y@ex.com", Status.SENDING),
        RecipientOutcome("no@ex.com", Status.INVALID, SubStatus.BLACKLIST, "policy")))])
    await _submit(st, "M1", a.id, "x@ex.com")  # replayed (spool recovery): no second row, no second event
    await _submit(st, "M2", b.id, "z@ex.com")  # an account whose webhook does not ask for it
    t = T0 + timedelta(seconds=1)
    await st.statuses.update_status("M1", "x@ex.com", Status.DELIVERED, None, "250 ok", _attempt(t))

    first = await st.webhooks.claim("n1", t, LEASE, 100)
    mine = sorted((e.recipient, e.event) for e in first if e.webhook_id == wants.id)
    assert mine == [("no@ex.com", "invalid"), ("x@ex.com", "target"), ("y@ex.com", "target")]
    assert not any(e.event == "target" for e in first if e.webhook_id != wants.id)
    target = next(e for e in first if e.webhook_id == wants.id and e.recipient == "x@ex.com")
    assert (target.email_id, target.status, target.sub_status, target.api_user, target.sender) == (
        "M1", int(Status.SENDING), None, "u1", "news@shop.example")
    await st.webhooks.succeeded([Delivered(wants.id, tuple(e.id for e in first if e.webhook_id == wants.id),
                                           t, 200, 5)])
    nxt = [e for e in await st.webhooks.claim("n1", t, LEASE, 100) if e.webhook_id == wants.id]
    assert [(e.recipient, e.event) for e in nxt] == [("x@ex.com", "delivered")]
    assert nxt[0].id > target.id
