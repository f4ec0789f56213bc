"""``GET /openapi.json``: the OpenAPI 3 document of exactly what ``app.routes()`` serves.

``tests/integration/test_http_api.py`` checks that every route of the application is in this
document and that the document names no route the application lacks.
"""

from __future__ import annotations

from aiohttp import web

from relay.http.envelope import BUSINESS_CODES, ok
from relay.http.openapi_schema import (
    _ACCOUNT,
    _ERRORS,
    _EXPIRED,
    _INT,
    _NINT,
    _NSTR,
    _PLAIN_TIME,
    _RATES,
    _STR,
    _TIME,
    _ZONED_TIME,
    J,
    _body,
    _list_of,
    _obj,
    _p,
    _q,
    _ref,
    _resp,
)
from relay.http.openapi_sending import _send_paths, _webhooks

_LOG = _obj({"time": _TIME, "kind": {"type": "string", "enum": ["accepted", "policy", "attempt", "feedback"]},
             "code": _NINT, "enhanced": _NSTR, "text": _STR, "mx_host": _NSTR, "mx_ip": _NSTR,
             "duration_ms": _NINT, "rule": _NSTR})
_QUEUE: J = {
    "api_user": _STR, "domain": _STR, "status": {"type": "string", "enum": ["active", "paused", "idle"]},
    "pending": _INT, "in_rate": _RATES, "try_rate": _RATES, "out_rate": _RATES, "pause_reason": _NSTR,
    "pause_reply": _NSTR, "next_send_time": _TIME, "long_pause": {"type": "boolean"},
    "max_rate": {"type": ["number", "null"]}, "current_rate": {"type": ["number", "null"]}, "site": _NSTR,
}
_EVENT = _obj({**_LOG["properties"],
               "type": {"type": ["string", "null"], "enum": ["unsubscribe", "open", "click", None]},
               "ip": _NSTR, "user_agent": _NSTR, "link": _NSTR,
               "reason_type": {"type": ["integer", "null"], "enum": [0, 1, 2, 3, None]},
               "machine": {"type": ["boolean", "null"], "description": "an open by a mail privacy proxy"}})
