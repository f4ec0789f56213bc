"""Operations endpoints: ``/healthz`` (the process answers), ``/readyz`` (it can take mail),
``/metrics`` (Prometheus text). Plain text, not the JSON envelope: that is what probes and
scrapers read. ``/healthz`` and ``/readyz`` need no credentials; ``/metrics`` needs the admin
token unless ``[http] metrics_auth`` makes it public (``auth.py`` decides).
"""

from __future__ import annotations

from aiohttp import web

from relay.http.auth import PRINCIPAL, SERVICES_KEY, require_admin
from relay.http.envelope import ApiError


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    check = request.app[SERVICES_KEY].readiness
    problems = await check() if check is not None else []
    if problems:
        return web.Response(status=503, text="not ready\n" + "".join(f"{p}\n" for p in problems))
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    if PRINCIPAL in request:  # authenticated: only operators may read it
        require_admin(request)
    if services.metrics is None:
        raise ApiError(404, "metrics are not served by this process")
    body = await services.metrics.render()
    return web.Response(body=body, headers={"Content-Type": services.metrics.content_type})
