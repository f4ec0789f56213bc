"""Event webhooks over HTTP: ``GET|POST /v1/webhooks``, ``GET|DELETE /v1/webhooks/{webhook_id}``,
``POST /v1/webhooks/{webhook_id}/enable`` (README "Webhooks").

Customers see and change their own account's webhooks (another account's is a 404, as if it did
not exist); operators every account's (``account=NAME`` narrows, and is required to add one). The
secret is answered once, by the POST that creates the webhook.
"""

from __future__ import annotations

from aiohttp import web

from relay.http.auth import SERVICES_KEY, scope_account
from relay.http.envelope import ApiError, json_body, ok, page
from relay.http.params import body_int, body_text, integer, text
from relay.webhook_json import (
    MAX_BATCH,
    MAX_URL,
    WebhookInputError,
    attempt_json,
    check_batch,
    check_signature,
    check_url,
    new_secret,
    parse_events,
    webhook_json,
)
from storage.webhooks import Webhook


def _webhook_id(request: web.Request) -> int:
    raw = request.match_info["webhook_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(400, "webhook_id: expected a webhook id (digits)")
    return int(raw)


async def _hook(request: web.Request) -> Webhook:
    webhook_id = _webhook_id(request)
    account_id = await scope_account(request, required=False)
    hook = await request.app[SERVICES_KEY].storage.webhooks.get(webhook_id, account_id)
    if hook is None:
        raise ApiError(404, f"no webhook {webhook_id}")
    return hook


async def list_webhooks(request: web.Request) -> web.Response:
    """EngageLab's parameters (docs/email/rest-api/WebHooks): ``offset`` (0), ``limit`` (0–100,
    default 100) and ``api_user``: webhooks are an account's, so it names the account (one of the
    caller's own API_USERs for a customer; any for an operator, like ``account=``)."""
    services = request.app[SERVICES_KEY]
    q = request.query
    offset = integer(q, "offset", 0, 0, 1_000_000)
    limit = integer(q, "limit", 100, 0, 100)
    account_id = await scope_account(request, required=False)
    name = text(q, "api_user", max_len=128)
    if name:
        user = await services.storage.accounts.get_api_user(name)
        if user is None or (account_id is not None and user.account_id != account_id):
            raise ApiError(400, f"api_user: {name[:80]!r} is not an API user of this account")
        account_id = user.account_id
    hooks = await services.storage.webhooks.list(account_id)
    now = services.clock()
    return page([webhook_json(h, now) for h in hooks[offset:offset + limit]], len(hooks))


async def create_webhook(request: web.Request) -> web.Response:
    account_id = await scope_account(request, required=True)
    assert account_id is not None
    body = await json_body(request)
    events = body.get("events")
    if events is not None and not isinstance(events, str | list):
        raise ApiError(400, "events: a list of event names, or one string of names separated by , or ;")
    try:
        services = request.app[SERVICES_KEY]
        url = check_url(body_text(body, "url", max_len=MAX_URL) or "", services.webhook_allow_private)
        parsed = parse_events(events)
        batch = check_batch(body_int(body, "batch", 1, 1, MAX_BATCH))
        secret = new_secret(body_text(body, "secret", max_len=200))
        signature = check_signature(body_text(body, "signature", max_len=20))
    except WebhookInputError as e:
        raise ApiError(400, str(e)) from None
    hook = await services.storage.webhooks.add(account_id, url, parsed, secret, batch, services.clock(),
                                               signature)
    return ok({**webhook_json(hook, services.clock()), "secret": secret}, status=201)


async def show_webhook(request: web.Request) -> web.Response:
    limit = integer(request.query, "attempts", 20, 0, 100)
    hook = await _hook(request)
    services = request.app[SERVICES_KEY]
    attempts = await services.storage.webhooks.attempts(hook.id, limit) if limit else []
    return ok({**webhook_json(hook, services.clock()), "attempts": [attempt_json(a) for a in attempts]})


async def delete_webhook(request: web.Request) -> web.Response:
    hook = await _hook(request)
    await request.app[SERVICES_KEY].storage.webhooks.remove(hook.id)
    return ok({"count": 1})


async def enable_webhook(request: web.Request) -> web.Response:
    hook = await _hook(request)
    services = request.app[SERVICES_KEY]
    await services.storage.webhooks.enable(hook.id)
    fresh = await services.storage.webhooks.get(hook.id)
    if fresh is None:  # removed in between
        raise ApiError(404, f"no webhook {hook.id}")
    return ok(webhook_json(fresh, services.clock()))
