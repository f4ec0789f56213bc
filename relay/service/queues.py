"""The (API_USER, receiving domain) queues of this node (QueueAdmin, in memory), for the HTTP API's
``/v1/queues`` and the console's queue page: list, show (with the 5 s series), pause, resume,
recover, rate. A customer sees and controls only its own account's API users' queues: another
account's queue is a 404, exactly like a queue that does not exist.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from relay.service.access import SERVICES_KEY, principal
from relay.service.errors import ApiError
from relay.service.params import integer, text
from relay.service.wiring import QueueControl, QueueViewLike


def queue_admin(request: web.Request) -> QueueControl:
    q = request.app[SERVICES_KEY].queues
    if q is None:
        raise ApiError(503, "delivery is not enabled on this node: there are no queues")
    return q


async def _own_users(request: web.Request) -> set[str] | None:
    """API_USER names the caller may see (None: every one, for operators)."""
    p = principal(request)
    if p.admin:
        return None
    users = await request.app[SERVICES_KEY].storage.accounts.list_api_users(p.account_id)
    return {u.name for u in users}


async def _queue_key(request: web.Request) -> tuple[str, str]:
    api_user, domain = request.match_info["api_user"], request.match_info["domain"].lower()
    if not (0 < len(api_user) <= 128 and 0 < len(domain) <= 255):
        raise ApiError(400, "api_user and domain: 1 to 128 / 255 characters")
    own = await _own_users(request)
    if own is not None and api_user not in own:
        raise ApiError(404, f"no queue for API_USER {api_user!r} and domain {domain!r}")
    return api_user, domain


async def list_queues(request: web.Request, q: Mapping[str, str]) -> list[dict[str, Any]]:
    """The caller's queues (every one for operators; ``api_user`` in ``q`` narrows), as JSON."""
    admin = queue_admin(request)
    wanted = text(q, "api_user", max_len=128)
    own = await _own_users(request)
    return [v.to_json() for v in admin.list(wanted) if own is None or v.api_user in own]


async def show_queue(request: web.Request, q: Mapping[str, str]) -> dict[str, Any]:
    """The queue of the route's ``{api_user}/{domain}`` with its 5 s series and waiting messages."""
    admin = queue_admin(request)
    limit = integer(q, "limit", 100, 1, 1000)
    api_user, domain = await _queue_key(request)
    try:
        return admin.show(api_user, domain, limit)
    except LookupError as e:
        raise ApiError(404, str(e).strip("'\"")) from None


ACTIONS = ("pause", "resume", "recover")


async def act(request: web.Request, name: str) -> dict[str, Any]:
    """Pause, resume or recover the route's queue; its JSON (recover: with ``released``)."""
    if name not in ACTIONS:
        raise ApiError(400, f"one of {', '.join(ACTIONS)}")
    admin = queue_admin(request)
    api_user, domain = await _queue_key(request)
    try:
        result: dict[str, Any] = getattr(admin, name)(api_user, domain).to_json()
    except LookupError as e:
        raise ApiError(404, str(e).strip("'\"")) from None
    return result


async def apply_rate(request: web.Request, rate: Any) -> QueueViewLike:
    """Set the queue's ``max_rate``."""
    admin = queue_admin(request)
    api_user, domain = await _queue_key(request)
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate)
                             or not 0 <= rate <= 1_000_000):
        raise ApiError(400, "max_rate: a number of messages per second from 0 to 1000000, or null (0 or null: no cap)")
    try:
        return admin.set_rate(api_user, domain, float(rate) if rate else None)
    except LookupError as e:
        raise ApiError(404, str(e).strip("'\"")) from None
