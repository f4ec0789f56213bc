"""MAIL FROM in an authenticated session: the credentials re-check and the rate token are asked
for together (each is a wait on another thread or process with intake workers), and each still
decides its own reply."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from relay.config import SubmissionConfig
from relay.rates import MessageRateLimiter
from relay.smtp import replies
from relay.smtp.engine import SessionInfo
from relay.smtp.submission import SubmissionHandler, SubmissionServices
from storage.records import ApiUser

USER = ApiUser("app1", 1, "acme", "hash", datetime(2026, 1, 1, tzinfo=UTC))


class Credentials:
    """still_valid answers only once the rate token was asked for: sequential checks would hang."""

    def __init__(self, valid: bool | Exception, rate_asked: asyncio.Event) -> None:
        self.valid = valid
        self.rate_asked = rate_asked

    async def still_valid(self, user: ApiUser) -> bool:
        await asyncio.wait_for(self.rate_asked.wait(), 2.0)
        if isinstance(self.valid, Exception):
            raise self.valid
        return self.valid


class Rates:
    def __init__(self, allow: bool, asked: asyncio.Event) -> None:
        self.allow = allow
        self.asked = asked
        self.calls = 0
        self.refunded = 0

    def refund(self, api_user: str, messages: int = 1) -> None:
        self.refunded += messages

    async def acquire(self, api_user: str, messages: int = 1) -> bool:
        self.calls += 1
        self.asked.set()
        await asyncio.sleep(0.01)
        return self.allow


def _handler(valid: bool | Exception, allow: bool) -> tuple[SubmissionHandler, Rates]:
    asked = asyncio.Event()
    rates = Rates(allow, asked)
    services = SubmissionServices(
        authenticator=cast(Any, Credentials(valid, asked)), chain=cast(Any, None), intake=cast(Any, None),
        spool=cast(Any, None), rate_limiter=rates, options=SubmissionConfig(), node="n1",
    )
    return SubmissionHandler(services), rates


def _session() -> SessionInfo:
    return SessionInfo(peer_ip="127.0.0.1", peer_port=5000, listener="smtp", principal=USER, authenticated=True)


async def test_valid_credentials_and_a_token_open_the_transaction() -> None:
    handler, rates = _handler(True, True)
    assert await handler.on_mail(_session(), "app@acme.example", {}) == replies.MAIL_OK
    assert rates.calls == 1 and handler.tx is not None


async def test_no_token_is_a_rate_limit() -> None:
    handler, _ = _handler(True, False)
    assert await handler.on_mail(_session(), "app@acme.example", {}) == replies.RATE_LIMITED
    assert handler.tx is None


@pytest.mark.parametrize("allow", [True, False])
async def test_revoked_credentials_win_over_the_token_and_it_is_given_back(allow: bool) -> None:
    handler, rates = _handler(False, allow)
    assert await handler.on_mail(_session(), "app@acme.example", {}) == replies.CREDENTIALS_GONE
    assert handler.tx is None
    await asyncio.sleep(0.05)  # the token's answer comes after the credentials'
    assert rates.refunded == (1 if allow else 0)


async def test_a_failed_re_check_is_a_temporary_failure_that_costs_no_token() -> None:
    """A database outage must not use up the API user's budget with every retried MAIL."""
    handler, rates = _handler(RuntimeError("database away"), True)
    for _ in range(3):
        assert await handler.on_mail(_session(), "app@acme.example", {}) == replies.CREDENTIALS_CHECK_FAILED
    await asyncio.sleep(0.05)
    assert rates.calls == 3 and rates.refunded == 3


async def test_an_abandoned_mail_gives_its_token_back() -> None:
    handler, rates = _handler(True, True)
    handler.s.authenticator = cast(Any, Credentials(True, asyncio.Event()))  # never answers in time
    task = asyncio.create_task(handler.on_mail(_session(), "app@acme.example", {}))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert rates.calls == 1 and rates.refunded == 1


def test_the_owners_bucket_takes_a_refund_up_to_its_burst() -> None:
    now = [0.0]
    limiter = MessageRateLimiter(rate=1.0, burst=2, clock=lambda: now[0])
    assert limiter.allow("u") and limiter.allow("u") and not limiter.allow("u")
    limiter.refund("u")
    assert limiter.allow("u") and not limiter.allow("u")
    limiter.refund("u", 5)
    assert limiter.allow("u") and limiter.allow("u") and not limiter.allow("u")  # capped at the burst
    limiter.refund("nobody")  # no bucket yet: nothing to give back
