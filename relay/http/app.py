"""The HTTP data API: ``create_app(services)`` builds it, ``start_http(cfg, services)`` serves it.

aiohttp (aio-libs, the family of aiosmtpd): a server that runs in the process's own asyncio loop
next to the SMTP listeners with no extra thread or ASGI adapter, with request body limits,
keep-alive handling and graceful shutdown built in, and a mature client for the tests.

Every response is JSON (``envelope.py``). Bodies are limited to :data:`MAX_BODY`; each request
has :attr:`HttpServices.handler_timeout` seconds. Middlewares, outermost first: errors → JSON,
then authentication (everything except ``/openapi.json``, ``/healthz``, ``/readyz`` and a public
``/metrics``), then the contract (``contract.py``: a parameter or body field the OpenAPI document
does not list is a 400).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from relay.config import HttpConfig, parse_hostport
from relay.http import (
    account_settings,
    api_users,
    contract,
    exports,
    labels,
    openapi,
    ops,
    queues,
    rules,
    send,
    stats,
    v1_email_status,
    v1_suppressions,
    webhooks,
)
from relay.http.auth import auth_middleware
from relay.http.contract import CONTRACT_KEY, contract_middleware
from relay.http.envelope import error_middleware
from relay.service.access import EXPORT_LIMITER_KEY, SEARCH_LIMITER_KEY, SERVICES_KEY, RateLimiter
from relay.service.wiring import HttpServices

log = logging.getLogger("mailrelay.http")

MAX_BODY = 1024 * 1024  # JSON bodies
MAX_LINE = 8190
MAX_FIELD = 8190

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]


def routes() -> list[Route]:
    out: list[Route] = [
        ("GET", "/openapi.json", openapi.serve),
        ("GET", "/healthz", ops.healthz),
        ("GET", "/readyz", ops.readyz),
        ("GET", "/metrics", ops.metrics),
        ("GET", "/v1/email_status", v1_email_status.email_status),
        ("GET", "/v1/messages/{email_id}", v1_email_status.message),
        ("POST", "/v1/mail/send", send.send),
        ("POST", "/v1/mail/send_mime", send.send_mime),
    ]
    out += [(m, path, h) for m, path, h, _ in v1_suppressions.routes()]
    out.append(("POST", "/v1/blocks/upload", v1_suppressions.upload_blocks))
    out += [
        ("GET", "/v1/queues", queues.list_queues),
        ("GET", "/v1/queues/{api_user}/{domain}", queues.show_queue),
        ("POST", "/v1/queues/{api_user}/{domain}/pause", queues.pause_queue),
        ("POST", "/v1/queues/{api_user}/{domain}/resume", queues.resume_queue),
        ("POST", "/v1/queues/{api_user}/{domain}/recover", queues.recover_queue),
        ("PUT", "/v1/queues/{api_user}/{domain}/rate", queues.set_rate),
        ("GET", "/v1/stats_day", stats.stats_day),
        ("GET", "/v1/labels", labels.list_labels),
        ("POST", "/v1/labels", labels.create_label),
        ("PUT", "/v1/labels/{label_id}", labels.rename_label),
        ("DELETE", "/v1/labels/{label_id}", labels.delete_label),
        ("GET", "/v1/account/settings", account_settings.get_settings),
        ("PUT", "/v1/account/settings", account_settings.put_settings),
        ("GET", "/v1/api_users", api_users.list_users),
        ("POST", "/v1/api_users", api_users.create_user),
        ("DELETE", "/v1/api_users/{name}", api_users.revoke_user),
        ("GET", "/v1/api_users/{name}/settings", account_settings.get_user_settings),
        ("PUT", "/v1/api_users/{name}/settings", account_settings.put_user_settings),
        ("POST", "/v1/exports", exports.create_export),
        ("GET", "/v1/exports", exports.list_exports),
        ("GET", "/v1/exports/{export_id}", exports.show_export),
        ("GET", "/v1/exports/{export_id}/download", exports.download_export),
        ("POST", "/v1/exports/{export_id}/retry", exports.retry_export),
        ("GET", "/v1/webhooks", webhooks.list_webhooks),
        ("POST", "/v1/webhooks", webhooks.create_webhook),
        ("GET", "/v1/webhooks/{webhook_id}", webhooks.show_webhook),
        ("DELETE", "/v1/webhooks/{webhook_id}", webhooks.delete_webhook),
        ("POST", "/v1/webhooks/{webhook_id}/enable", webhooks.enable_webhook),
        ("GET", "/v1/rules/unclassified", rules.unclassified),
    ]
    return out


def create_app(services: HttpServices) -> web.Application:
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[error_middleware(lambda: services.handler_timeout), auth_middleware, contract_middleware],
        handler_args={"max_line_size": MAX_LINE, "max_field_size": MAX_FIELD},
    )
    app[SERVICES_KEY] = services
    app[CONTRACT_KEY] = contract.build()
    app[SEARCH_LIMITER_KEY] = RateLimiter(services.search_per_minute)
    app[EXPORT_LIMITER_KEY] = RateLimiter(services.exports_per_minute)
    app.cleanup_ctx.append(send.purge_expired)
    for method, path, handler in routes():
        app.router.add_route(method, path, handler)
    return app


async def start_http(cfg: HttpConfig, services: HttpServices,
                     extend: Callable[[web.Application], None] | None = None) -> web.AppRunner:
    """Serve on ``cfg.listen`` in the running loop. Stop with ``await runner.cleanup()``.
    ``runner.addresses`` holds the bound (host, port) pairs (port 0 picks a free one). ``extend``
    adds to the application before it starts (the composition root mounts the console with it)."""
    host, port = parse_hostport(cfg.listen, "http.listen")
    app = create_app(services)
    if extend is not None:
        extend(app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           keepalive_timeout=75.0, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=512, reuse_address=True)
    await site.start()
    for addr in runner.addresses:
        bound = f"{addr[0]}:{addr[1]}"
        log.info(f"listening (http) on {bound}", extra={"event": "listening", "listener": "http", "address": bound})
    return runner
