"""Tenant isolation over every route of the HTTP API (table-driven): account A's key can neither
read nor change account B's data, and naming B's API_USER (or B's account) never widens A's access.

The table must name every route of the application (checked below), so a new route cannot ship
without its isolation case.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from relay.http.app import routes
from relay.http.v1_suppressions import LISTS
from storage.records import utcnow
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.relay_fixture import wait_until
from tests.integration.test_http_api import HTTP, Api, open_api

B_ONLY = {"/v1/complaints": ("email", "b-only@example.com"), "/v1/bounces": ("email", "b-only@example.com"),
          "/v1/blocks": ("email_or_domain", "b-only.example"), "/v1/unsubscribes": ("email", "b-only@example.com"),
          "/v1/no_interceptions": ("email_or_domain", "b-only.example")}


@pytest.fixture(params=["sqlite", "postgres"])
async def api(request: pytest.FixtureRequest, relay_factory: RelayFactory, sink: ScriptedMx) -> AsyncIterator[Api]:
    relay = await relay_factory({**HTTP, "delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{sink.port}",
                                 "delivery.ehlo_name": "relay.test"}, backend=request.param)
    async for a in open_api(relay):
        from storage.records import ListKind, SuppressionEntry

        kinds = {"/v1/complaints": ListKind.COMPLAINT, "/v1/bounces": ListKind.BOUNCE, "/v1/blocks": ListKind.BLOCK,
                 "/v1/unsubscribes": ListKind.UNSUBSCRIBE, "/v1/no_interceptions": ListKind.NO_INTERCEPTION}
        await relay.storage.suppressions.add([SuppressionEntry(a.b_account_id, kinds[p], v)
                                              for p, (_, v) in B_ONLY.items()])
        c = await relay.client(user="b1", key="beta-key-0123456789")  # a queue that belongs to B
        await c.sendmail("app@beta.example", ["x@example.net"], "Subject: b\r\n\r\nx\r\n")
        await c.quit()
        await wait_until(lambda: len(sink.messages) == 1)
        from storage.records import StatusFilter, utcnow

        await relay.storage.exports.create(B_EXPORT, a.b_account_id, "email_status",
                                           StatusFilter(account_id=a.b_account_id), utcnow())
        assert relay.app.exports is not None
        relay.app.exports.wake()
        yield a


Check = Callable[[Api], Awaitable[None]]
B_EXPORT = "b-export-0001"


async def _b_export_done(api: Api) -> None:
    async def done() -> bool:
        status, body = await api.call("GET", f"/v1/exports/{B_EXPORT}", api.b)
        return status == 200 and body["status"] == "succeeded"
    await wait_until(done, timeout=20)


async def _b_lists_intact(api: Api) -> None:
    for path, (field, value) in B_ONLY.items():
        _, body = await api.call("GET", path, api.b, params={field: value})
        assert body["total"] == 1, path


def _status_search() -> Check:
    async def check(api: Api) -> None:
        for params in ({"api_user": "b1"}, {"email_ids": "01BBB"}, {"email": "one@example.com"},
                       {"email": "one@example.com", "api_user": "b1"}):
            status, body = await api.call("GET", "/v1/email_status", api.a, params=params)
            assert status == 200 and all(r["api_user"] == "app1" for r in body["result"]), params
            assert "01BBB" not in {r["message_id"] for r in body["result"]}
        assert (await api.call("GET", "/v1/email_status", api.a, params={"account": "beta"}))[0] == 403
    return check


def _message() -> Check:
    async def check(api: Api) -> None:
        assert (await api.call("GET", "/v1/messages/01BBB", api.a))[0] == 404
        assert (await api.call("GET", "/v1/messages/01BBB", api.a, params={"account": "beta"}))[0] == 403
        assert (await api.call("GET", "/v1/messages/01BBB", api.b))[0] == 200
    return check


def _list_get(path: str) -> Check:
    async def check(api: Api) -> None:
        field, value = B_ONLY[path]
        _, body = await api.call("GET", path, api.a, params={field: value})
        assert body["total"] == 0 and body["result"] == []
        _, body = await api.call("GET", path, api.a, params={"limit": "100"})
        assert value not in {r[field] for r in body["result"]}
        assert (await api.call("GET", path, api.a, params={"account": "beta"}))[0] == 403
        status, body = await api.call("GET", path, api.a, params={"api_user": "b1"})  # B's API_USER: refused
        assert status == 400 and "api_user" in body["message"]
    return check


def _list_post(path: str) -> Check:
    async def check(api: Api) -> None:
        field, _ = B_ONLY[path]
        value = "new-for-a@example.com"
        status, body = await api.call("POST", path, api.a, json={field: value, "api_user": "b1"})
        assert status == 400 and "api_user" in body["message"]
        assert (await api.call("POST", path, api.a, params={"account": "beta"}, json={field: value}))[0] == 403
        assert (await api.call("POST", path, api.a, json={field: value}))[0] == 200
        _, body = await api.call("GET", path, api.b, params={field: value})
        assert body["total"] == 0  # A's entry went into A's account only
    return check


def _list_delete(path: str) -> Check:
    async def check(api: Api) -> None:
        field, value = B_ONLY[path]
        status, body = await api.call("DELETE", path, api.a, params={field: value})
        assert status == 200 and body["count"] == 0
        if path != "/v1/complaints":
            status, _ = await api.call("DELETE", path, api.a, params={field: value, "api_user": "b1"})
            assert status == 400
        assert (await api.call("DELETE", path, api.a, params={field: value, "account": "beta"}))[0] == 403
        await _b_lists_intact(api)
    return check


def _queues_list() -> Check:
    async def check(api: Api) -> None:
        for params in ({}, {"api_user": "b1"}):
            status, body = await api.call("GET", "/v1/queues", api.a, params=params)
            assert status == 200 and all(q["api_user"] == "app1" for q in body["result"])
        _, body = await api.call("GET", "/v1/queues", api.b)
        assert [(q["api_user"], q["domain"]) for q in body["result"]] == [("b1", "example.net")]
    return check


def _queue(method: str, suffix: str, **kw: Any) -> Check:
    async def check(api: Api) -> None:
        path = f"/v1/queues/b1/example.net{suffix}"
        status, body = await api.call(method, path, api.a, **kw)
        assert status == 404, body
        _, body = await api.call("GET", "/v1/queues/b1/example.net", api.b)
        assert body["queue"]["status"] != "paused" and body["queue"]["max_rate"] is None
        assert (await api.call(method, path, api.b, **kw))[0] == 200  # B itself may
    return check


def _admin_only(method: str, path: str, **kw: Any) -> Check:
    async def check(api: Api) -> None:
        assert (await api.call(method, path, api.a, **kw))[0] == 403
        assert (await api.call("GET", "/v1/email_status", api.b))[0] == 200  # b1 not revoked
    return check


def _export(method: str, suffix: str) -> Check:
    async def check(api: Api) -> None:
        await _b_export_done(api)
        path = f"/v1/exports/{B_EXPORT}{suffix}"
        status, body = await api.call(method, path, api.a)
        assert status == 404 and B_EXPORT in body["message"], body  # like a task that does not exist
        assert (await api.call(method, path, api.a, params={"account": "beta"}))[0] == 403
        if method == "GET" and suffix == "/download":
            async with api.session.get(api.base + path, headers=api.b) as r:
                assert r.status == 200 and r.content_type == "application/gzip"
        _, body = await api.call("GET", f"/v1/exports/{B_EXPORT}", api.b)
        assert body["status"] == "succeeded" and body["attempts"] == 1  # untouched by A
    return check


async def _exports_list(api: Api) -> None:
    await _b_export_done(api)
    status, body = await api.call("GET", "/v1/exports", api.a, params={"limit": "100"})
    assert status == 200 and B_EXPORT not in {t["id"] for t in body["result"]}
    assert (await api.call("GET", "/v1/exports", api.a, params={"account": "beta"}))[0] == 403
    _, body = await api.call("GET", "/v1/exports", api.b)
    assert [t["id"] for t in body["result"]] == [B_EXPORT]


async def _exports_create(api: Api) -> None:
    assert (await api.call("POST", "/v1/exports", api.a, params={"account": "beta"}))[0] == 403
    for body in ({"api_user": "b1"}, {"email_ids": ["01BBB"]}, {"email": "one@example.com", "api_user": "b1"}):
        status, task = await api.call("POST", "/v1/exports", api.a, json=body)
        assert status == 201

        async def done(tid: str = task["id"]) -> bool:
            return (await api.call("GET", f"/v1/exports/{tid}", api.a))[1]["status"] == "succeeded"
        await wait_until(done, timeout=20)
        async with api.session.get(f"{api.base}/v1/exports/{task['id']}/download", headers=api.a) as r:
            text = gzip.decompress(await r.read()).decode()
        assert len(text.splitlines()) == 1 and "01BBB" not in text, body  # the header only: nothing of B's
    _, body = await api.call("GET", "/v1/exports", api.b)
    assert [t["id"] for t in body["result"]] == [B_EXPORT]  # A's tasks are A's


async def _blocks_upload(api: Api) -> None:
    path = "/v1/blocks/upload"
    assert (await api.call("POST", path, api.a, params={"account": "beta"}, data=b"x@example.com\n"))[0] == 403
    assert (await api.call("POST", path, api.a, params={"api_user": "b1"}, data=b"x@example.com\n"))[0] == 400
    status, body = await api.call("POST", path, api.a, data=b"up-a@example.com\nup-b@example.com,b1\n")
    assert status == 200 and body["imported"] == 1 and body["errors"][0]["line"] == 2
    assert "api_user" in body["errors"][0]["message"]
    _, body = await api.call("GET", "/v1/blocks", api.b, params={"email_or_domain": "up-a@example.com"})
    assert body["total"] == 0  # went into A's account only
    await _b_lists_intact(api)


async def _api_users_list(api: Api) -> None:
    status, body = await api.call("GET", "/v1/api_users", api.a)
    assert status == 200 and {u["account"] for u in body["result"]} == {"acme"}  # never b1 of beta
    assert (await api.call("GET", "/v1/api_users", api.a, params={"account": "beta"}))[0] == 403


async def _b_label(api: Api) -> int:
    status, body = await api.call("POST", "/v1/labels", api.b, json={"label_name": "b-secret"})
    assert status in (200, 409)
    _, body = await api.call("GET", "/v1/labels", api.b, params={"label_name": "b-secret"})
    return int(body["result"][0]["label_id"])


def _labels(method: str, by_id: bool) -> Check:
    async def check(api: Api) -> None:
        b_id = await _b_label(api)
        path = f"/v1/labels/{b_id}" if by_id else "/v1/labels"
        kw: dict[str, Any] = {"json": {"label_name": "a-label"}} if method in ("POST", "PUT") else {}
        assert (await api.call(method, path, api.a, params={"account": "beta"}, **kw))[0] == 403
        status, body = await api.call(method, path, api.a, **kw)
        if by_id:
            assert status == 404, body  # another account's label is like one that does not exist
        elif method == "GET":
            assert status == 200 and "b-secret" not in {x["label_name"] for x in body["result"]}
        _, body = await api.call("GET", "/v1/labels", api.b)
        assert [(x["label_id"], x["label_name"]) for x in body["result"]] == [(b_id, "b-secret")]  # untouched
    return check


B_HOOK_URL = "https://b-only.example/hook"


async def _b_webhook(api: Api) -> int:
    _, body = await api.call("GET", "/v1/webhooks", api.b)
    for h in body["result"]:
        if h["url"] == B_HOOK_URL:
            return int(h["id"])
    status, body = await api.call("POST", "/v1/webhooks", api.b, json={"url": B_HOOK_URL})
    assert status == 201, body
    return int(body["id"])


def _webhooks(method: str, suffix: str | None) -> Check:
    """``suffix`` None: the collection; else ``/v1/webhooks/{B's id}`` + suffix."""

    async def check(api: Api) -> None:
        b_id = await _b_webhook(api)
        path = "/v1/webhooks" if suffix is None else f"/v1/webhooks/{b_id}{suffix}"
        creating = suffix is None and method == "POST"
        kw: dict[str, Any] = {"json": {"url": "https://a.example/hook"}} if creating else {}
        assert (await api.call(method, path, api.a, params={"account": "beta"}, **kw))[0] == 403
        status, body = await api.call(method, path, api.a, **kw)
        if suffix is not None:
            assert status == 404, body  # another account's webhook is like one that does not exist
        elif method == "GET":
            assert status == 200 and B_HOOK_URL not in {h["url"] for h in body["result"]}
        else:
            assert status == 201 and body["account"] == "acme"
        _, body = await api.call("GET", "/v1/webhooks", api.b)
        assert [(h["id"], h["url"]) for h in body["result"]] == [(b_id, B_HOOK_URL)]  # untouched
    return check


async def _stats_day(api: Api) -> None:
    today = utcnow().date().isoformat()
    params = {"start_date": today, "end_date": today}
    assert (await api.call("GET", "/v1/stats_day", api.a, params={**params, "account": "beta"}))[0] == 403
    for who, api_user in ((api.a, "b1"), (api.b, "b1")):  # A asking for B's API_USER gets nothing
        status, body = await api.call("GET", "/v1/stats_day", who, params={**params, "api_users": api_user})
        assert status == 200 and (body["total"] > 0) == (who is api.b), body


async def _openapi(api: Api) -> None:
    status, doc = await api.call("GET", "/openapi.json", api.a)
    assert status == 200 and "01BBB" not in str(doc)


async def _probe(api: Api, path: str) -> str:
    async with api.session.get(api.base + path, headers=api.a) as r:
        assert r.status == 200, (path, r.status)
        return await r.text()


async def _health(api: Api) -> None:
    assert await _probe(api, "/healthz") == "ok\n"
    assert await _probe(api, "/readyz") == "ready\n"


async def _metrics(api: Api) -> None:
    # counts only: API_USER labels, never a recipient, a message id or a list entry
    text = await _probe(api, "/metrics")
    assert 'mailrelay_messages_accepted_total{api_user="b1"} 1.0' in text
    for secret in ("x@example.net", "example.net", "b-only", "01BBB", "beta"):
        assert secret not in text, secret


async def _settings_get(api: Api) -> None:
    status, body = await api.call("GET", "/v1/account/settings", api.a)
    assert status == 200 and body["account"] == "acme"
    assert (await api.call("GET", "/v1/account/settings", api.a, params={"account": "beta"}))[0] == 403


async def _settings_put(api: Api) -> None:
    flip = {"track_clicks": True, "list_unsubscribe": False}
    assert (await api.call("PUT", "/v1/account/settings", api.a, params={"account": "beta"}, json=flip))[0] == 403
    status, body = await api.call("PUT", "/v1/account/settings", api.a, json=flip)
    assert status == 200 and body["account"] == "acme" and body["track_clicks"] is True
    _, body = await api.call("GET", "/v1/account/settings", api.b)
    assert body == {"account": "beta", "list_unsubscribe": True, "track_opens": False, "track_clicks": False}


async def _user_settings_get(api: Api) -> None:
    status, body = await api.call("GET", "/v1/api_users/b1/settings", api.a)
    assert status == 404 and "beta" not in str(body)  # B's API_USER does not exist for A
    status, body = await api.call("GET", "/v1/api_users/app1/settings", api.a)
    assert status == 200 and body["account"] == "acme"


async def _user_settings_put(api: Api) -> None:
    flip = {"track_clicks": True, "list_unsubscribe": False}
    assert (await api.call("PUT", "/v1/api_users/b1/settings", api.a, json=flip))[0] == 404
    # no account= here: the API_USER names its account (an undocumented parameter is a 400)
    assert (await api.call("PUT", "/v1/api_users/b1/settings", api.a, params={"account": "beta"}, json=flip))[0] == 400
    _, body = await api.call("GET", "/v1/api_users/b1/settings", api.b)
    assert body["overrides"] == {"list_unsubscribe": None, "track_opens": None, "track_clicks": None}
    status, body = await api.call("PUT", "/v1/api_users/app1/settings", api.a, json=flip)
    assert status == 200 and body["track_clicks"] is True and body["overrides"]["list_unsubscribe"] is False


def _send(path: str) -> Check:
    """A's key sends as A only: B's label is unknown to it, B's lists do not refuse A's mail, B's
    request_id is not A's, and what A sent is A's to see."""
    def body(**kw: Any) -> dict[str, Any]:
        if path.endswith("send_mime"):
            return {"from": "app@acme.example", "to": ["b-only@example.com"],
                    "mime": "U3ViamVjdDogaQ0KDQp4DQo=", **kw}
        return {"from": "app@acme.example", "to": ["b-only@example.com"],
                "body": {"subject": "i", "content": {"text": "x"}, **kw}}

    async def check(api: Api) -> None:
        b_label = await _b_label(api)
        label_kw = {"label_id": str(b_label)}
        status, answer = await api.call("POST", path, api.a, json=body(**label_kw))
        assert status == 400 and f"no label {b_label} in your account" in answer["message"]
        assert (await api.call("POST", path, api.a, params={"account": "beta"}, json=body()))[0] == 400
        _, b_answer = await api.call("POST", path, api.b, json={**body(), "request_id": "shared-id"})
        assert b_answer["email_ids"] == []  # on B's complaint list: refused for B
        status, answer = await api.call("POST", path, api.a, json={**body(), "request_id": "shared-id"})
        assert status == 200 and answer["refused"] == [] and len(answer["email_ids"]) == 1  # not B's list, not B's id
        ids = {"email_ids": answer["email_ids"][0]}

        async def total(who: dict[str, str]) -> int:
            return int((await api.call("GET", "/v1/email_status", who, params=ids))[1]["total"])

        async def a_sees_it() -> bool:
            return await total(api.a) == 1

        await wait_until(a_sees_it)  # the status rows are written just after the answer
        assert await total(api.b) == 0
    return check


CASES: dict[tuple[str, str], Check] = {
    ("GET", "/v1/account/settings"): _settings_get,
    ("PUT", "/v1/account/settings"): _settings_put,
    ("GET", "/v1/api_users/{name}/settings"): _user_settings_get,
    ("PUT", "/v1/api_users/{name}/settings"): _user_settings_put,
    ("GET", "/openapi.json"): _openapi,
    ("GET", "/healthz"): _health,
    ("GET", "/readyz"): _health,
    ("GET", "/metrics"): _metrics,
    ("GET", "/v1/email_status"): _status_search(),
    ("GET", "/v1/messages/{email_id}"): _message(),
    ("GET", "/v1/queues"): _queues_list(),
    ("GET", "/v1/queues/{api_user}/{domain}"): _queue("GET", ""),
    ("POST", "/v1/queues/{api_user}/{domain}/pause"): _queue("POST", "/pause"),
    ("POST", "/v1/queues/{api_user}/{domain}/resume"): _queue("POST", "/resume"),
    ("POST", "/v1/queues/{api_user}/{domain}/recover"): _queue("POST", "/recover"),
    ("PUT", "/v1/queues/{api_user}/{domain}/rate"): _queue("PUT", "/rate", json={"max_rate": 1}),
    ("GET", "/v1/api_users"): _api_users_list,
    ("GET", "/v1/stats_day"): _stats_day,
    ("GET", "/v1/labels"): _labels("GET", False),
    ("POST", "/v1/labels"): _labels("POST", False),
    ("PUT", "/v1/labels/{label_id}"): _labels("PUT", True),
    ("DELETE", "/v1/labels/{label_id}"): _labels("DELETE", True),
    ("POST", "/v1/api_users"): _admin_only("POST", "/v1/api_users", json={"api_user": "evil", "account": "beta"}),
    ("DELETE", "/v1/api_users/{name}"): _admin_only("DELETE", "/v1/api_users/b1"),
    ("POST", "/v1/blocks/upload"): _blocks_upload,
    ("POST", "/v1/exports"): _exports_create,
    ("GET", "/v1/exports"): _exports_list,
    ("GET", "/v1/exports/{export_id}"): _export("GET", ""),
    ("GET", "/v1/exports/{export_id}/download"): _export("GET", "/download"),
    ("POST", "/v1/exports/{export_id}/retry"): _export("POST", "/retry"),
    ("POST", "/v1/mail/send"): _send("/v1/mail/send"),
    ("POST", "/v1/mail/send_mime"): _send("/v1/mail/send_mime"),
    ("GET", "/v1/webhooks"): _webhooks("GET", None),
    ("POST", "/v1/webhooks"): _webhooks("POST", None),
    ("GET", "/v1/webhooks/{webhook_id}"): _webhooks("GET", ""),
    ("DELETE", "/v1/webhooks/{webhook_id}"): _webhooks("DELETE", ""),
    ("POST", "/v1/webhooks/{webhook_id}/enable"): _webhooks("POST", "/enable"),
    ("GET", "/v1/rules/unclassified"): _admin_only("GET", "/v1/rules/unclassified"),  # every account's replies
}
_MAKERS = {"GET": _list_get, "POST": _list_post, "DELETE": _list_delete}
for _spec in LISTS:
    for _m in _spec.methods:
        CASES[(_m, _spec.path)] = _MAKERS[_m](_spec.path)


def test_every_route_has_an_isolation_case() -> None:
    served = {(m, p) for m, p, _ in routes()}
    assert served == set(CASES), sorted(served ^ set(CASES))


@pytest.mark.parametrize("route", sorted({(m, p) for m, p, _ in routes()}), ids=lambda r: f"{r[0]} {r[1]}")
async def test_account_a_cannot_reach_account_b(api: Api, route: tuple[str, str]) -> None:
    await CASES[route](api)
