"""The HTTP API's authentication edge: every request but the public paths carries credentials,
checked by :func:`relay.service.access.check_authorization` (the rules shared with the console)."""

from __future__ import annotations

from aiohttp import web

from relay.http.envelope import Handler
from relay.service.access import (
    EXPORT_LIMITER_KEY,
    PRINCIPAL,
    SEARCH_LIMITER_KEY,
    SELF_AUTHENTICATED,
    SERVICES_KEY,
    Principal,
    RateLimiter,
    check_authorization,
    principal,
    require_admin,
    scope_account,
)
from relay.service.wiring import HttpServices

# kept importable from here for code written before they moved to relay.service.access
__all__ = ["EXPORT_LIMITER_KEY", "METRICS_PATH", "PRINCIPAL", "PUBLIC_PATHS", "SEARCH_LIMITER_KEY",
           "SELF_AUTHENTICATED", "SERVICES_KEY", "Principal", "RateLimiter", "auth_middleware", "authenticate",
           "check_authorization", "principal", "require_admin", "scope_account"]

PUBLIC_PATHS = frozenset({"/openapi.json", "/healthz", "/readyz", "/"})  # "/" redirects to the console
METRICS_PATH = "/metrics"  # public or operators only, as [http] metrics_auth says


async def authenticate(request: web.Request, services: HttpServices) -> Principal:
    return await check_authorization(request.headers.get("Authorization", ""), request.remote or "unknown",
                                     services)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    services = request.app[SERVICES_KEY]
    public = request.path in PUBLIC_PATHS or (request.path == METRICS_PATH and services.metrics_public)
    apps = request.match_info.apps
    if apps and SELF_AUTHENTICATED in apps[-1]:
        public = True
    if not public and request.match_info.http_exception is None:
        request[PRINCIPAL] = await authenticate(request, services)
    return await handler(request)
