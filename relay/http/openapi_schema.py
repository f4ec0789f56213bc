"""The building blocks of the OpenAPI document (``relay/http/openapi.py``): JSON-schema shorthands,
parameters, and the error responses every operation shares."""

from __future__ import annotations

from typing import Any

J = dict[str, Any]

_STR: J = {"type": "string"}
_NSTR: J = {"type": ["string", "null"]}
_TIME: J = {"type": ["string", "null"], "format": "date-time"}
# EngageLab's list time formats, in UTC (relay/http/times.py)
_PLAIN_TIME: J = {"type": ["string", "null"], "pattern": r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$",
                  "description": "YYYY-MM-DD HH:MM:SS, UTC"}
_ZONED_TIME: J = {"type": ["string", "null"], "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000$",
                  "description": "YYYY-MM-DDTHH:MM:SS+0000 (UTC)"}
_EXPIRED: J = {"type": "boolean", "description": "past expire_time: still listed, no longer stops mail"}
_INT: J = {"type": "integer"}
_NINT: J = {"type": ["integer", "null"]}
_RATES: J = {"type": "object", "properties": {w: {"type": "number"} for w in ("5s", "15s", "30s")},
             "required": ["5s", "15s", "30s"]}


def _obj(props: J, required: list[str] | None = None) -> J:
    return {"type": "object", "properties": props, "required": required if required is not None else list(props)}


def _ref(name: str) -> J:
    return {"$ref": f"#/components/schemas/{name}"}


def _list_of(item: J) -> J:
    return _obj({"result": {"type": "array", "items": item}, "count": _INT, "total": _INT})


def _q(name: str, desc: str, schema: J | None = None, required: bool = False) -> J:
    return {"name": name, "in": "query", "required": required, "description": desc, "schema": schema or _STR}


def _p(name: str) -> J:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


_ERRORS = {str(c): {"description": d, "content": {"application/json": {"schema": _ref("Error")}}}
           for c, d in ((400, "invalid parameter, or an unknown parameter or body field (named in the message)"),
                        (401, "authentication failed (code 30000)"), (403, "not allowed"),
                        (404, "not found"), (429, "rate limit or authentication throttle"))}


def _resp(schema: J, code: str = "200", extra: tuple[str, ...] = ()) -> J:
    out: J = {code: {"description": "success", "content": {"application/json": {"schema": schema}}}}
    # 503: any request that outlives [http] request_timeout (or finds storage unavailable)
    for c in dict.fromkeys(("400", "401", "403", "429", *extra, "503")):
        out[c] = _ERRORS.get(c, {"description": "error", "content": {"application/json": {"schema": _ref("Error")}}})
    return out


def _body(schema: J) -> J:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_ACCOUNT = _q("account", "operators only: the account name to act on (customers: their own, implied)")
