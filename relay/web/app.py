"""Routes of the recipient-facing listener.

- ``GET /u/TOKEN``: the unsubscribe page (reason types 0-3, confirm button);
- ``POST /u/TOKEN``: ``List-Unsubscribe=One-Click`` (RFC 8058, from the mailbox provider) or the
  page's form (reason + nonce): the recipient goes on the account's unsubscribe list at once; 200;
- ``GET /o/TOKEN``: 1x1 GIF, not cacheable; records an open;
- ``GET /c/TOKEN``: 302 to the link signed into the token; records a click.

Anything else, and any token that is malformed, forged, expired or of another kind: 404 and
nothing is recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from relay import tokens
from relay.config import WebConfig, parse_duration, parse_hostport
from relay.engagement import Engagement
from relay.tokens import LinkKind, LinkToken
from relay.web.machine import is_machine_open
from relay.web.page import done_page, form_nonce, landing_page, nonce_ok
from storage.records import EventType, RecipientEvent, UnsubscribeReason

log = logging.getLogger("mailrelay.web")

GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
       b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
_NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache",
             "Expires": "0"}
_REDIRECT = {**_NO_CACHE, "Referrer-Policy": "no-referrer"}
_HTML = "text/html; charset=utf-8"
_MAX_BODY = 4096
_MAX_UA = 512


@dataclass
class WebServices:
    secrets: Sequence[bytes]
    max_age: float  # seconds
    engagement: Engagement
    clock: Callable[[], float] = field(default=time.time)


SERVICES = web.AppKey("web_services", WebServices)


def _not_found() -> web.Response:
    return web.Response(status=404, text="not found\n", headers=_NO_CACHE)


def _token(request: web.Request, kind: LinkKind) -> LinkToken | None:
    s = request.app[SERVICES]
    return tokens.decode(request.match_info["token"], s.secrets, kind, now=s.clock(), max_age=s.max_age)


def _client(request: web.Request) -> tuple[str, str]:
    return request.remote or "", request.headers.get("User-Agent", "")[:_MAX_UA]


async def unsubscribe_page(request: web.Request) -> web.Response:
    tok = _token(request, LinkKind.UNSUBSCRIBE)
    if tok is None:
        return _not_found()
    nonce = form_nonce(request.match_info["token"], request.app[SERVICES].secrets[0])
    return web.Response(text=landing_page(tok.recipient, nonce), content_type="text/html", charset="utf-8",
                        headers={**_NO_CACHE, "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                            "form-action 'self'"})


async def unsubscribe_post(request: web.Request) -> web.Response:
    tok = _token(request, LinkKind.UNSUBSCRIBE)
    if tok is None:
        return _not_found()
    s = request.app[SERVICES]
    try:
        form = await request.post()
    except (ValueError, web.HTTPException):
        return web.Response(status=400, text="bad form\n")
    one_click = form.get("List-Unsubscribe") == "One-Click"
    reason = UnsubscribeReason.NOT_WANTED
    if not one_click:
        nonce = form.get("nonce")
        if not isinstance(nonce, str) or not nonce_ok(request.match_info["token"], nonce, s.secrets):
            return web.Response(status=400, text="expected List-Unsubscribe=One-Click or the page's form\n")
        raw = form.get("reason", "0")
        if not isinstance(raw, str) or raw not in ("0", "1", "2", "3"):
            return web.Response(status=400, text="reason: 0, 1, 2 or 3\n")
        reason = UnsubscribeReason(int(raw))
    account_id = await s.engagement.account_of(tok.api_user)
    if account_id is None:  # the API user is gone: nothing to attach the entry to
        return _not_found()
    ip, ua = _client(request)
    await s.engagement.unsubscribe(account_id, tok.email_id, tok.recipient, reason, ip, ua)
    if one_click:
        return web.Response(text="unsubscribed\n", headers=_NO_CACHE)
    return web.Response(text=done_page(tok.recipient), content_type="text/html", charset="utf-8",
                        headers=_NO_CACHE)


async def open_pixel(request: web.Request) -> web.Response:
    tok = _token(request, LinkKind.OPEN)
    if tok is None:
        return _not_found()
    ip, ua = _client(request)
    request.app[SERVICES].engagement.record(tok.email_id, tok.recipient, RecipientEvent(
        EventType.OPEN, ip, ua, machine=is_machine_open(ip, ua)))
    return web.Response(body=GIF, content_type="image/gif", headers=_NO_CACHE)


async def click(request: web.Request) -> web.Response:
    tok = _token(request, LinkKind.CLICK)
    if tok is None or not tok.link.startswith(("http://", "https://")):
        return _not_found()
    ip, ua = _client(request)
    request.app[SERVICES].engagement.record(tok.email_id, tok.recipient, RecipientEvent(
        EventType.CLICK, ip, ua, link=tok.link))
    return web.Response(status=302, headers={**_REDIRECT, "Location": tok.link})


def create_app(services: WebServices) -> web.Application:
    app = web.Application(client_max_size=_MAX_BODY)
    app[SERVICES] = services
    # {token} matches one path segment; the token's own pattern is checked by tokens.decode
    handlers: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
        ("GET", "/u/{token}", unsubscribe_page), ("POST", "/u/{token}", unsubscribe_post),
        ("GET", "/o/{token}", open_pixel), ("GET", "/c/{token}", click),
    ]
    for method, path, handler in handlers:
        app.router.add_route(method, path, handler)
    return app


async def start_web(cfg: WebConfig, services: WebServices) -> web.AppRunner:
    """Serve on ``cfg.listen``; stop with ``await runner.cleanup()``."""
    host, port = parse_hostport(cfg.listen, "web.listen")
    runner = web.AppRunner(create_app(services), access_log=None, handle_signals=False,
                           keepalive_timeout=75.0, shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024, reuse_address=True).start()
    for addr in runner.addresses:
        bound = f"{addr[0]}:{addr[1]}"
        log.info(f"listening (web) on {bound}", extra={"event": "listening", "listener": "web", "address": bound})
    return runner


def services_from(cfg: WebConfig, secrets: Sequence[bytes], engagement: Engagement) -> WebServices:
    return WebServices(secrets=secrets, max_age=parse_duration(cfg.token_max_age, "web.token_max_age"),
                       engagement=engagement)
