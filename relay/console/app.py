"""The console: server-rendered pages mounted on the HTTP API's aiohttp application.

``attach(api_app, key)`` adds a sub-application at ``/console/`` and a redirect from ``/``. Pages
are Jinja2 templates (autoescaped) with a little plain JavaScript (the queue chart, the block
file upload); the chart library (uPlot) is vendored under ``static/vendor`` and served by us.

There is no second implementation of any query or rule: handlers call the services the HTTP API
calls (``relay.service``: tenant rules, validation, status filter and cursor, exports, queues,
lists) with the signed-in principal; the messages of their errors are shown as they are. The
console never imports the HTTP API package (``relay.http``), nor it the console (import-linter).

Middleware (:func:`console_middleware`): the session cookie becomes the request's principal
(the API's ``Principal``; a revoked API_USER ends the session at the next request), every POST
must carry the session's CSRF token, and API errors become an HTML page (JSON for the chart's
data endpoint) that says what went wrong.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web

from relay.console import session as sess
from relay.service.access import PRINCIPAL, SELF_AUTHENTICATED, SERVICES_KEY, Principal, check_authorization
from relay.service.errors import ApiError
from relay.service.wiring import HttpServices
from storage.errors import StorageError

log = logging.getLogger("mailrelay.console")

PREFIX = "/console/"
SESSION_LIFETIME = 8 * 3600  # seconds; then sign in again
STATIC_MAX_AGE = 7 * 86400  # vendored files change only with a release
KEY_KEY: web.AppKey[bytes] = web.AppKey("console_key", bytes)
SESSION: web.RequestKey[sess.Session] = web.RequestKey("console_session", sess.Session)
FLASH: web.RequestKey[str] = web.RequestKey("console_flash", str)  # the notice of the last action
_PRE_COOKIE = "mailrelay_console_pre"  # the sign-in form's CSRF token (there is no session yet)
_FLASH_COOKIE = "mailrelay_console_flash"
_OPEN = frozenset({"signin", "static"})  # route names reachable without a session

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def services(request: web.Request) -> HttpServices:
    return request.app[SERVICES_KEY]


def account_param(request: web.Request) -> str | None:
    """The account an operator picked (``?account=NAME``, carried by every link); customers: None."""
    p = request.get(PRINCIPAL)
    return request.query.get("account") or None if p is not None and p.admin else None


def url(request: web.Request, path: str, **params: Any) -> str:
    """A console URL carrying the operator's chosen account."""
    q = {k: v for k, v in params.items() if v not in (None, "")}
    acct = account_param(request)
    if acct and "account" not in q:
        q["account"] = acct
    return PREFIX + path + ("?" + urlencode(q, doseq=True) if q else "")


def render(request: web.Request, template: str, ctx: dict[str, Any], status: int = 200) -> web.Response:
    p = request.get(PRINCIPAL)
    s = request.get(SESSION)
    base = {
        "principal": p, "csrf": s.csrf if s else "", "account": account_param(request),
        "u": lambda path, **kw: url(request, path, **kw), "flash": request.get(FLASH),
        "page": template.removesuffix(".html"), "quote": quote,
        "static": lambda name: str(request.app.router["static"].url_for(filename=name)),
    }
    resp = aiohttp_jinja2.render_template(template, request, {**base, **ctx}, status=status)
    resp.headers["Cache-Control"] = "no-store"
    if request.get(FLASH) is not None:
        resp.del_cookie(_FLASH_COOKIE, path=PREFIX)
    return resp


def when(value: str | datetime | None) -> str:
    """A time as people read it (UTC, to the second); the API's ISO 8601 strings or datetimes."""
    if not value:
        return "—"
    try:
        t = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    except ValueError:
        return str(value)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if t.tzinfo else t.strftime("%Y-%m-%d %H:%M:%S")


