"""The suppression-list pages: spam reports (complaints), block list (add, upload, delete),
bounce list beside the no-interception list, unsubscribes.

Reading, adding, deleting and uploading are the list service the API uses
(``relay.service.lists``), called with the signed-in principal: the same validation, tenant rule
and messages.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from relay.console.app import redirect, render
from relay.service import lists as sup
from relay.service.errors import ApiError
from relay.service.wiring import no_request_timeout
from storage.records import ListKind, UnsubscribeReason

PAGE_SIZE = 50
SPECS: dict[str, sup.ListApi] = {spec.path.removeprefix("/v1/"): spec for spec in sup.LISTS}

TITLES = {"complaints": "Spam reports", "blocks": "Block list", "bounces": "Bounce list",
          "no_interceptions": "No-interception list", "unsubscribes": "Unsubscribes"}

# SPEC §7: a complaint may be deleted, with the warning that the next mail goes out.
COMPLAINT_ADVICE = ("We advise against deleting spam reports. The recipient told their mailbox provider that your "
                    "mail is spam; once the report is deleted, the next mail to that address is sent, and a second "
                    "complaint harms the reputation of everything you send. (A report leaves the list by itself "
                    "after 180 days.)")


def _spec(request: web.Request) -> tuple[str, sup.ListApi]:
    slug = request.match_info["kind"]
    if slug not in SPECS:
        raise web.HTTPNotFound()
    return slug, SPECS[slug]


async def list_page(request: web.Request) -> web.Response:
    slug, spec = _spec(request)
    q = request.query
    params = {k: q[k] for k in (spec.value_field, "api_user", "start_time", "end_time", "offset") if q.get(k)}
    params["limit"] = str(PAGE_SIZE)
    data = await sup.list_entries(request, spec, params)
    side = None
    if spec.kind is ListKind.BOUNCE:  # the no-interception list beside it
        side = await sup.list_entries(request, SPECS["no_interceptions"], {"limit": str(PAGE_SIZE)})
    offset = int(params.get("offset", "0"))
    return render(request, "list.html", {
        "slug": slug, "spec": spec, "title": TITLES[slug], "rows": data["result"], "total": data["total"],
        "filters": {k: q.get(k, "") for k in (spec.value_field, "start_time", "end_time")},
        "offset": offset, "page_size": PAGE_SIZE, "side": side, "advice": COMPLAINT_ADVICE,
        "can_add": "POST" in spec.methods, "can_delete": "DELETE" in spec.methods,
        "reasons": [(int(r), r.text) for r in UnsubscribeReason], "kind": spec.kind.value,
        "more": urlencode({k: v for k, v in {**params, "offset": str(offset + PAGE_SIZE)}.items() if k != "limit"}),
        "less": urlencode({k: v for k, v in {**params, "offset": str(max(0, offset - PAGE_SIZE))}.items()
                           if k != "limit"}),
    })


async def add(request: web.Request) -> web.StreamResponse:
    slug, spec = _spec(request)
    if "POST" not in spec.methods:
        raise ApiError(405, "entries cannot be added to this list")
    form = await request.post()
    values = [v.strip() for v in str(form.get("values", "")).splitlines() if v.strip()]
    body: dict[str, Any] = {spec.value_field: values, "api_user": str(form.get("api_user", "")).strip() or None}
    if form.get("reason"):
        body["reason"] = str(form["reason"])
    if spec.kind is ListKind.BLOCK and form.get("expire_time"):
        body["expire_time"] = str(form["expire_time"])
    if spec.kind is ListKind.UNSUBSCRIBE and form.get("type"):
        try:
            body["type"] = int(str(form["type"]))
        except ValueError:
            raise ApiError(400, "type: one of 0, 1, 2, 3") from None
    n = await sup.add_entries(request, spec, body)
    return redirect(request, f"lists/{slug}", f"Added {n} new entries to the {TITLES[slug].lower()} "
                                              f"({len(values) - n} were there already).")


async def delete(request: web.Request) -> web.StreamResponse:
    slug, spec = _spec(request)
    if "DELETE" not in spec.methods:
        raise ApiError(405, "entries cannot be deleted from this list")
    form = await request.post()
    values = [str(v) for v in form.getall("value", [])]
    if not values:
        raise ApiError(400, "Select at least one entry to delete.")
    params = {spec.value_field: ",".join(values)}
    if form.get("api_user"):
        params["api_user"] = str(form["api_user"])
    result = await sup.delete_entries(request, spec, params)
    text = f"Deleted {result['count']} entries."
    if result.get("warning"):
        text += f" Note: {result['warning']}."
    return redirect(request, f"lists/{slug}", text)


@no_request_timeout  # a large file may take long; the upload bounds the wait for each line instead
async def upload_blocks(request: web.Request) -> web.Response:
    """The block file upload (the page's script posts the file itself; JSON answer with bad lines)."""
    return web.json_response(await sup.upload_blocks(request))


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/lists/{kind}", list_page)
    r.add_post("/lists/{kind}/add", add)
    r.add_post("/lists/{kind}/delete", delete)
    r.add_post("/lists/blocks/upload.json", upload_blocks)
