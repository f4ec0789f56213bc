"""Per-API_USER settings end to end, on both backends: an API_USER's overrides of its account's
List-Unsubscribe and tracking settings, set through the HTTP API (``/v1/api_users/{name}/settings``)
and the CLI (`mailrelay users set`), decide what a real relay delivers to the scripted MX."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from relay.cli import main
from storage.records import AccountSettings
from tests.helpers.dns_server import LoopbackDns
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import RelayUnderTest
from tests.integration.test_http_api import basic
from tests.integration.test_tracking import html_part, newsletter
from tests.integration.test_unsubscribe import ADMIN, api_url, delivered, http, recipient_overrides

__all__ = ["http"]  # the fixture

QUIET_KEY = "quiet-key-0123456789"
BETA_KEY = "beta-key-0123456789"


@pytest.fixture(params=["sqlite", "postgres"])
async def relay(request: pytest.FixtureRequest, relay_factory: RelayFactory, dns: LoopbackDns,
                mx_port: int) -> RelayUnderTest:
    return await relay_factory(recipient_overrides(dns, mx_port), backend=request.param)


async def send_as(relay: RelayUnderTest, user: str, key: str) -> None:
    c = await relay.client(user=user, key=key)
    try:
        await c.sendmail("app@acme.example", ["user@example.test"], newsletter())
    finally:
        await c.quit()


def tracked(content: bytes) -> tuple[bool, bool]:
    """(links rewritten, open pixel) in the delivered HTML part."""
    text, _ = html_part(content)
    return "/c/" in text, "/o/" in text


async def call(http: aiohttp.ClientSession, relay: RelayUnderTest, method: str, path: str,
               auth: tuple[str, str] | None = None, body: Any = None) -> tuple[int, Any]:
    headers = basic(*auth) if auth else {"Authorization": f"Bearer {ADMIN}"}
    async with http.request(method, api_url(relay, path), headers=headers, json=body) as r:
        return r.status, await r.json()


async def test_api_user_with_tracking_off_under_an_account_with_tracking_on(
        relay: RelayUnderTest, mx: ScriptedMx, http: aiohttp.ClientSession) -> None:
    await relay.storage.accounts.set_settings(relay.account_id, AccountSettings(True, True, True))
    await relay.add_user("quiet", QUIET_KEY)
    status, doc = await call(http, relay, "PUT", "/v1/api_users/quiet/settings",
                             body={"track_opens": False, "track_clicks": False})
    assert status == 200, doc
    assert doc == {"api_user": "quiet", "account": "acme", "list_unsubscribe": True,
                             "track_opens": False, "track_clicks": False,
                             "overrides": {"list_unsubscribe": None, "track_opens": False, "track_clicks": False}}
    await send_as(relay, "quiet", QUIET_KEY)
    quiet = await delivered(mx, 1)
    await send_as(relay, relay.api_user, relay.key)
    loud = await delivered(mx, 2)
    assert tracked(quiet) == (False, False)  # no rewritten link, no pixel
    assert "https://shop.example/p/1?a=1&amp;b=2" in html_part(quiet)[0]
    assert b"List-Unsubscribe:" in quiet  # inherited from the account
    assert tracked(loud) == (True, True)  # the account's other API_USER: the account's settings


async def test_api_user_with_tracking_on_under_an_account_with_tracking_off(
        relay: RelayUnderTest, mx: ScriptedMx, http: aiohttp.ClientSession,
        capsys: pytest.CaptureFixture[str]) -> None:
    await relay.add_user("b1", BETA_KEY, account="beta")  # beta never changed: tracking off
    rc = await asyncio.to_thread(main, ["users", "set", "b1", "--track-clicks", "on", "--list-unsubscribe", "off",
                                        "--home", str(relay.home)])
    out = capsys.readouterr().out
    assert rc == 0 and "track-clicks       on   (API_USER)" in out and "track-opens        off  (account)" in out
    await send_as(relay, "b1", BETA_KEY)
    content = await delivered(mx, 1)
    assert tracked(content) == (True, False)  # clicks on for b1, opens still the account's (off)
    assert b"List-Unsubscribe:" not in content
    rc = await asyncio.to_thread(main, ["users", "show", "b1", "--json", "--home", str(relay.home)])
    assert rc == 0 and json.loads(capsys.readouterr().out)["overrides"] == {
        "list_unsubscribe": False, "track_opens": None, "track_clicks": True}


async def test_api_user_settings_api_scope_and_bad_input(relay: RelayUnderTest, http: aiohttp.ClientSession) -> None:
    await relay.add_user("b1", BETA_KEY, account="beta")
    me = (relay.api_user, relay.key)
    # a customer reads and changes its own account's API users; another account's is a 404
    status, doc = await call(http, relay, "GET", f"/v1/api_users/{relay.api_user}/settings", me)
    assert status == 200 and doc["overrides"] == {
        "list_unsubscribe": None, "track_opens": None, "track_clicks": None}
    assert doc["track_opens"] is False  # the account's default
    for method, body in (("GET", None), ("PUT", {"track_opens": True})):
        status, doc = await call(http, relay, method, "/v1/api_users/b1/settings", me, body)
        assert status == 404 and "b1" in doc["message"], doc
    assert (await relay.storage.accounts.get_user_settings("b1")).track_opens is None  # unchanged
    status, doc = await call(http, relay, "PUT", f"/v1/api_users/{relay.api_user}/settings", me,
                             {"track_opens": True})
    assert status == 200 and doc["track_opens"] is True
    # null: inherit the account's value again
    status, doc = await call(http, relay, "PUT", f"/v1/api_users/{relay.api_user}/settings", me,
                             {"track_opens": None})
    assert status == 200 and doc["overrides"]["track_opens"] is None and doc["track_opens"] is False
    for body in ({"track_opens": "yes"}, {"track_opens": 1}, {"tracking": True}, [True]):
        status, doc = await call(http, relay, "PUT", f"/v1/api_users/{relay.api_user}/settings", me, body)
        assert status == 400, (body, doc)
    status, _ = await call(http, relay, "GET", "/v1/api_users/nobody/settings")
    assert status == 404
    status, _ = await call(http, relay, "GET", f"/v1/api_users/{'x' * 200}/settings")
    assert status == 400
    # the account's endpoint is unchanged by all this
    status, doc = await call(http, relay, "GET", "/v1/account/settings", me)
    assert status == 200 and doc == {"account": "acme", "list_unsubscribe": True, "track_opens": False,
                                               "track_clicks": False}
