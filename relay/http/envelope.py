"""The JSON edge of the HTTP API: success envelopes, the error shape, and the error middleware.

- Lists answer ``{"result": [...], "count": n, "total": n}`` (EngageLab's shape): ``count`` is the
  length of this page, ``total`` the number of matches (capped by storage for huge results).
- Every error is ``{"code": n, "message": "..."}``; ``code`` is EngageLab's business code where its
  documentation gives one (:data:`BUSINESS_CODES`: 30000 for a failed authentication, HTTP 401),
  else the HTTP status.
- Nothing below ever answers HTML or a bare text body: unknown routes, wrong methods, oversize
  bodies and handler timeouts become the JSON error shape too. An unexpected exception is logged
  and answered 500 (a bug, never a reaction to input: every parameter is validated first).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from relay.service.errors import ApiError as ApiError  # re-exported: the API's modules raise it
from relay.service.errors import unstorable as unstorable
from relay.service.wiring import no_request_timeout as no_request_timeout  # re-exported
from storage.errors import StorageError

log = logging.getLogger("mailrelay.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# the top-level fields the operation's JSON body documents (set by ``contract.py``; None: any)
BODY_FIELDS: web.RequestKey[frozenset[str] | None] = web.RequestKey("body_fields", object)  # type: ignore[arg-type]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def ok(obj: Any, status: int = 200) -> web.Response:
    return web.json_response(obj, status=status, dumps=_dumps)


def page(items: Sequence[Any], total: int) -> web.Response:
    return ok({"result": list(items), "count": len(items), "total": total})


# HTTP status -> EngageLab's business code (the table is in the README and the OpenAPI document)
BUSINESS_CODES = {401: 30000}


def error_code(status: int) -> int:
    return BUSINESS_CODES.get(status, status)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": error_code(status), "message": message}, status=status, headers=headers,
                             dumps=_dumps)


_HTTP_MESSAGES = {
    404: "no such route",
    405: "method not allowed on this route",
    413: "request body too large",
}


def error_middleware(handler_timeout: Callable[[], float]) -> Middleware:
    """``handler_timeout`` is read per request, so a configuration reload changes it."""
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            bad = unstorable(request.path)
            if bad:
                raise ApiError(400, f"the path contains {bad}")
            exempt = getattr(request.match_info.handler, "_no_request_timeout", False)
            async with asyncio.timeout(None if exempt else handler_timeout()):
                return await handler(request)
        except ApiError as e:
            return error(e.status, e.message, e.headers)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
            return error(e.status, _HTTP_MESSAGES.get(e.status, e.reason), headers)
        except TimeoutError:
            log.warning("request timed out", extra={"event": "http_timeout", "path": request.path})
            return error(503, "the request took too long; narrow the query and try again")
        except StorageError as e:  # the database went away or refused: the caller may retry
            log.error(f"storage error: {e}", extra={"event": "http_storage_error", "path": request.path})
            return error(503, "the database is unavailable; try again shortly", {"Retry-After": "5"})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("http handler failed", extra={"event": "http_error", "path": request.path})
            return error(500, "internal error")

    return middleware


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (400 if it is not one)."""
    if request.content_type != "application/json":
        raise ApiError(415, "the body must be JSON (Content-Type: application/json)")
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    return checked_body(request, body)


def checked_body(request: web.Request, body: Any) -> dict[str, Any]:
    """A parsed body held to the contract: a JSON object with only the documented fields."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    fields = request.get(BODY_FIELDS)
    unknown = [k for k in body if fields is not None and k not in fields]
    if unknown and fields is not None:
        raise ApiError(400, f"{unknown[0][:40]}: unknown field of {request.method} {request.path} "
                            f"(it takes: {', '.join(sorted(fields)) or 'none'})")
    bad = _unstorable_anywhere(body)
    if bad:
        raise ApiError(400, f"the body contains {bad}")
    return body


def _unstorable_anywhere(value: Any) -> str | None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            bad = unstorable(v)
            if bad:
                return bad
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None
