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
from relay.delivery.classify import ReplyRules
from relay.delivery.client import ClientOptions, SmtpConnection, open_connection
from relay.delivery.site import SiteQueue
from relay.delivery.state import DeliveryItem
from relay.delivery.types import AttemptResult, Outcome, Scope, Stage
from storage.records import SubStatus, utcnow

log = logging.getLogger("mailrelay.delivery.dispatcher")


@dataclass
class DispatchContext:
    """What every dispatcher shares (built by the scheduler)."""

    client: ClientOptions
    rules: ReplyRules
    chain: PolicyChain | None
    load_content: Callable[[str], Awaitable[bytes]]
    return_path: Callable[[DeliveryItem], str]
    report: Callable[..., Awaitable[None]]  # Scheduler.report
    stopping: Callable[[], bool]


async def _recheck(ctx: DispatchContext, item: DeliveryItem) -> tuple[AttemptResult, SubStatus | None] | None:
    """The suppression lists again, just before the attempt (an entry may have arrived since)."""
    if ctx.chain is None:
        return None
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
                stopped = await _recheck(ctx, item)
                if stopped is not None:
                    await ctx.report(item, stopped[0], None, site, stopped[1])
                    continue
                if conn is None or not conn.usable or conn.messages_sent >= site.limits.messages_per_connection:
                    if conn is not None:
                        await conn.close()
                        conn = None
                    while site.idle and conn is None:
                        pooled = site.idle.pop()
                        if pooled.usable:
                            conn = pooled
                        else:
                            await pooled.close()
                    if conn is None:
                        opened = await _connect(site, ctx.client)
                        if isinstance(opened, AttemptResult):
                            await ctx.report(item, opened, ctx.rules.classify(opened), site)
                            continue
                        conn = opened
                try:
                    content = await ctx.load_content(item.email_id)
                except OSError as e:
                    log.error("spool read failed", extra={"event": "spool_read_failed", "email_id": item.email_id,
                                                          "error": str(e)})
                    failed = AttemptResult(Stage.DATA, None, None, f"local error reading the spool: {e}")
                    await ctx.report(item, failed, ctx.rules.classify(failed), None)
                    continue
                t0 = time.monotonic()
                result = await conn.deliver(ctx.return_path(item), item.recipient, content,
                                            smtputf8=item.smtputf8, size=len(content))
                c = ctx.rules.classify(result)
                if c.outcome is not Outcome.DELIVERED and c.scope is Scope.SITE:
                    await conn.close()
                    conn = None
                log.debug("attempt", extra={"event": "delivery_attempt", "email_id": item.email_id,
                                            "site": site.key.name, "code": result.code, "scope": c.scope.value,
                                            "ms": int((time.monotonic() - t0) * 1000)})
                await ctx.report(item, result, c, site)
            finally:
                site.in_flight -= 1
    finally:
        if conn is not None:
            if conn.usable and not ctx.stopping() and len(site.idle) < site.limits.max_connections:
                site.idle.append(conn)
            else:
                await conn.close()
