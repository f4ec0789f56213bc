"""Every request is held to the OpenAPI document (``openapi.py``) before its handler runs.

A query parameter the operation does not document is a 400 that names it, and so is a top-level
field of a JSON body (``envelope.json_body`` checks it against the fields given here): a client
that misspells a name, or sends one of another API, learns it at once instead of getting an
answer that silently ignored it. The document is the one list of names, so what is served and
what is documented cannot drift apart. Routes the document does not describe are not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from relay.http import openapi
from relay.http.envelope import BODY_FIELDS, ApiError, Handler


@dataclass(frozen=True, slots=True)
class Operation:
    query: frozenset[str]
    body: frozenset[str] | None  # None: no JSON object body with named fields


Contract = dict[tuple[str, str], Operation]
CONTRACT_KEY: web.AppKey[Contract] = web.AppKey("contract", dict)


def build(document: dict[str, Any] | None = None) -> Contract:
    doc = document if document is not None else openapi.document()
    out: Contract = {}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            query = frozenset(p["name"] for p in op.get("parameters", ()) if p["in"] == "query")
            schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            props = schema.get("properties")
            out[(method.upper(), path)] = Operation(query, frozenset(props) if props is not None else None)
    return out


def _names(names: frozenset[str]) -> str:
    return ", ".join(sorted(names)) or "none"


@web.middleware
async def contract_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    op = request.app[CONTRACT_KEY].get((request.method, resource.canonical)) if resource is not None else None
    if op is not None and resource is not None:
        unknown = [k for k in dict.fromkeys(request.query) if k not in op.query]
        if unknown:
            # an undecodable byte in the name must not make the answer itself unencodable
            name = unknown[0][:40].encode("utf-8", "backslashreplace").decode("utf-8")
            raise ApiError(400, f"{name}: unknown parameter of {request.method} {resource.canonical} "
                                f"(it takes: {_names(op.query)})")
        request[BODY_FIELDS] = op.body
    return await handler(request)
