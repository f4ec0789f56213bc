"""Webhook URL safety (SSRF) with the default ``[webhooks] allow_private_addresses = false``, over
real HTTP on SQLite and PostgreSQL: a customer cannot add a webhook that points at a loopback,
private, link-local or multicast address (a 400 that says why), and a webhook whose destination
is not public when the POST is made (added while the setting was on, or a name that now resolves
to such an address) is never POSTed to: the attempt fails with the reason, shown by the API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from storage.records import LogEntry, LogKind, Status
from storage.webhooks import WebhookEvent
from tests.helpers.webhook_receiver import Receiver
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import wait_until
from tests.integration.test_http_api import ADMIN, HTTP, NOW, Api, open_api

DEFAULTS = {**HTTP, "webhooks.allow_private_addresses": False, "webhooks.retry_initial": "100ms",
            "webhooks.poll": "100ms"}


@pytest.fixture(params=["sqlite", "postgres"])
async def api(request: pytest.FixtureRequest, relay_factory: RelayFactory) -> AsyncIterator[Api]:
    relay = await relay_factory(DEFAULTS, backend=request.param)
    async for a in open_api(relay):
        yield a


async def test_non_public_destinations_are_a_400(api: Api) -> None:
    for url, why in (("http://127.0.0.1:8080/hook", "127.0.0.1 is a loopback address"),
                     ("http://10.0.0.7/hook", "10.0.0.7 is a private address"),
                     ("http://[::ffff:192.168.0.1]/hook", "::ffff:c0a8:1 is a private address"),
                     ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
                     ("http://0.0.0.0:80/", "0.0.0.0 is an unspecified address"),
                     ("http://0x7f.1/", "127.0.0.1 is a loopback address"),
                     ("http://localhost:9000/", "localhost is a loopback name")):
        status, body = await api.call("POST", "/v1/webhooks", api.a, json={"url": url})
        assert status == 400, (url, body)
        assert body["message"] == (f"url: {why}: webhooks may only POST to public addresses (the operator's "
                                   "[webhooks] allow_private_addresses)"), body
    status, body = await api.call("POST", "/v1/webhooks", api.a, json={"url": "https://me:pw@hooks.example.com/"})
    assert status == 400 and body["message"].startswith("url: no user:password@ in the URL")
    status, body = await api.call("POST", "/v1/webhooks", ADMIN, params={"account": "acme"},
                                  json={"url": "http://10.0.0.7/hook"})
    assert status == 400  # operators too: the setting is the operator's switch
    status, body = await api.call("POST", "/v1/webhooks", api.a, json={"url": "https://hooks.example.com/mail"})
    assert status == 201 and body["url"] == "https://hooks.example.com/mail"


async def test_a_non_public_destination_is_refused_at_the_post(api: Api) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        # as if added while the setting was on (the CLI and API refuse it now): the sender checks again
        st = api.relay.storage
        hook = await st.webhooks.add(api.relay.account_id, receiver.url, (WebhookEvent.DELIVERED,),
                                     "dest-secret-0123456789", 1, NOW)
        await st.statuses.update_status("01AAB", "three@example.com", Status.DELIVERED, None, "250 2.0.0 ok",
                                        LogEntry(at=NOW, kind=LogKind.ATTEMPT, text="250 ok", code=250))

        async def refused() -> bool:
            _, body = await api.call("GET", f"/v1/webhooks/{hook.id}", api.a)
            return bool(body["attempts"])

        await wait_until(refused, 20)
        _, body = await api.call("GET", f"/v1/webhooks/{hook.id}", api.a)
        attempt = body["attempts"][0]
        assert attempt["ok"] is False and attempt["http_status"] is None
        assert attempt["error"] == "DestinationRefused: 127.0.0.1 is a loopback address", attempt
        assert body["pending"] == 1 and body["sent"] == 0 and body["state"] in ("backing off", "failing")
        await asyncio.sleep(0.5)
        assert receiver.posts == 0  # nothing ever reached the loopback endpoint
    finally:
        await receiver.stop()
