"""The HTTP API's authentication edge: every request but the public paths carries credentials,
checked by :func:`relay.service.access.check_authorization` (the rules shared with the console)."""

from __future__ import annotations

from aiohttp import web

from relay.http.envelope import Handler
from relay.service.access import PRINCIPAL, SELF_AUTHENTICATED, SERVICES_KEY, Principal, check_authorization
from relay.service.wiring import HttpServices

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
