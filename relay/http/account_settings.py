"""``GET|PUT /v1/account/settings``: the account's List-Unsubscribe and tracking settings, and
``GET|PUT /v1/api_users/{name}/settings``: one API_USER's overrides of them (true/false, or null:
inherit the account's value).

Customers read and change their own account's (and its API users'; another account's API_USER is a
404, as if it did not exist); operators name an account with ``account=NAME`` and reach any API_USER."""

from __future__ import annotations

from aiohttp import web

from relay.account_settings import FIELDS, changed, settings_json, user_changed, user_settings_json
from relay.http.auth import SERVICES_KEY, principal, scope_account
from relay.http.envelope import ApiError, json_body, ok
from storage.records import ApiUser


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
    body = _checked(await json_body(request), inherit=False)
    accounts = request.app[SERVICES_KEY].storage.accounts
    st = changed(await accounts.get_settings(account_id), body)
    await accounts.set_settings(account_id, st)
    return ok(settings_json(name, st))


def _checked(body: dict[str, object], *, inherit: bool) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    for key, value in body.items():
        if key not in FIELDS:
            raise ApiError(400, f"{key}: unknown setting (one of {', '.join(FIELDS)})")
        if not isinstance(value, bool) and not (inherit and value is None):
            hint = " (or null: inherit the account's)" if inherit else ""
            raise ApiError(400, f"{key}: expected true or false{hint}")
        out[key] = value
    return out


async def _user(request: web.Request) -> ApiUser:
    name = request.match_info["name"]
    if len(name) > 128:
        raise ApiError(400, "name: at most 128 characters")
    user = await request.app[SERVICES_KEY].storage.accounts.get_api_user(name)
    p = principal(request)
    if user is None or (not p.admin and user.account_id != p.account_id):
        raise ApiError(404, f"no API_USER {name!r}")
    return user


async def _user_doc(request: web.Request, user: ApiUser) -> web.Response:
    accounts = request.app[SERVICES_KEY].storage.accounts
    own = await accounts.get_user_settings(user.name)
    return ok(user_settings_json(user.name, user.account_name, own, await accounts.get_settings(user.account_id)))


async def get_user_settings(request: web.Request) -> web.Response:
    return await _user_doc(request, await _user(request))


async def put_user_settings(request: web.Request) -> web.Response:
    user = await _user(request)
    body = _checked(await json_body(request), inherit=True)
    accounts = request.app[SERVICES_KEY].storage.accounts
    await accounts.set_user_settings(user.name, user_changed(await accounts.get_user_settings(user.name), body))
    return await _user_doc(request, user)
