"""``/v1/webhooks`` over real HTTP (SQLite and PostgreSQL): customers manage their own account's
webhooks only, operators every account's; bad input is a 400 that says what is wrong; a status
change of the account reaches the endpoint through the relay's own sender, and shows in the attempts."""

from __future__ import annotations

from storage.records import LogEntry, LogKind, Status
from tests.helpers.webhook_receiver import Receiver
from tests.integration.relay_fixture import wait_until
from tests.integration.test_http_api import ADMIN, NOW, Api

SECRET = "http-test-secret-0123456789"


async def test_customer_and_operator_scopes(api: Api) -> None:
    status, hook = await api.call("POST", "/v1/webhooks", api.a,
                                  json={"url": "https://hooks.example/a", "events": ["delivered", "complaint"]})
    assert status == 201 and hook["account"] == "acme" and hook["events"] == ["delivered", "report"]
    assert len(hook["secret"]) >= 32 and hook["state"] == "active" and hook["batch"] == 1
    status, other = await api.call("POST", "/v1/webhooks", api.b,
                                   json={"url": "http://127.0.0.1:9/b", "events": "open;click", "batch": 5,
                                         "secret": SECRET})
    assert status == 201 and other["secret"] == SECRET and other["events"] == ["open", "click"]

    _, body = await api.call("GET", "/v1/webhooks", api.a)
    assert [h["id"] for h in body["result"]] == [hook["id"]] and "secret" not in body["result"][0]
    _, body = await api.call("GET", "/v1/webhooks", ADMIN)
    assert body["total"] == 2
    _, body = await api.call("GET", "/v1/webhooks", ADMIN, params={"account": "beta"})
    assert [h["id"] for h in body["result"]] == [other["id"]]

    # another account's webhook does not exist for a customer
    for method, path in (("GET", f"/v1/webhooks/{other['id']}"), ("DELETE", f"/v1/webhooks/{other['id']}"),
                         ("POST", f"/v1/webhooks/{other['id']}/enable")):
        status, body = await api.call(method, path, api.a)
        assert status == 404 and body["message"] == f"no webhook {other['id']}"
    status, body = await api.call("GET", f"/v1/webhooks/{other['id']}", ADMIN, params={"attempts": "5"})
    assert status == 200 and body["attempts"] == [] and body["url"] == "http://127.0.0.1:9/b"
    status, body = await api.call("POST", f"/v1/webhooks/{other['id']}/enable", api.b)
    assert status == 200 and body["state"] == "active"

    status, body = await api.call("POST", "/v1/webhooks", ADMIN, json={"url": "https://x.example/"})
    assert status == 400 and "account: required for operators" in body["message"]
    status, body = await api.call("POST", "/v1/webhooks", ADMIN, params={"account": "beta"},
                                  json={"url": "https://x.example/"})
    assert status == 201 and body["account"] == "beta"

    status, body = await api.call("DELETE", f"/v1/webhooks/{hook['id']}", api.a)
    assert status == 200 and body == {"count": 1}
    status, _ = await api.call("GET", f"/v1/webhooks/{hook['id']}", api.a)
    assert status == 404


async def test_bad_input_is_a_clear_400(api: Api) -> None:
    cases = [
        ({"url": "ftp://x.example/"}, "url: 'ftp://x.example/' is not an http:// or https:// URL with a host"),
        ({}, "url: an http:// or https:// URL"),
        ({"url": "http://x.example/", "events": ["delivered", "bogus"]}, "events: unknown event 'bogus'"),
        ({"url": "http://x.example/", "events": 3}, "events: a list of event names"),
        ({"url": "http://x.example/", "batch": 0}, "batch: expected an integer between 1 and 100"),
        ({"url": "http://x.example/", "secret": "short"}, "secret: at least 16 characters"),
        ({"url": "http://x.example/", "event": [1]}, "event: unknown field of POST /v1/webhooks"),
    ]
    for body, message in cases:
        status, answer = await api.call("POST", "/v1/webhooks", api.a, json=body)
        assert status == 400 and message in answer["message"], (body, answer)
    status, answer = await api.call("GET", "/v1/webhooks/abc", api.a)
    assert status == 400 and answer["message"] == "webhook_id: expected a webhook id (digits)"
    status, answer = await api.call("GET", "/v1/webhooks", api.a, params={"page": "5"})
    assert status == 400 and "page: unknown parameter" in answer["message"]
    status, answer = await api.call("GET", "/v1/webhooks", api.a, params={"api_user": "b1"})
    assert status == 400 and answer["message"] == "api_user: 'b1' is not an API user of this account"
    _, body = await api.call("GET", "/v1/webhooks", api.a)
    assert body["total"] == 0


async def test_a_status_change_reaches_the_endpoint(api: Api) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        status, hook = await api.call("POST", "/v1/webhooks", api.a,
                                      json={"url": receiver.url, "events": ["delivered"], "secret": SECRET})
        assert status == 201
        receiver.secrets[hook["id"]] = SECRET
        await api.relay.storage.statuses.update_status("01AAB", "three@example.com", Status.DELIVERED, None,
                                                       "250 2.0.0 ok", LogEntry(at=NOW, kind=LogKind.ATTEMPT,
                                                                                text="250 ok", code=250))
        await receiver.wait_for(1, 20)

        async def settled() -> bool:
            _, body = await api.call("GET", f"/v1/webhooks/{hook['id']}", api.a)
            return bool(body["sent"] == 1 and body["attempts"])

        await wait_until(settled, 20)
        _, body = await api.call("GET", f"/v1/webhooks/{hook['id']}", api.a)
        assert body["pending"] == 0 and body["last_success_time"] is not None
        assert body["attempts"][0]["http_status"] == 200 and body["attempts"][0]["ok"] is True
        event = receiver.events[0]
        assert event["to"] == "three@example.com" and event["message_id"] == "01AAB"
        assert event["status"]["message_status"] == "delivered"
        assert receiver.bad_signatures == 0
    finally:
        await receiver.stop()


async def test_a_webhook_signed_the_engagelab_way(api: Api) -> None:
    """docs/email/webhook/webhook: X-WebHook-Signature is the HMAC-SHA256 of the timestamp, keyed
    with the secret; ``"signature": "engagelab"`` signs so, for receivers written against that page."""
    receiver = Receiver()
    await receiver.start()
    try:
        status, body = await api.call("POST", "/v1/webhooks", api.a, json={"url": receiver.url, "signature": "md5"})
        assert status == 400 and body["message"].startswith("signature: body (HMAC-SHA256")
        status, hook = await api.call("POST", "/v1/webhooks", api.a, json={
            "url": receiver.url, "events": ["delivered"], "secret": SECRET, "signature": "engagelab"})
        assert status == 201 and hook["signature"] == "engagelab"
        receiver.secrets[hook["id"]] = SECRET
        receiver.timestamp_only.add(hook["id"])  # the receiver verifies EngageLab's way only
        await api.relay.storage.statuses.update_status("01AAB", "three@example.com", Status.DELIVERED, None,
                                                       "250 2.0.0 ok", LogEntry(at=NOW, kind=LogKind.ATTEMPT,
                                                                                text="250 ok", code=250))
        await receiver.wait_for(1, 20)
        assert receiver.bad_signatures == 0 and receiver.events[0]["to"] == "three@example.com"
        _, listed = await api.call("GET", "/v1/webhooks", api.a)
        assert [h["signature"] for h in listed["result"]] == ["engagelab"]
    finally:
        await receiver.stop()