SCHEMAS: J = {
    "Error": _obj({"code": {"type": "integer", "description": "EngageLab's business code (see the table in "
                                                              "info.description), else the HTTP status"},
                   "message": _STR}),
    "LogLine": _LOG,
    "Event": _EVENT,
    "AccountSettings": _obj({"account": _STR, "list_unsubscribe": {"type": "boolean"},
                             "track_opens": {"type": "boolean"}, "track_clicks": {"type": "boolean"}}),
    "ApiUserSettings": _obj({"api_user": _STR, "account": _STR, "list_unsubscribe": {"type": "boolean"},
                             "track_opens": {"type": "boolean"}, "track_clicks": {"type": "boolean"},
                             "overrides": _obj({f: {"type": ["boolean", "null"], "description": "null: inherit"}
                                                for f in ("list_unsubscribe", "track_opens", "track_clicks")})}),
    "StatusRecord": _obj({
        "email": _STR,
        "email_id": {"type": "string", "description": "per recipient: MESSAGE_ID$recipient"},
        "api_user": _STR, "status": {"type": "integer", "enum": [18, 1, 5, 4]}, "status_desc": _STR,
        "sub_status": _NINT, "sub_status_desc": _NSTR, "request_time": _TIME, "update_time": _TIME,
        "response_message": _STR,
        "message_id": {"type": "string", "description": "the message's id (queued as ...)"},
        "reason": _STR, "sender": _STR, "domain": _STR, "subject": _STR,
        "label": _NSTR, "email_type": _NSTR, "request_ip": _STR, "send_time": _TIME,
        "send_ip": _NSTR, "mx_host": _NSTR, "mx_ip": _NSTR,
        "log": {"type": "array", "items": _ref("LogLine")}, "events": {"type": "array", "items": _ref("Event")},
        "recipient": {"type": "string", "deprecated": True, "description": "= email; removed in the next release"},
        "updated_at": {**_TIME, "deprecated": True, "description": "= update_time; removed in the next release"},
    }),
    "Complaint": _obj({"email": _STR, "reason": _STR, "complaint_time": _ZONED_TIME, "expire_time": _ZONED_TIME,
                       "api_user": _STR, "expired": _EXPIRED,
                       "create_time": {**_ZONED_TIME, "deprecated": True,
                                       "description": "= complaint_time; removed in the next release"}}),
    "Block": _obj({"block_id": {"type": "integer", "description": "stable per entry (derived from its key)"},
                   "api_user": _STR, "email_or_domain": _STR, "create_time": _PLAIN_TIME,
                   "expire_time": _PLAIN_TIME, "reason": _STR, "expired": _EXPIRED}),
    "Bounce": _obj({"email": _STR, "reason": _STR, "bounce_time": _ZONED_TIME, "expire_time": _ZONED_TIME,
                    "count": _INT, "expired": _EXPIRED}),
    "Unsubscribe": _obj({"email": _STR, "api_user": _STR, "type": {"type": "integer", "enum": [0, 1, 2, 3]},
                         "unsubscribe_time": _ZONED_TIME, "expire_time": _ZONED_TIME, "reason": _STR}),
    "NoInterception": _obj({"api_user": _STR, "email_or_domain": _STR, "create_time": _PLAIN_TIME}),
    "Count": _obj({"count": _INT, "warning": _STR}, ["count"]),
    "StatsDay": _obj({
        "send_date": {"type": "string", "format": "date"}, "api_user": _NSTR, "domain": _NSTR,
        "label_id": _NINT, "label_name": _NSTR,
        "targets": {"type": "integer", "description": "requests"},
        "sent": {"type": "integer", "description": "reached the receiving server: delivered + soft_bounce"},
        "delivered": _INT, "soft_bounce": _INT, "invalid": _INT,
        "sending": {"type": "integer", "description": "not final yet"},
        "sub_status": {"type": "object", "additionalProperties": {"type": "integer"},
                       "description": "sub-status code -> count"}}),
    "Label": _obj({"label_id": _INT, "label_name": _STR, "create_time": _ZONED_TIME, "update_time": _ZONED_TIME}),
    "Queue": _obj(_QUEUE),
    "RecoveredQueue": _obj({**_QUEUE, "released": {
        "type": "integer", "description": "waiting recipients (paused or on a retry timer) made due at once"}}),
    "QueueDetail": _obj({
        "queue": _ref("Queue"),
        "messages": {"type": "array", "items": _obj({"email_id": _STR, "recipient": _STR, "attempts": _INT,
                                                     "next_attempt": _TIME, "last_reason": _NSTR})},
        "series": {"type": "array", "description": "5 s samples: [unix time, in, try, out]",
                   "items": {"type": "array", "items": {"type": "number"}}},
    }),
    "ApiUser": _obj({"api_user": _STR, "account": _STR, "active": {"type": "boolean"}, "create_time": _TIME,
                     "revoke_time": _TIME}),
    "Export": _obj({
        "id": _STR, "type": {"type": "string", "enum": ["email_status"]},
        "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed"]},
        "progress": {"type": "number", "minimum": 0, "maximum": 100}, "rows": _INT, "total_rows": _NINT,
        "create_time": _TIME, "start_time": _TIME, "end_time": _TIME,
        "download_url": {"type": ["string", "null"], "description": "set once the export succeeded"},
        "expire_time": {**_TIME, "description": "when the file is deleted (7 days after the end)"},
        "expired": {"type": "boolean"}, "file_size": _NINT, "attempts": _INT, "error": _NSTR,
        "node": {"type": ["string", "null"], "description": "the node that ran it (its file is there)"},
        "filters": {"type": "object"},
    }),
    "NewApiUser": _obj({"api_user": _STR, "account": _STR, "active": {"type": "boolean"}, "create_time": _TIME,
                        "revoke_time": _TIME, "api_key": {"type": "string", "description": "shown only once"}}),
}

