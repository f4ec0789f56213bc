"""The OpenAPI paths of sending over HTTP (``POST /v1/mail/send``, ``/send_mime``) and of the event
webhooks (``/v1/webhooks``), part of the document ``relay/http/openapi.py`` serves."""

from __future__ import annotations

from relay.http.openapi_schema import (
    _ACCOUNT,
    _INT,
    _NINT,
    _NSTR,
    _STR,
    _TIME,
    J,
    _body,
    _list_of,
    _obj,
    _q,
    _ref,
    _resp,
)


def _send_paths(paths: J) -> None:
    """``POST /v1/mail/send`` and ``/v1/mail/send_mime`` (``send.py``, ``send_body.py``)."""
    from relay.http import send_body as sb

    addr: J = {"type": "string", "minLength": 3, "maxLength": 998,
               "description": "addr, Name <addr> or \"Name\" <addr>; no CR/LF"}

    def addrs(n: int, desc: str, min_items: int = 0) -> J:
        return {"type": "array", "items": addr, "minItems": min_items, "maxItems": n, "description": desc}

    rid: J = {"type": "string", "minLength": 1, "maxLength": sb.MAX_REQUEST_ID,
              "description": "a retry with the same request_id (same API_USER, within 24 h) answers the first "
                             "answer without sending again"}
    label: J = {"label_id": {"type": ["string", "integer"], "description": "a label of your account (/v1/labels)"},
                "label_name": {"type": "string", "maxLength": 255, "description": "the label (X-Label) to record"}}
    attachment = {"type": "object", "additionalProperties": False, "required": ["content", "filename"],
                  "properties": {"content": {"type": "string", "description": "base64"},
                                 "filename": {"type": "string", "minLength": 1, "maxLength": 255},
                                 "type": {"type": "string", "description": "MIME type; default from the file name"},
                                 "disposition": {"type": "string", "enum": ["attachment", "inline"]},
                                 "content_id": {"type": "string", "description": "inline: cid: of the html"}}}
    flags = {k: {"type": "boolean"} for k in sorted(sb.SETTINGS_KEYS - {"send_mode"})}
    body = {"type": "object", "additionalProperties": False, "required": ["subject", "content"], "properties": {
        "cc": addrs(sb.MAX_COPIES, "send_mode 1 only"), "bcc": addrs(sb.MAX_COPIES, "send_mode 1 only"),
        "reply_to": addrs(sb.MAX_REPLY_TO, "Reply-To"),
        "subject": {"type": "string", "minLength": 1, "maxLength": sb.MAX_SUBJECT, "description": "%var% allowed"},
        "content": {"type": "object", "additionalProperties": False, "properties": {
            "html": _STR, "text": _STR,
            "preview_text": {"type": "string", "maxLength": 1000, "description": "hidden preheader of the html"}},
            "description": "html or text (both: multipart/alternative)"},
        "vars": {"type": "object", "description": "name -> one value per to recipient (send_mode 1: one "
                                                  "value); %name% is replaced in subject and content",
                 "additionalProperties": {"oneOf": [_STR, {"type": "array", "items": {"type": ["string",
                                                                                              "number"]}}]}},
        **label,
        "headers": {"type": "object", "additionalProperties": _STR, "description": "at most 1 KB; not From, To, "
                                                                                 "Cc, Subject, Content-*..."},
        "attachments": {"type": "array", "items": attachment, "description": "10 MB in all"},
        "settings": {"type": "object", "additionalProperties": False, "properties": {
            "send_mode": {"type": "integer", "enum": [0, 1], "default": 0,
                          "description": "0: a message per to recipient; 1: one message to to, cc and bcc"},
            **flags}, "description": "open_tracking, click_tracking, unsubscribe_tracking: false turns the "
                                     "feature off for this mail, true needs it on for the account (else 400); "
                                     "sandbox: false or absent (not supported); return_email_id: ids are "
                                     "always answered"}}}
    answer = _obj({
        "email_ids": {"type": "array", "items": _STR, "description": "MESSAGE_ID$recipient, per accepted recipient"},
        "request_id": _NSTR,
        "refused": {"type": "array", "items": _obj({
            "email": _STR, "email_id": _NSTR, "sub_status": _NINT,
            "reason": {"type": "string", "description": "the suppression chain's reason, as over SMTP"}})}})
    cargs: J = {"type": "object", "description": "your own fields (at most 1 KB of JSON, 5 levels): stored with "
                                               "the message, carried by its webhook events"}
    errors = ("409", "413", "415", "503")
    paths["/v1/mail/send"] = {"post": {
        "summary": "send mail (EngageLab's body): through the same checks, spool and delivery as SMTP",
        "requestBody": _body({"type": "object", "required": ["from", "to", "body"], "properties": {
            "from": addr, "to": addrs(sb.MAX_TO, "recipients", 1), "body": body,
            "custom_args": cargs, "request_id": rid}}),
        "responses": _resp(answer, extra=errors)}}
    paths["/v1/mail/send_mime"] = {"post": {
        "summary": "send a ready RFC 5322 message to the given envelope (same path as SMTP)",
        "requestBody": _body({"type": "object", "required": ["from", "to", "mime"], "properties": {
            "from": {**addr, "description": "the envelope sender (MAIL FROM)"},
            "to": addrs(sb.MAX_TO, "the envelope recipients (RCPT TO)", 1),
            "mime": {"type": "string", "minLength": 1, "description": "the message: base64, or text"},
            "mime_encoding": {"type": "string", "enum": ["base64", "text"], "default": "base64"},
            **label, "custom_args": cargs, "request_id": rid}}),
        "responses": _resp(answer, extra=errors)}}