def see_other(location: str) -> web.Response:
    """A 303 to ``location`` (returned, not raised, so cookies can be set on it)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def redirect(request: web.Request, path: str, flash: str | None = None, **params: Any) -> web.Response:
    resp = see_other(url(request, path, **params))
    if flash:
        resp.set_cookie(_FLASH_COOKIE, sess.sign_text(request.app[KEY_KEY], flash[:500]), path=PREFIX,
                        max_age=60, httponly=True, samesite="Strict", secure=request.secure)
    return resp


async def _principal_of(request: web.Request, s: sess.Session) -> Principal | None:
    """Who the session is now (None: it has ended — key revoked, user removed, token changed)."""
    svc = services(request)
    if s.api_user is None:
        token = svc.admin_token
        ok = bool(token) and sess.token_digest(token) == s.token_digest
        return Principal(admin=True, account_id=None, account_name=None, api_user=None) if ok else None
    user = await svc.storage.accounts.get_api_user(s.api_user)
    if user is None or user.revoked_at is not None or not sess.hmac_equal(sess.token_digest(user.key_hash),
                                                                          s.token_digest):
        return None
    return Principal(admin=False, account_id=user.account_id, account_name=user.account_name, api_user=user.name)


def _wants_json(request: web.Request) -> bool:
    return request.path.endswith(".json") or request.headers.get("Accept", "").startswith("application/json")


async def _check_csrf(request: web.Request, expected: str) -> None:
    given = request.headers.get("X-CSRF-Token")
    if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        given = str((await request.post()).get("csrf", ""))
    if not given or not sess.hmac_equal(given, expected):
        raise ApiError(403, "this form has expired or did not come from this console (no valid CSRF token); "
                            "reload the page and try again")


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        route = request.match_info.route.name or ""
        if route in _OPEN:
            if request.method == "POST":
                await _check_csrf(request, request.cookies.get(_PRE_COOKIE, ""))
            return await handler(request)
        s = sess.verify(request.app[KEY_KEY], request.cookies.get(sess.COOKIE), time.time())
        p = await _principal_of(request, s) if s is not None else None
        if s is None or p is None:
            if _wants_json(request) or request.method != "GET":
                raise ApiError(401, "you are signed out (the session ended); sign in again")
            ended = sess.COOKIE in request.cookies  # there was a session: say why the sign-in page is back
            resp = see_other(PREFIX + "signin?" + urlencode({"next": request.path_qs[:500],
                                                            **({"why": "ended"} if ended else {})}))
            resp.del_cookie(sess.COOKIE, path=PREFIX)
            return resp
        request[SESSION] = s
        request[PRINCIPAL] = p
        if request.method == "POST":
            await _check_csrf(request, s.csrf)
        flash = request.cookies.get(_FLASH_COOKIE)
        notice = sess.verify_text(request.app[KEY_KEY], flash) if flash else None
        if notice is not None:
            request[FLASH] = notice
        return await handler(request)
    except ApiError as e:
        return _problem(request, e.status, e.message)
    except web.HTTPNotFound:
        return render(request, "error.html", {"status": 404, "message": "There is no such page in the console."},
                      status=404)
    except StorageError as e:  # the database went away: say so, the person may retry
        log.error(f"storage error: {e}", extra={"event": "console_storage_error", "path": request.path})
        return _problem(request, 503, "The database is unavailable right now; try again in a few seconds.")
    except (web.HTTPException, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("console handler failed", extra={"event": "console_error", "path": request.path})
        return _problem(request, 500, "Something went wrong on the server; the error was logged. Try again, or "
                                      "tell the operator the time it happened.")


def _problem(request: web.Request, status: int, message: str) -> web.Response:
    if _wants_json(request):
        return web.json_response({"code": status, "message": message}, status=status)
    return render(request, "error.html", {"status": status, "message": message}, status=status)


# --- sign-in and sign-out ------------------------------------------------------------------------

def _safe_next(raw: str | None) -> str:
    """Only a path of this console (never another site)."""
    if raw and raw.startswith(PREFIX) and "//" not in raw and "\\" not in raw and len(raw) <= 500:
        return raw
    return PREFIX + "status"


async def signin_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    pre = request.cookies.get(_PRE_COOKIE) or secrets.token_urlsafe(24)
    resp = render(request, "signin.html", {
        "pre_csrf": pre, "error": error,
        "why": "Your session has ended; sign in again." if request.query.get("why") == "ended" else "",
        "next": _safe_next(request.query.get("next")), "has_admin": bool(services(request).admin_token)},
        status=status)
    resp.set_cookie(_PRE_COOKIE, pre, path=PREFIX, httponly=True, samesite="Strict", secure=request.secure)
    return resp


async def signin(request: web.Request) -> web.StreamResponse:
    if request.method == "GET":
        return await signin_page(request)
    form = await request.post()
    api_user = str(form.get("api_user", "")).strip()
    key = str(form.get("api_key", ""))
    token = str(form.get("admin_token", ""))
    if token:
        header = f"Bearer {token}"
    elif api_user and key:
        header = "Basic " + base64.b64encode(f"{api_user}:{key}".encode()).decode()
    else:
        return await signin_page(request, "Enter an API_USER and its API key, or the operator's admin token.", 400)
    svc = services(request)
    try:  # the API's own check: the same keys and the same failure throttle as SMTP AUTH
        p = await check_authorization(header, request.remote or "unknown", svc)
    except ApiError as e:
        message = e.message if e.status != 401 else (
            "Sign-in failed: that API_USER and key do not match (or the key was revoked)." if not token
            else "Sign-in failed: that is not the operator's admin token.")
        return await signin_page(request, message, e.status)
    if p.api_user is None:
        credential = svc.admin_token
    else:
        user = await svc.storage.accounts.get_api_user(p.api_user)
        credential = user.key_hash if user is not None else ""
    s = sess.new_session(p.api_user, SESSION_LIFETIME, time.time(), credential)
    resp = see_other(_safe_next(str(form.get("next", ""))))
    resp.set_cookie(sess.COOKIE, sess.sign(request.app[KEY_KEY], s), path=PREFIX, max_age=SESSION_LIFETIME,
                    httponly=True, samesite="Strict", secure=request.secure)
    resp.del_cookie(_PRE_COOKIE, path=PREFIX)
    log.info(f"console sign-in: {p.api_user or 'operator'}", extra={"event": "console_signin"})
    return resp


async def signout(request: web.Request) -> web.StreamResponse:
    resp = see_other(PREFIX + "signin")
    resp.del_cookie(sess.COOKIE, path=PREFIX)
    return resp


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(url(request, "status"))


async def root_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(PREFIX)


@web.middleware
async def _static_cache(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    if request.path.startswith(PREFIX + "static/") and resp.status == 200:
        resp.headers["Cache-Control"] = f"public, max-age={STATIC_MAX_AGE}"
    return resp


def create_console(api_app: web.Application, key: bytes) -> web.Application:
    from relay.console import lists, pages, queue_pages  # the page modules import helpers from here

    console = web.Application(middlewares=[_static_cache, console_middleware])
    for app_key in (SERVICES_KEY, *pages.SHARED_KEYS):
        console[app_key] = api_app[app_key]  # type: ignore[misc]
    console[KEY_KEY] = key
    console[SELF_AUTHENTICATED] = True
    env = aiohttp_jinja2.setup(console, loader=jinja2.PackageLoader("relay.console", "templates"),
                               autoescape=True)
    env.filters["when"] = when
    r = console.router
    r.add_get("/", home)
    r.add_route("*", "/signin", signin, name="signin")
    r.add_post("/signout", signout)
    pages.add_routes(r)
    queue_pages.add_routes(r)
    lists.add_routes(r)
    r.add_static("/static/", Path(__file__).parent / "static", name="static", append_version=True)
    return console


def attach(api_app: web.Application, key: bytes) -> None:
    """Mount the console on the API application (before it starts)."""
    console = create_console(api_app, key)
    api_app.router.add_get("/", root_redirect)
    api_app.add_subapp(PREFIX.rstrip("/"), console)
