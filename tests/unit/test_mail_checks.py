"""MAIL FROM in an authenticated session: the credentials re-check and the rate token are asked
for together (each is a wait on another thread or process with intake workers), and each still
decides its own reply."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from relay.config import SubmissionConfig
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
async def test_revoked_credentials_win_over_the_token(allow: bool) -> None:
    handler, _ = _handler(False, allow)
    assert await handler.on_mail(_session(), "app@acme.example", {}) == replies.CREDENTIALS_GONE
    assert handler.tx is None


async def test_a_failed_re_check_is_a_temporary_failure() -> None:
    handler, _ = _handler(RuntimeError("database away"), True)
    assert await handler.on_mail(_session(), "app@acme.example", {}) == replies.CREDENTIALS_CHECK_FAILED