_WEBHOOK_EVENTS = ["target", "delivered", "deferred", "soft_bounce", "invalid", "report", "unsubscribe", "open",
                   "click"]
_WEBHOOK: J = {
    "id": _INT, "account": _STR, "url": _STR,
    "events": {"type": "array", "items": {"type": "string", "enum": _WEBHOOK_EVENTS}},
    "batch": {"type": "integer", "description": "events per POST (1: one JSON object, EngageLab's form)"},
    "signature": {"type": "string", "enum": ["body", "engagelab"],
                  "description": "X-WebHook-Signature: HMAC-SHA256 of the timestamp and the body (body) or of "
                                 "the timestamp only (engagelab, as EngageLab documents)"},
    "state": {"type": "string", "enum": ["active", "failing", "backing off", "disabled"]},
    "create_time": _TIME, "pending": {"type": "integer", "description": "events in the outbox"},
    "sent": {"type": "integer", "description": "events acknowledged"},
    "failures": {"type": "integer", "description": "consecutive failed POSTs"}, "failing_since": _TIME,
    "last_error": _NSTR, "last_attempt_time": _TIME, "last_success_time": _TIME,
    "retry_time": {**_TIME, "description": "no POST before this time (back-off)"},
    "disabled_time": _TIME, "disabled_reason": _NSTR}
_WEBHOOK_ATTEMPT = _obj({"time": _TIME, "events": _INT, "http_status": _NINT, "error": _NSTR,
                         "duration_ms": _INT, "ok": {"type": "boolean"}})


def _webhooks(paths: J) -> None:
    one = [{"name": "webhook_id", "in": "path", "required": True, "schema": {"type": "string",
                                                                             "pattern": "^[0-9]{1,18}$"}}, _ACCOUNT]
    names = ", ".join(_WEBHOOK_EVENTS)
    body = {"type": "object", "required": ["url"], "properties": {
        "url": {"type": "string", "maxLength": 2000, "description": "http:// or https:// URL the events are POSTed to"},
        "events": {"oneOf": [_STR, {"type": "array", "items": _STR, "maxItems": 20}],
                   "description": f"{names} (complaint = report; target = a recipient accepted); names "
                                  "separated by , or ;; default: all but target"},
        "batch": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1,
                  "description": "events per POST: 1 one JSON object, N > 1 a JSON array"},
        "secret": {"type": "string", "minLength": 16, "maxLength": 200, "description": "default: generated"},
        "signature": {"type": "string", "enum": ["body", "engagelab"], "default": "body"}}}
    paths["/v1/webhooks"] = {
        "get": {"summary": "event webhooks: customers their account's, operators every account's (or account=)",
                "parameters": [_ACCOUNT, _q("api_user", "the account of this API_USER (EngageLab's name)", _STR),
                               _q("offset", "start position", {"type": "integer", "minimum": 0, "default": 0}),
                               _q("limit", "page size (0: only total)",
                                  {"type": "integer", "minimum": 0, "maximum": 100, "default": 100})],
                "responses": _resp(_list_of(_obj(_WEBHOOK)))},
        "post": {"summary": "add an event webhook (the secret is answered only here)", "parameters": [_ACCOUNT],
                 "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
                 "responses": _resp(_obj({**_WEBHOOK, "secret": _STR}), code="201", extra=("404", "415"))}}
    paths["/v1/webhooks/{webhook_id}"] = {
        "get": {"summary": "one webhook with its last delivery attempts, newest first",
                "parameters": [*one, _q("attempts", "how many attempts (default 20)",
                                        {"type": "integer", "minimum": 0, "maximum": 100, "default": 20})],
                "responses": _resp(_obj({**_WEBHOOK, "attempts": {"type": "array", "items": _WEBHOOK_ATTEMPT}}),
                                   extra=("404",))},
        "delete": {"summary": "remove a webhook and its pending events", "parameters": one,
                   "responses": _resp(_ref("Count"), extra=("404",))}}
    paths["/v1/webhooks/{webhook_id}/enable"] = {"post": {
        "summary": "enable a disabled webhook again (the events kept while it was disabled are sent)",
        "parameters": one, "responses": _resp(_obj(_WEBHOOK), extra=("404",))}}
