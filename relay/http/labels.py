"""EngageLab's labels: ``GET|POST /v1/labels``, ``PUT|DELETE /v1/labels/{label_id}``.

A label gives a name that mail carries (the ``X-Label`` header at submission; the status records'
``label`` field) a numeric ``label_id`` of the account. ``GET /v1/email_status?label_id=K`` finds
the mail labelled with label K's name (a ``label_id`` that is no label of the account is matched
as label text, as before labels existed). Renaming or deleting a label never rewrites mail
already sent: it keeps the name it was sent with.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.http.envelope import ApiError, json_body, ok, page, unstorable
from relay.service.access import SERVICES_KEY, scope_account
from relay.service.labels import label_filter as label_filter  # moved; still importable here
from relay.service.params import body_text, integer, text
from relay.service.times import zoned
from storage.errors import Conflict
from storage.records import Label

MAX_LIMIT = 100
MAX_NAME = 255  # what the X-Label header keeps


def label_json(label: Label) -> dict[str, Any]:
    return {"label_id": label.label_id, "label_name": label.name, "create_time": zoned(label.created_at),
            "update_time": zoned(label.updated_at)}


def _name(body: dict[str, Any]) -> str:
    name = body_text(body, "label_name", max_len=MAX_NAME)
    if not name or not name.strip() or any(ord(c) < 32 for c in name) or unstorable(name):
        raise ApiError(400, f"label_name: required, 1 to {MAX_NAME} characters, no control characters")
    return name.strip()


def _label_id(request: web.Request) -> int:
    raw = request.match_info["label_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(400, "label_id: expected a label id (digits)")
    return int(raw)


async def _account(request: web.Request) -> int:
    account_id = await scope_account(request, required=True)
    assert account_id is not None
    return account_id


async def list_labels(request: web.Request) -> web.Response:
    q = request.query
    offset = integer(q, "offset", 0, 0, 1_000_000)
    limit = integer(q, "limit", MAX_LIMIT, 0, MAX_LIMIT)
    contains = text(q, "label_name", max_len=MAX_NAME) or ""
    result = await request.app[SERVICES_KEY].storage.labels.list(
        await _account(request), name_contains=contains, offset=offset, limit=limit)
    return page([label_json(x) for x in result.items], result.total)


async def create_label(request: web.Request) -> web.Response:
    account_id = await _account(request)
    name = _name(await json_body(request))
    services = request.app[SERVICES_KEY]
    try:
        label = await services.storage.labels.create(account_id, name, services.clock())
    except Conflict:
        raise ApiError(409, f"label_name: a label {name[:80]!r} already exists") from None
    return ok(label_json(label))


async def rename_label(request: web.Request) -> web.Response:
    label_id = _label_id(request)
    account_id = await _account(request)
    name = _name(await json_body(request))
    services = request.app[SERVICES_KEY]
    try:
        label = await services.storage.labels.rename(account_id, label_id, name, services.clock())
    except Conflict:
        raise ApiError(409, f"label_name: a label {name[:80]!r} already exists") from None
    if label is None:
        raise ApiError(404, f"no label {label_id}")
    return ok(label_json(label))


async def delete_label(request: web.Request) -> web.Response:
    label_id = _label_id(request)
    if not await request.app[SERVICES_KEY].storage.labels.delete(await _account(request), label_id):
        raise ApiError(404, f"no label {label_id}")
    return ok({"count": 1})