_PAGING = [_q("offset", "records to skip", {"type": "integer", "minimum": 0, "maximum": 1000000, "default": 0}),
           _q("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10})]
_LIST_PAGING = [_q("offset", "records to skip", {"type": "integer", "minimum": 0, "maximum": 1000000, "default": 0}),
                _q("limit", "page size (0: only total)", {"type": "integer", "minimum": 0, "maximum": 100,
                                                          "default": 100})]
_PERIOD = [_q("start_date", "created on or after this day, YYYY-MM-DD (UTC)"),
           _q("end_date", "created on or before this day, inclusive, YYYY-MM-DD (UTC)"),
           _q("start_time", "ours: created at or after (YYYY-MM-DD or ISO date-time, UTC); not with start_date"),
           _q("end_time", "ours: created before (YYYY-MM-DD or ISO date-time, UTC); not with end_date")]
_VALUES = _obj({"email_or_domain": {"oneOf": [_STR, {"type": "array", "items": _STR, "maxItems": 1000}]}})
_API_USER_BODY = {"type": "string", "description": "one API_USER of the account, or 'all' (default)"}


def _list_ops(path: str, value_field: str, item: str, methods: tuple[str, ...], post_extra: J) -> J:
    ops: J = {}
    if "GET" in methods:
        ops["get"] = {"summary": f"list {path}", "parameters": [
            *_LIST_PAGING, _q(value_field, "only this value"), *_PERIOD,
            _q("api_user", "only the entries of exactly this scope: one API_USER of the account, or 'all'"),
            _ACCOUNT],
                      "responses": _resp(_list_of(_ref(item)))}
    if "POST" in methods:
        props: J = {value_field: {"oneOf": [_STR, {"type": "array", "items": _STR, "minItems": 1, "maxItems": 1000}]},
                    "api_user": _API_USER_BODY, "reason": _STR, **post_extra}
        ops["post"] = {"summary": f"add to {path}", "parameters": [_ACCOUNT],
                       "requestBody": _body(_obj(props, [value_field])), "responses": _resp(_ref("Count"))}
    if "DELETE" in methods:
        params = [_q(value_field, "values to delete, separated by ; or ,", required=True), _ACCOUNT]
        if value_field == "email_or_domain" or path.endswith("unsubscribes"):
            params.append(_q("api_user", "only the entries of this scope (default: every scope)"))
        ops["delete"] = {"summary": f"delete from {path}", "parameters": params, "responses": _resp(_ref("Count"))}
    return ops


def _queue_path() -> list[J]:
    return [_p("api_user"), _p("domain")]


def document() -> J:
    from relay.http.v1_suppressions import LISTS

    items = {"/v1/complaints": "Complaint", "/v1/blocks": "Block", "/v1/bounces": "Bounce",
             "/v1/unsubscribes": "Unsubscribe", "/v1/no_interceptions": "NoInterception"}
    post_extra: dict[str, J] = {
        "/v1/blocks": {"expire_time": {"type": "string", "description": "ISO date-time; default never"}},
        "/v1/unsubscribes": {"type": {"type": "integer", "enum": [0, 1, 2, 3], "default": 0}}}
    paths: J = {
        "/openapi.json": {"get": {"summary": "this document", "security": [], "responses": {"200": {
            "description": "OpenAPI 3.1 document", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        **_ops_paths(),
        "/v1/email_status": {"get": {
            "summary": "search per-recipient status records (at most 30 consecutive days per query)",
            "parameters": [
                *_LIST_PAGING,
                _q("send_date", "one day, YYYY-MM-DD (UTC); with email: that day and the 29 after it"),
                _q("start_date", "first day, YYYY-MM-DD (with end_date)"),
                _q("end_date", "last day, inclusive, YYYY-MM-DD; at most 30 days after start_date"),
                _q("email", "recipient address"),
                _q("email_ids", "message ids or per-recipient ids (MESSAGE_ID$recipient), separated by ; or , "
                                "(at most 100)"),
                _q("api_user", "only this API_USER (of your account)"), _q("domain_name", "receiving domain"),
                _q("label_id", "label"), _q("email_type", "transactional or marketing",
                                            {"type": "string", "enum": ["transactional", "marketing"]}),
                _q("status", "18 (sending), 1 (delivered), 5 (soft bounce), 4 (invalid); several separated by ; or ,"),
                _q("sub_status", "sub-status codes (401-409, 503-509) separated by ; or ,; when given, status is "
                                 "ignored"),
                _q("cursor", "next_cursor of the previous page: the page after it, by keyset (no offset)",
                   {"type": "string", "maxLength": 1024}), _ACCOUNT],
            "responses": _resp(_obj({
                "result": {"type": "array", "items": _ref("StatusRecord")}, "count": _INT, "total": _INT,
                "next_cursor": {"type": ["string", "null"],
                                "description": "pass as cursor for the next page; null on the last page"}}))}},
        "/v1/messages/{email_id}": {"get": {"summary": "every recipient of one message with send logs (a "
                                                       "MESSAGE_ID$recipient id: that recipient only)",
                                            "parameters": [_p("email_id"), _ACCOUNT],
                                            "responses": _resp(_list_of(_ref("StatusRecord")), extra=("404",))}},
    }
    for spec in LISTS:
        paths[spec.path] = _list_ops(spec.path, spec.value_field, items[spec.path], spec.methods,
                                     post_extra.get(spec.path, {}))
    base = "/v1/queues/{api_user}/{domain}"
    q_errors = ("404", "503")
    paths["/v1/queues"] = {"get": {"summary": "this node's queues",
                                   "parameters": [_q("api_user", "only this API_USER")],
                                   "responses": _resp(_list_of(_ref("Queue")), extra=("503",))}}
    paths[base] = {"get": {"summary": "one queue: rates, 5 s series, waiting messages",
                           "parameters": [*_queue_path(), _q("limit", "waiting messages to show",
                                                             {"type": "integer", "minimum": 1, "maximum": 1000})],
                           "responses": _resp(_ref("QueueDetail"), extra=q_errors)}}
    for action in ("pause", "resume", "recover"):
        paths[f"{base}/{action}"] = {"post": {"summary": f"{action} the queue", "parameters": _queue_path(),
                                              "responses": _resp(_ref("RecoveredQueue" if action == "recover"
                                                                      else "Queue"), extra=q_errors)}}
    paths[f"{base}/rate"] = {"put": {
        "summary": "set the queue's maximum rate", "parameters": _queue_path(),
        "requestBody": _body(_obj({"max_rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1000000,
                                                "description": "messages/s; 0 or null: no cap"}}, [])),
        "responses": _resp(_ref("Queue"), extra=q_errors)}}
    lists = "separated by ; or ,"
    paths["/v1/stats_day"] = {"get": {
        "summary": "delivery statistics per day, API_USER, domain and label (kept as statuses change)",
        "parameters": [
            _q("start_date", "first day, yyyy-MM-dd", required=True),
            _q("end_date", "last day, inclusive, yyyy-MM-dd; at most 3 months after start_date", required=True),
            _q("time_zone", "the days' offset from UTC in whole hours (+8, -5, +08:00); default 0",
               {"type": "string", "pattern": "^[+-]?[0-9]{1,2}(:00)?$"}),
            _q("api_users", f"only these API_USERs, {lists}"), _q("label_ids", f"only these labels, {lists}"),
            _q("domain_names", f"only these receiving domains, {lists}"),
            _q("aggregate_by", "1: one row per day over every API_USER, domain and label",
               {"type": "integer", "enum": [0, 1], "default": 0}),
            _ACCOUNT],
        "responses": _resp(_list_of(_ref("StatsDay")))}}
    label_body = _body(_obj({"label_name": {"type": "string", "minLength": 1, "maxLength": 255}}))
    paths["/v1/labels"] = {
        "get": {"summary": "the account's labels (label_id for the names mail carries in X-Label)",
                "parameters": [*_LIST_PAGING, _q("label_name", "only names containing this (any case)"),
                               _ACCOUNT],
                "responses": _resp(_list_of(_ref("Label")))},
        "post": {"summary": "create a label", "parameters": [_ACCOUNT], "requestBody": label_body,
                 "responses": _resp(_ref("Label"), extra=("409",))}}
    label_path = [{"name": "label_id", "in": "path", "required": True,
                   "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}}, _ACCOUNT]
    paths["/v1/labels/{label_id}"] = {
        "put": {"summary": "rename a label (mail already sent keeps its name)", "parameters": label_path,
                "requestBody": label_body, "responses": _resp(_ref("Label"), extra=("404", "409"))},
        "delete": {"summary": "delete a label", "parameters": label_path,
                   "responses": _resp(_ref("Count"), extra=("404",))}}
    paths["/v1/api_users"] = {
        "get": {"summary": "API users: customers see their own account's, operators every account's",
                "parameters": [_ACCOUNT],
                "responses": _resp(_list_of(_ref("ApiUser")), extra=("404",))},
        "post": {"summary": "operators: create an API user (the key is shown once)",
                 "requestBody": _body(_obj({"api_user": _STR, "account": _STR})),
                 "responses": _resp(_ref("NewApiUser"), code="201", extra=("409",))}}
    paths["/v1/api_users/{name}"] = {"delete": {"summary": "operators: revoke an API user",
                                                "parameters": [_p("name")],
                                                "responses": _resp(_ref("ApiUser"), extra=("404",))}}
    _exports(paths)
    flags = {f: {"type": "boolean"} for f in ("list_unsubscribe", "track_opens", "track_clicks")}
    paths["/v1/account/settings"] = {
        "get": {"summary": "the account's List-Unsubscribe and tracking settings", "parameters": [_ACCOUNT],
                "responses": _resp(_ref("AccountSettings"))},
        "put": {"summary": "turn List-Unsubscribe, open or click tracking on or off (fields not given stay)",
                "parameters": [_ACCOUNT],
                "requestBody": _body({**_obj(flags, []), "additionalProperties": False}),
                "responses": _resp(_ref("AccountSettings"))}}
    nflags = {f: {"type": ["boolean", "null"]} for f in flags}
    paths["/v1/api_users/{name}/settings"] = {
        "get": {"summary": "what applies to one API_USER's mail, and its overrides of the account's settings",
                "parameters": [_p("name")], "responses": _resp(_ref("ApiUserSettings"), extra=("404",))},
        "put": {"summary": "override List-Unsubscribe, open or click tracking for one API_USER (true/false), "
                           "or inherit the account's again (null); fields not given stay",
                "parameters": [_p("name")],
                "requestBody": _body({**_obj(nflags, []), "additionalProperties": False}),
                "responses": _resp(_ref("ApiUserSettings"), extra=("404",))}}
    _send_paths(paths)
    _webhooks(paths)
    _rules(paths)
    paths["/v1/blocks/upload"] = {"post": {
        "summary": "bulk-add blocks from a CSV or one-value-per-line body (streamed; bad lines reported)",
        "description": "Lines: value | value,api_user | value,api_user,expire_time (ISO date or date-time, UTC; "
                       "empty: never). An optional header row, blank lines and # comments are skipped.",
        "parameters": [_q("api_user", "scope of lines that name none: one API_USER of the account or 'all'"),
                       _ACCOUNT],
        "requestBody": {"required": True, "content": {m: {"schema": {"type": "string"}}
                                                      for m in ("text/csv", "text/plain")}},
        "responses": _resp(_obj({"imported": _INT, "more_errors": _INT, "errors": {"type": "array", "items": _obj(
            {"line": _INT, "message": _STR})}}), extra=("408", "413", "415"))}}
    _document_unknown_account(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "mailrelay data API", "version": "1",
                 "description": _DESCRIPTION, "x-error-codes": _error_codes()},
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "basic": {"type": "http", "scheme": "basic", "description": "api_user:api_key"},
            "admin": {"type": "http", "scheme": "bearer", "description": "the operators' admin token"}}},
        "security": [{"basic": []}, {"admin": []}],
        "paths": paths,
    }


def _text(description: str) -> J:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _ops_paths() -> J:
    return {
        "/healthz": {"get": {"summary": "liveness: the process answers", "security": [],
                             "responses": {"200": _text("ok")}}},
        "/readyz": {"get": {"summary": "readiness: the database answers and the spool directory takes a file",
                            "security": [],
                            "responses": {"200": _text("ready"),
                                          "503": _text("not ready: one line per failed probe with the reason")}}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (text exposition format)",
            "description": "Public when [http] metrics_auth is 'none', or 'auto' (the default) on a loopback "
                           "listener; otherwise the operators' bearer token.",
            "security": [{}, {"admin": []}],
            "responses": {"200": _text("the metrics in the Prometheus text format"),
                          **{c: _ERRORS[c] for c in ("401", "403", "404")}}}},
    }


_LIST_FILTER = {"oneOf": [_STR, {"type": "array", "maxItems": 1000, "items": {"type": ["string", "integer"]}}]}
_EXPORT_BODY = {
    "type": "object", "additionalProperties": False,
    "description": "the filters of GET /v1/email_status, without the 30-day cap (no dates: all time)",
    "properties": {
        "send_date": _STR, "start_date": _STR, "end_date": _STR, "email": _STR, "email_ids": _LIST_FILTER,
        "api_user": _STR, "domain_name": _STR, "label_id": _STR,
        "email_type": {"type": "string", "enum": ["transactional", "marketing"]},
        "status": _LIST_FILTER, "sub_status": _LIST_FILTER}}


def _exports(paths: J) -> None:
    task = [_p("export_id"), _ACCOUNT]
    paths["/v1/exports"] = {
        "post": {"summary": "queue an offline export of status records (CSV.gz)", "parameters": [_ACCOUNT],
                 "requestBody": {"required": False, "content": {"application/json": {"schema": _EXPORT_BODY}}},
                 "responses": _resp(_ref("Export"), code="201", extra=("404", "503"))},
        "get": {"summary": "the account's exports, newest first", "parameters": [*_PAGING, _ACCOUNT],
                "responses": _resp(_list_of(_ref("Export")), extra=("404",))}}
    paths["/v1/exports/{export_id}"] = {"get": {"summary": "one export: status, progress, download link",
                                                "parameters": task,
                                                "responses": _resp(_ref("Export"), extra=("404",))}}
    paths["/v1/exports/{export_id}/download"] = {"get": {
        "summary": "the export's CSV.gz (kept 7 days after it finished; then 410)", "parameters": task,
        "responses": {**_resp({"type": "string"}, extra=("404", "409", "410", "503")),
                      "200": {"description": "the file", "content": {"application/gzip": {
                          "schema": {"type": "string", "format": "binary"}}}}}}}
    paths["/v1/exports/{export_id}/retry"] = {"post": {
        "summary": "queue a failed export again", "parameters": task,
        "responses": _resp(_ref("Export"), extra=("404", "409", "503"))}}


def _rules(paths: J) -> None:
    item = _obj({"source": {"type": "string", "enum": ["delivery", "feedback"]},
                 "text": {"type": "string", "description": "normalised: <addr> any address, # any number or id"},
                 "count": _INT, "first_seen": _TIME, "last_seen": _TIME,
                 "email_ids": {"type": "array", "items": _STR, "description": "a few example messages"},
                 "sample": {"type": "string", "description": "the newest reply as received"},
                 "rule": {"type": "string", "description": "the fallback rule that decided it"},
                 "code": _NINT, "enhanced": _NSTR})
    paths["/v1/rules/unclassified"] = {"get": {
        "summary": "operators: delivery replies and bounces no phrase rule recognised, most frequent first",
        "parameters": [_q("source", "only replies (delivery) or bounces (feedback)",
                          {"type": "string", "enum": ["delivery", "feedback"]}),
                       _q("limit", "at most this many texts", {"type": "integer", "minimum": 1, "maximum": 1000,
                                                                "default": 100})],
        "responses": _resp(_list_of(item))}}


def _document_unknown_account(paths: J) -> None:
    """An operator's ``account=NAME`` that names no account is a 404 on every operation that takes it."""
    for ops in paths.values():
        for op in ops.values():
            if any(p is _ACCOUNT for p in op.get("parameters", ())) and "404" not in op["responses"]:
                op["responses"]["404"] = _ERRORS["404"]


def _error_codes() -> list[J]:
    """The business codes of error bodies, from the one table in ``envelope.py``."""
    return [{"http_status": status, "code": code, "meaning": _ERRORS[str(status)]["description"]}
            for status, code in sorted(BUSINESS_CODES.items())]


_DESCRIPTION = (
    "EngageLab-compatible status and suppression endpoints, plus queues, API users and exports.\n\n"
    "Errors: {\"code\": n, \"message\": \"...\"}. code is EngageLab's business code where its documentation "
    "gives one, else the HTTP status:\n\n"
    "| HTTP status | code | meaning |\n|---|---|---|\n"
    + "".join(f"| {status} | {code} | {_ERRORS[str(status)]['description']} |\n"
              for status, code in sorted(BUSINESS_CODES.items()))
    + "| any other 4xx/5xx | the HTTP status | the message says what is wrong |\n\n"
    "An unknown query parameter or body field is a 400 that names it. A per-recipient email_id is "
    "MESSAGE_ID$recipient; filters accept it and plain message ids.")

_DOC: J | None = None


async def serve(request: web.Request) -> web.Response:
    global _DOC
    if _DOC is None:
        _DOC = document()
    return ok(_DOC)
