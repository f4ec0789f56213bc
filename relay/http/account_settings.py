"""``GET|PUT /v1/account/settings``: the account's List-Unsubscribe and tracking settings.

Customers read and change their own account's; operators name one with ``account=NAME``."""

from __future__ import annotations

from aiohttp import web

from relay.account_settings import FIELDS, changed, settings_json
from relay.http.auth import SERVICES_KEY, scope_account
from relay.http.envelope import ApiError, json_body, ok


async def _account(request: web.Request) -> tuple[int, str]:
    account_id = await scope_account(request, required=True)
    assert account_id is not None
    acct = await request.app[SERVICES_KEY].storage.accounts.get_account_by_id(account_id)
    if acct is None:
        raise ApiError(404, "account does not exist")
    return account_id, acct.name


async def get_settings(request: web.Request) -> web.Response:
    account_id, name = await _account(request)
    return ok(settings_json(name, await request.app[SERVICES_KEY].storage.accounts.get_settings(account_id)))


async def put_settings(request: web.Request) -> web.Response:
    account_id, name = await _account(request)
    body = await json_body(request)
    for key, value in body.items():
        if key not in FIELDS:
            raise ApiError(400, f"{key}: unknown setting (one of {', '.join(FIELDS)})")
        if not isinstance(value, bool):
            raise ApiError(400, f"{key}: expected true or false")
    accounts = request.app[SERVICES_KEY].storage.accounts
    st = changed(await accounts.get_settings(account_id), body)
    await accounts.set_settings(account_id, st)
    return ok(settings_json(name, st))
