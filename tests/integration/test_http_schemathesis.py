"""Property-based conformance of the HTTP API to its own OpenAPI document (issue #5).

Schemathesis generates requests for every operation of the live ``/openapi.json`` and checks each
response: no 5xx, a documented status code, the documented content type and a body that matches
the documented schema. Every operation runs once as a customer (HTTP Basic) and once as an
operator (the admin bearer token). Hypothesis is bounded and derandomized so CI is reproducible.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers.mx_sink import ScriptedMx
from tests.integration.conftest import RelayFactory
from tests.integration.test_http_api import ADMIN, HTTP, basic

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


def _run_operation(op: Any, base: str, headers: dict[str, str], session: requests.Session) -> None:
    @SETTINGS
    @given(case=op.as_strategy())
    def check(case: Any) -> None:
        case.call_and_validate(base_url=base, session=session, headers=headers, checks=CHECKS, timeout=30)

    check()


def _run_all(doc: dict[str, Any], base: str, auths: dict[str, dict[str, str]]) -> list[str]:
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[str] = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            op = result.ok()
            for who, headers in auths.items():
                try:
                    _run_operation(op, base, headers, session)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as e:  # schemathesis reports its findings as an exception group
                    failures.append(f"--- {op.method.upper()} {op.path} as {who}\n{e}")
    return failures


@pytest.mark.timeout(180)
async def test_openapi_conformance(relay_factory: RelayFactory, sink: ScriptedMx) -> None:
    # delivery on, so the queue endpoints answer rather than 503 "delivery is not enabled"
    relay = await relay_factory({**HTTP, "delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{sink.port}",
                                 "delivery.ehlo_name": "relay.test"})
    assert relay.app.http is not None
    host, port = relay.app.http.addresses[0][:2]
    base = f"http://{host}:{port}"
    async with aiohttp.ClientSession() as s, s.get(base + "/openapi.json") as r:
        assert r.status == 200
        doc = await r.json()
    auths = {"customer": basic(relay.api_user, relay.key), "operator": ADMIN}
    failures = await asyncio.to_thread(_run_all, doc, base, auths)
    assert not failures, "\n".join(failures)
