"""Dispatcher: one connection's loop for a site — take an item, re-check, send, classify, report.

A dispatcher task keeps at most one SMTP connection and reuses it (RSET between messages) up to
``messages_per_connection``. It tries the site's MX hosts in preference order (each address in
turn) when it needs a connection. It never mutates scheduler state: every outcome goes back
through ``Scheduler.report``, which owns statuses, retries and the spool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from policies import Decision, PolicyChain, RecipientContext
from relay.delivery.client import ClientOptions, SmtpConnection, open_connection
from relay.delivery.outgoing import Outgoing, OutgoingUnavailable
from relay.delivery.site import SiteQueue
from relay.delivery.state import DeliveryItem
from relay.rules.reply import ReplyRules
from relay.rules.types import AttemptResult, Outcome, Scope, Stage
from storage.records import SubStatus, utcnow

log = logging.getLogger("mailrelay.delivery.dispatcher")


@dataclass
class DispatchContext:
    """What every dispatcher shares (built by the scheduler)."""

    client: ClientOptions
    rules: ReplyRules
    chain: PolicyChain | None
    load_content: Callable[[str], Awaitable[bytes]]
    outgoing: Outgoing | None  # headers added at delivery and the DKIM signature (None: content as spooled)
    return_path: Callable[[DeliveryItem], str]
    report: Callable[..., Awaitable[None]]  # Scheduler.report
    stopping: Callable[[], bool]
    clock: Callable[[], float] = time.time
    # A check younger than this counts as "just before the attempt": the first attempt right
    # after submission reuses the RCPT-time check instead of a second lookup (the residual window
    # is the same race every check has with an entry written a moment after it).
    recheck_after: float = 2.0


async def _recheck(ctx: DispatchContext, item: DeliveryItem) -> tuple[AttemptResult, SubStatus | None] | None:
    """The suppression lists again, just before the attempt (an entry may have arrived since)."""
    if ctx.chain is None:
        return None
    now = ctx.clock()
    if now - item.checked_at < ctx.recheck_after:
        return None
    item.checked_at = now
    res = await ctx.chain.check(RecipientContext(
        account_id=item.account_id, api_user=item.api_user, sender=item.sender,
        raw_recipient=item.recipient, smtputf8=item.smtputf8, now=utcnow()))
    v = res.verdict
    if v.decision is not Decision.REJECT:
        return None
    reason = f"{v.reason}: {v.detail}" if v.detail else (v.reason or "")
    return AttemptResult(Stage.POLICY, None, None, reason), v.sub_status


async def _connect(site: SiteQueue, opts: ClientOptions) -> SmtpConnection | AttemptResult:
    last: AttemptResult | None = None
    for host in site.plan.hosts:
        for ip in host.addresses:
            conn = await open_connection(host.name, ip, site.key.port, opts)
            if (isinstance(conn, AttemptResult) and conn.stage is Stage.STARTTLS and conn.code is None
                    and opts.starttls == "opportunistic"):
                # The TLS handshake failed: opportunistic TLS falls back to plaintext (Postfix "may").
                conn = await open_connection(host.name, ip, site.key.port, dataclasses.replace(opts, starttls="never"))
            if isinstance(conn, SmtpConnection):
                return conn
            last = conn
            if conn.code is not None and conn.stage is Stage.GREETING and 500 <= conn.code < 600:
                return conn  # a 5xx greeting means "no service for you" — do not shop around
    return last or AttemptResult(Stage.CONNECT, None, None, "no MX address to connect to")


async def _take_connection(site: SiteQueue, ctx: DispatchContext,
                           conn: SmtpConnection | None) -> SmtpConnection | AttemptResult:
    """The connection for the next message: this task's own, a pooled idle one, or a new one."""
    if conn is not None and conn.usable and conn.messages_sent < site.limits.messages_per_connection:
        return conn
    if conn is not None:
        await conn.close()
    while site.idle:
        pooled = site.idle.pop()
        if pooled.usable:
            return pooled
        await pooled.close()
    return await _connect(site, ctx.client)


async def _attempt(site: SiteQueue, ctx: DispatchContext, item: DeliveryItem,
                   conn: SmtpConnection | None) -> SmtpConnection | None:
    """One item: re-check, connect, send, classify, report. Returns the connection to keep."""
    stopped = await _recheck(ctx, item)
    if stopped is not None:
        await ctx.report(item, stopped[0], None, site, stopped[1])
        return conn
    taken = await _take_connection(site, ctx, conn)
    if isinstance(taken, AttemptResult):
        await ctx.report(item, taken, ctx.rules.classify(taken), site)
        return None
    conn = taken
    try:
        content = await ctx.load_content(item.email_id)
    except OSError as e:
        log.error("spool read failed", extra={"event": "spool_read_failed", "email_id": item.email_id,
                                              "error": str(e)})
        failed = AttemptResult(Stage.DATA, None, None, f"local error reading the spool: {e}")
        await ctx.report(item, failed, ctx.rules.classify(failed), None)
        return conn
    if ctx.outgoing is not None:
        try:
            content = await ctx.outgoing.prepare(item, content)
        except OutgoingUnavailable as e:
            failed = AttemptResult(Stage.DATA, None, None, f"local error preparing the message: {e}")
            await ctx.report(item, failed, ctx.rules.classify(failed), None)
            return conn
    t0 = time.monotonic()
    result = await conn.deliver(ctx.return_path(item), item.recipient, content,
                                smtputf8=item.smtputf8, size=len(content))
    c = ctx.rules.classify(result)
    if c.outcome is not Outcome.DELIVERED and c.scope is Scope.SITE:
        await conn.close()
        conn = None
    log.debug("attempt", extra={"event": "delivery_attempt", "email_id": item.email_id, "site": site.key.name,
                                "code": result.code, "scope": c.scope.value,
                                "ms": int((time.monotonic() - t0) * 1000)})
    await ctx.report(item, result, c, site)
    return conn


async def run_dispatcher(site: SiteQueue, ctx: DispatchContext) -> None:
    conn: SmtpConnection | None = None
    try:
        while site.ready and not ctx.stopping() and not site.paused():
            delay = site.token_delay()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            item = site.ready.popleft()
            site.in_flight += 1
            try:
                conn = await _attempt(site, ctx, item, conn)
            except Exception as e:  # a bug must cost one retry, never the item
                log.exception("delivery attempt failed", extra={"event": "dispatcher_error",
                                                                "email_id": item.email_id})
                if conn is not None:
                    await conn.close()
                    conn = None
                if not item.done:
                    failed = AttemptResult(Stage.CONNECT, None, None, f"internal error: {type(e).__name__}")
                    await ctx.report(item, failed, ctx.rules.classify(failed), None)
            finally:
                site.in_flight -= 1
    finally:
        if conn is not None:
            if conn.usable and not ctx.stopping() and len(site.idle) < site.limits.max_connections:
                site.idle.append(conn)
            else:
                await conn.close()
