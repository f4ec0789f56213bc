"""API users: ``GET /v1/api_users`` (customers: their own account's; operators: all, or one
account), and the operators' administration ``POST /v1/api_users``, ``DELETE /v1/api_users/{name}``.

POST creates the account when it is new and answers the key once (only its scrypt hash is kept).
DELETE revokes: the key stops working at once on this node (the verified-key cache is dropped)
and within the cache lifetime on other nodes.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from relay.http.auth import SERVICES_KEY, require_admin, scope_account
from relay.http.envelope import ApiError, json_body, ok, page
from relay.http.params import body_text
from relay.keys import generate_key, hash_key
from storage.errors import Conflict
from storage.records import ALL_API_USERS, ApiUser

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


def user_json(u: ApiUser) -> dict[str, Any]:
    return {"api_user": u.name, "account": u.account_name, "active": u.active,
            "create_time": u.created_at.isoformat(), "revoke_time": u.revoked_at.isoformat() if u.revoked_at else None}


async def list_users(request: web.Request) -> web.Response:
    """Customers see their own account's API users; operators every account's (or ``account=``)."""
    account_id = await scope_account(request, required=False)
    users = await request.app[SERVICES_KEY].storage.accounts.list_api_users(account_id)
    return page([user_json(u) for u in users], len(users))


async def create_user(request: web.Request) -> web.Response:
    require_admin(request)
    body = await json_body(request)
    name = body_text(body, "api_user", max_len=128)
    account = body_text(body, "account", max_len=128)
    if not name or not _NAME.match(name) or name.lower() == ALL_API_USERS:
        raise ApiError(400, "api_user: required; letters, digits and ._@+- (at most 128), not 'all'")
    if not account or not _ACCOUNT.match(account):
        raise ApiError(400, "account: required; letters, digits and ._@+- (at most 128)")
    storage = request.app[SERVICES_KEY].storage
    acct = await storage.accounts.ensure_account(account)
    key = generate_key()
    key_hash = await asyncio.to_thread(hash_key, key)
    try:
        user = await storage.accounts.add_api_user(name, acct.id, key_hash)
    except Conflict:
        raise ApiError(409, f"API_USER {name!r} already exists") from None
    return ok({**user_json(user), "api_key": key}, status=201)


async def revoke_user(request: web.Request) -> web.Response:
    require_admin(request)
    services = request.app[SERVICES_KEY]
    name = request.match_info["name"]
    if len(name) > 128:
        raise ApiError(400, "name: at most 128 characters")
    if not await services.storage.accounts.revoke_api_user(name, services.clock()):
        raise ApiError(404, f"no active API_USER {name!r}")
    services.authenticator.forget(name)
    user = await services.storage.accounts.get_api_user(name)
    assert user is not None
    return ok(user_json(user))
