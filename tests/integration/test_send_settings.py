"""``body.settings`` of POST /v1/mail/send as EngageLab documents it (docs/email/rest-api/deliverlies:
``open_tracking``, ``click_tracking``, ``unsubscribe_tracking``), on SQLite and PostgreSQL through a
real relay that tracks and adds List-Unsubscribe: ``false`` turns the feature off for that mail
(as ``X-Mailrelay-Track: off`` does over SMTP); ``true`` asks for it, a 400 when the account has it
off rather than an answer that silently ignores it; ``sandbox: true`` is a 400 (not supported)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

import aiohttp
import pytest

from storage.records import AccountSettings, ApiUserSettings
from tests.helpers.dns_server import LoopbackDns
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest
from tests.integration.test_http_api import basic
from tests.integration.test_unsubscribe import delivered, recipient_overrides


@pytest.fixture(params=["sqlite", "postgres"])
async def relay(request: pytest.FixtureRequest, relay_factory: RelayFactory, dns: LoopbackDns,
                mx_port: int) -> RelayUnderTest:
    r = await relay_factory(recipient_overrides(dns, mx_port), backend=request.param)
    await r.storage.accounts.set_settings(r.account_id, AccountSettings(True, True, True))
    return r


@pytest.fixture
async def post(relay: RelayUnderTest) -> AsyncIterator[Any]:
    assert relay.app.http is not None
    host, port = relay.app.http.addresses[0][:2]
    async with aiohttp.ClientSession() as session:
        async def call(settings: dict[str, Any] | None) -> tuple[int, Any]:
            body: dict[str, Any] = {"subject": "Offer", "content": {
                "html": '<html><body><p>See <a href="https://shop.example/p/1">the offer</a></p></body></html>'}}
            if settings is not None:
                body["settings"] = settings
            async with session.post(f"http://{host}:{port}/v1/mail/send",
                                    json={"from": "news@acme.example", "to": ["user@example.test"], "body": body},
                                    headers=basic(relay.api_user, relay.key)) as r:
                return r.status, await r.json()
        yield call


def _features(content: bytes) -> dict[str, bool]:
    msg = message_from_bytes(content, policy=default)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(("html",))
    assert part is not None
    html = part.get_content()
    return {"opens": re.search(r'<img src="http://127\.0\.0\.1:\d+/o/', html) is not None,
            "clicks": re.search(r'href="http://127\.0\.0\.1:\d+/c/', html) is not None,
            "list-unsubscribe": msg["List-Unsubscribe"] is not None}


async def test_tracking_flags_turn_features_off_per_mail(relay: RelayUnderTest, mx: ScriptedMx, post: Any) -> None:
    status, answer = await post(None)
    assert status == 200, answer
    assert _features(await delivered(mx, 1)) == {"opens": True, "clicks": True, "list-unsubscribe": True}
    status, answer = await post({"open_tracking": True, "click_tracking": True, "unsubscribe_tracking": True})
    assert status == 200, answer
    assert _features(await delivered(mx, 2)) == {"opens": True, "clicks": True, "list-unsubscribe": True}
    status, answer = await post({"open_tracking": False, "click_tracking": True, "unsubscribe_tracking": False})
    assert status == 200, answer
    assert _features(await delivered(mx, 3)) == {"opens": False, "clicks": True, "list-unsubscribe": False}
    status, answer = await post({"open_tracking": False, "click_tracking": False, "return_email_id": True})
    assert status == 200, answer
    assert _features(await delivered(mx, 4)) == {"opens": False, "clicks": False, "list-unsubscribe": True}


async def test_flags_the_account_cannot_honour_are_a_400(relay: RelayUnderTest, mx: ScriptedMx, post: Any) -> None:
    await relay.storage.accounts.set_settings(relay.account_id, AccountSettings(True, False, False))
    status, answer = await post({"click_tracking": True})
    assert status == 400 and answer["message"] == (
        f"body.settings.click_tracking: track_clicks is off for API_USER {relay.api_user} (turn it on with PUT "
        f"/v1/account/settings or PUT /v1/api_users/{relay.api_user}/settings), or send false")
    status, answer = await post({"sandbox": True})
    assert status == 400
    assert answer["message"] == "body.settings.sandbox: not supported by this server (false or absent)"
    status, answer = await post({"open_tracking": "no"})
    assert status == 400 and answer["message"] == "body.settings.open_tracking: expected true or false"
    status, answer = await post({"open_tracking": False})  # off already: fine
    assert status == 200
    assert _features(await delivered(mx, 1)) == {"opens": False, "clicks": False, "list-unsubscribe": True}
    assert len(mx.messages) == 1


async def test_flags_follow_the_api_users_own_settings(relay: RelayUnderTest, mx: ScriptedMx, post: Any) -> None:
    """The check uses what delivery applies: the account's settings under the API_USER's overrides."""
    await relay.storage.accounts.set_settings(relay.account_id, AccountSettings(True, False, False))
    await relay.storage.accounts.set_user_settings(relay.api_user, ApiUserSettings(track_clicks=True))
    status, answer = await post({"click_tracking": True})
    assert status == 200, answer
    assert _features(await delivered(mx, 1)) == {"opens": False, "clicks": True, "list-unsubscribe": True}
    await relay.storage.accounts.set_settings(relay.account_id, AccountSettings(True, True, True))
    await relay.storage.accounts.set_user_settings(relay.api_user, ApiUserSettings(track_opens=False))
    status, answer = await post({"open_tracking": True})
    assert status == 400 and "track_opens is off for API_USER" in answer["message"]
    assert len(mx.messages) == 1
