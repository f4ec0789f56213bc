"""The body of ``POST /v1/mail/send`` and ``/v1/mail/send_mime``, read and checked whole before
anything is sent: any fault is an :class:`ApiError` 400 that names the field and says what is
wrong, so a request is sent entirely or not at all.

EngageLab's names (docs/email/rest-api/deliverlies): ``from``, ``to`` (at most 100), ``body``
{``cc``, ``bcc`` (100 each, send_mode 1 only), ``reply_to`` (3), ``subject`` (256 characters),
``content`` {``html``, ``text``, ``preview_text``}, ``vars``, ``label_id`` / ``label_name``,
``headers`` (1 KB), ``attachments`` (10 MB in all) [{``content`` base64, ``filename``, ``type``,
``disposition``, ``content_id``}], ``settings`` {``send_mode``, ...}}, ``custom_args`` (1 KB),
``request_id`` (128 characters).

Header injection: every text that becomes part of a header (names, addresses, subject, header
values, file names, content ids) is refused when it holds CR, LF or another control character.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import re
from dataclasses import dataclass, field
from typing import Any

from policies import FormatError, parse_address
from relay import custom_args as cargs
from relay.http.envelope import ApiError

MAX_TO = 100
MAX_COPIES = 100  # cc, bcc
MAX_REPLY_TO = 3
MAX_SUBJECT = 256
MAX_HEADERS = 1024  # bytes of names and values
MAX_CUSTOM_ARGS = cargs.MAX_BYTES  # bytes of its JSON
MAX_REQUEST_ID = 128
MAX_ATTACHMENTS = 10 * 1024 * 1024  # decoded bytes, all attachments together
MAX_VARS = 1024 * 1024  # bytes of its JSON

BODY_KEYS = frozenset({"cc", "bcc", "reply_to", "subject", "content", "vars", "label_id", "label_name",
                       "headers", "attachments", "settings"})
CONTENT_KEYS = frozenset({"html", "text", "preview_text"})
ATTACHMENT_KEYS = frozenset({"content", "filename", "type", "disposition", "content_id"})
SETTINGS_KEYS = frozenset({"send_mode", "return_email_id", "sandbox", "open_tracking", "click_tracking",
                           "unsubscribe_tracking"})
# settings flag -> (the message's opt-out feature, the account setting that must be on for true)
TRACKING_FLAGS = {"open_tracking": "opens", "click_tracking": "clicks", "unsubscribe_tracking": "list-unsubscribe"}
# Headers the body sets through its own fields, and MIME structure we build: not in body.headers.
RESERVED_HEADERS = frozenset({"from", "to", "cc", "bcc", "subject", "reply-to", "mime-version", "date",
                              "content-type", "content-transfer-encoding", "content-disposition", "received"})

_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}")  # RFC 5322 §3.6.8 printable ASCII except ':'
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # everything but TAB
_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}")
_VAR_NAME = re.compile(r"%?([A-Za-z0-9_.\-]{1,64})%?")


@dataclass(frozen=True, slots=True)
class Mailbox:
    name: str
    address: str  # the addr-spec: the envelope address


@dataclass(frozen=True, slots=True)
class Attachment:
    data: bytes
    filename: str
    maintype: str
    subtype: str
    inline: bool
    content_id: str | None


@dataclass(frozen=True)
class SendRequest:
    """A checked ``/v1/mail/send`` body."""

    sender: Mailbox
    to: tuple[Mailbox, ...]
    cc: tuple[Mailbox, ...]
    bcc: tuple[Mailbox, ...]
    reply_to: tuple[Mailbox, ...]
    subject: str
    html: str | None
    text: str | None
    preview_text: str | None
    vars: dict[str, list[str]]  # placeholder (%name%) -> one value per `to` recipient
    label_id: int | None
    label_name: str | None
    headers: tuple[tuple[str, str], ...]
    attachments: tuple[Attachment, ...]
    send_mode: int  # 0: one message per `to` recipient; 1: one message to every to/cc/bcc
    request_id: str | None
    custom_args: str | None = field(default=None)  # compact JSON (relay/custom_args.py)
    # settings' tracking flags as given: feature ("opens", "clicks", "list-unsubscribe") -> on;
    # false turns the feature off for this mail, true asks for it (the account must have it on)
    tracking: dict[str, bool] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return len(self.to) if self.send_mode == 0 else 1


@dataclass(frozen=True)
class MimeRequest:
    """A checked ``/v1/mail/send_mime`` body: a ready RFC 5322 message and its envelope."""

    sender: str
    to: tuple[str, ...]
    mime: bytes
    label_id: int | None
    label_name: str | None
    request_id: str | None
    custom_args: str | None = None


def _bad(name: str, what: str) -> ApiError:
    return ApiError(400, f"{name}: {what}")


def _obj(v: Any, name: str, keys: frozenset[str]) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(name, "expected an object")
    unknown = [k for k in v if k not in keys]
    if unknown:
        raise _bad(f"{name}.{unknown[0][:40]}", f"unknown field (it takes: {', '.join(sorted(keys))})")
    return v


def _str(v: Any, name: str, *, max_len: int, header: bool = False, required: bool = False) -> str | None:
    if v is None:
        if required:
            raise _bad(name, "required")
        return None
    if not isinstance(v, str):
        raise _bad(name, "expected a string")
    if len(v) > max_len:
        raise _bad(name, f"longer than {max_len} characters")
    if header and _CONTROL.search(v):
        raise _bad(name, "CR, LF or another control character (header injection) is not allowed")
    if required and not v.strip():
        raise _bad(name, "required")
    return v


def mailbox(raw: Any, name: str) -> Mailbox:
    """``addr``, ``Name <addr>`` or ``"Name" <addr>``; the address as SMTP takes it (ASCII)."""
    text = _str(raw, name, max_len=998, header=True, required=True)
    assert text is not None
    text = text.strip()
    display = ""
    if "<" in text or ">" in text:
        lt = text.find("<")
        if lt < 0 or not text.endswith(">") or text.count("<") != 1 or text.count(">") != 1:
            raise _bad(name, f"invalid address {text[:100]!r} (expected addr or Name <addr>)")
        display, text = text[:lt].strip(), text[lt + 1:-1].strip()
        if len(display) >= 2 and display[0] == display[-1] == '"':
            display = display[1:-1]
        if '"' in display or "\\" in display:
            raise _bad(name, "quotes or backslashes inside the display name")
    parsed = parse_address(text, False)
    if isinstance(parsed, FormatError):
        raise _bad(name, f"invalid address {text[:100]!r}: {parsed.detail}")
    return Mailbox(display, parsed.address)


def _mailboxes(v: Any, name: str, limit: int, *, required: bool = False) -> tuple[Mailbox, ...]:
    if v is None:
        v = []
    if not isinstance(v, list):
        raise _bad(name, "expected an array of addresses")
    if required and not v:
        raise _bad(name, "at least one address is required")
    if len(v) > limit:
        raise _bad(name, f"{len(v)} addresses: at most {limit}")
    return tuple(mailbox(x, f"{name}[{i}]") for i, x in enumerate(v))


def _label(body: dict[str, Any], prefix: str = "body.") -> tuple[int | None, str | None]:
    raw_id = body.get("label_id")
    label_id: int | None = None
    if raw_id is not None:
        text = str(raw_id) if isinstance(raw_id, int) and not isinstance(raw_id, bool) else raw_id
        if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) > 18:
            raise _bad(f"{prefix}label_id", "expected a label id (digits)")
        label_id = int(text)
    name = _str(body.get("label_name"), f"{prefix}label_name", max_len=255, header=True)
    return label_id, (name.strip() or None) if name is not None else None


def _headers(v: Any) -> tuple[tuple[str, str], ...]:
    if v is None:
        return ()
    if not isinstance(v, dict):
        raise _bad("body.headers", "expected an object of header name to value")
    size = 0
    out: list[tuple[str, str]] = []
    for k, val in v.items():
        if not _FIELD_NAME.fullmatch(k):
            raise _bad("body.headers", f"{k[:40]!r} is not a header name")
        if k.lower() in RESERVED_HEADERS:
            raise _bad(f"body.headers.{k}", "set by the request's own fields; not allowed here")
        text = _str(val, f"body.headers.{k}", max_len=MAX_HEADERS, header=True)
        if text is None:
            raise _bad(f"body.headers.{k}", "expected a string")
        size += len(k.encode()) + len(text.encode())
        out.append((k, text))
    if size > MAX_HEADERS:
        raise _bad("body.headers", f"{size} bytes: at most {MAX_HEADERS}")
    return tuple(out)


def _b64(v: Any, name: str) -> bytes:
    if not isinstance(v, str) or not v:
        raise _bad(name, "expected base64 text")
    try:
        return base64.b64decode("".join(v.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _bad(name, "not valid base64") from None


def _attachments(v: Any) -> tuple[Attachment, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        raise _bad("body.attachments", "expected an array")
    out: list[Attachment] = []
    total = 0
    for i, raw in enumerate(v):
        name = f"body.attachments[{i}]"
        a = _obj(raw, name, ATTACHMENT_KEYS)
        data = _b64(a.get("content"), f"{name}.content")
        total += len(data)
        if total > MAX_ATTACHMENTS:
            raise _bad("body.attachments", f"more than {MAX_ATTACHMENTS} bytes in all")
        filename = _str(a.get("filename"), f"{name}.filename", max_len=255, header=True, required=True)
        assert filename is not None
        ctype = _str(a.get("type"), f"{name}.type", max_len=128, header=True)
        if ctype is None:
            ctype = mimetypes.guess_type(filename, strict=False)[0] or "application/octet-stream"
        if not _MIME_TYPE.fullmatch(ctype):
            raise _bad(f"{name}.type", f"{ctype[:60]!r} is not a MIME type (type/subtype)")
        disposition = a.get("disposition", "attachment")
        if disposition not in ("attachment", "inline"):
            raise _bad(f"{name}.disposition", "attachment or inline")
        cid = _str(a.get("content_id"), f"{name}.content_id", max_len=255, header=True)
        if cid is not None and (not cid.strip() or any(c in cid for c in "<> ")):
            raise _bad(f"{name}.content_id", "an id without <, > or spaces")
        maintype, subtype = ctype.lower().split("/", 1)
        out.append(Attachment(data, filename, maintype, subtype, disposition == "inline", cid))
    return tuple(out)


def _vars(v: Any, recipients: int) -> dict[str, list[str]]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _bad("body.vars", "expected an object: variable name to one value per to recipient")
    if len(json.dumps(v)) > MAX_VARS:
        raise _bad("body.vars", f"larger than {MAX_VARS} bytes")
    out: dict[str, list[str]] = {}
    for k, values in v.items():
        m = _VAR_NAME.fullmatch(k)
        if m is None:
            raise _bad("body.vars", f"{k[:40]!r} is not a variable name (letters, digits, _ . -)")
        items = values if isinstance(values, list) else [values] * recipients
        if len(items) != recipients:
            raise _bad(f"body.vars.{k}", f"{len(items)} values for {recipients} to recipients: one each")
        texts: list[str] = []
        for x in items:
            if isinstance(x, bool) or not isinstance(x, str | int | float):
                raise _bad(f"body.vars.{k}", "values must be strings or numbers")
            texts.append(str(x))
        out[f"%{m.group(1)}%"] = texts
    return out


def _settings(v: Any) -> tuple[int, dict[str, bool]]:
    """send_mode, and the tracking flags given: {feature (TRACKING_FLAGS' values): on}."""
    if v is None:
        return 0, {}
    s = _obj(v, "body.settings", SETTINGS_KEYS)
    mode = s.get("send_mode", 0)
    if mode not in (0, 1) or isinstance(mode, bool):
        raise _bad("body.settings.send_mode", "0 (a message per to recipient) or 1 (one message, with cc/bcc)")
    tracking: dict[str, bool] = {}
    for flag in ("return_email_id", "sandbox", *TRACKING_FLAGS):
        value = s.get(flag)
        if value is not None and not isinstance(value, bool):
            raise _bad(f"body.settings.{flag}", "expected true or false")
        if value and flag == "sandbox":
            raise _bad("body.settings.sandbox", "not supported by this server (false or absent)")
        if value is not None and flag in TRACKING_FLAGS:
            tracking[TRACKING_FLAGS[flag]] = value
    return int(mode), tracking


def _custom_args(v: Any) -> str | None:
    try:
        return cargs.encode(v)
    except cargs.CustomArgsError as e:
        raise _bad("custom_args", str(e)) from None


def request_id(body: dict[str, Any]) -> str | None:
    rid = _str(body.get("request_id"), "request_id", max_len=MAX_REQUEST_ID, header=True)
    if rid is not None and not rid.strip():
        raise _bad("request_id", "empty")
    return rid


def parse_send(body: dict[str, Any]) -> SendRequest:
    """Check a ``/v1/mail/send`` body (unknown top-level fields were refused by the contract)."""
    sender = mailbox(body.get("from"), "from")
    to = _mailboxes(body.get("to"), "to", MAX_TO, required=True)
    if "body" not in body:
        raise _bad("body", "required")
    if isinstance(body["body"], dict) and "dynamic_vars" in body["body"]:  # EngageLab's dynamic templates
        raise _bad("body.dynamic_vars", "dynamic templates are not supported by this server; use vars "
                                        "(%name% in subject and content is replaced)")
    b = _obj(body["body"], "body", BODY_KEYS)
    mode, tracking = _settings(b.get("settings"))
    cc = _mailboxes(b.get("cc"), "body.cc", MAX_COPIES)
    bcc = _mailboxes(b.get("bcc"), "body.bcc", MAX_COPIES)
    if (cc or bcc) and mode != 1:
        raise _bad("body.cc" if cc else "body.bcc", "only with settings.send_mode 1 (one message to everyone)")
    reply_to = _mailboxes(b.get("reply_to"), "body.reply_to", MAX_REPLY_TO)
    subject = _str(b.get("subject"), "body.subject", max_len=MAX_SUBJECT, header=True, required=True)
    assert subject is not None
    if "content" not in b:
        raise _bad("body.content", "required (html or text)")
    c = _obj(b["content"], "body.content", CONTENT_KEYS)
    html = _str(c.get("html"), "body.content.html", max_len=1 << 30)
    text = _str(c.get("text"), "body.content.text", max_len=1 << 30)
    if not html and not text:
        raise _bad("body.content", "html or text is required")
    preview = _str(c.get("preview_text"), "body.content.preview_text", max_len=1000)
    if preview and not html:
        raise _bad("body.content.preview_text", "a hidden preheader of the html part: needs body.content.html")
    variables = _vars(b.get("vars"), len(to) if mode == 0 else 1)
    for placeholder, values in variables.items():
        if placeholder in subject and any(_CONTROL.search(v) for v in values):
            raise _bad(f"body.vars.{placeholder.strip('%')}", "a value for the subject holds CR, LF or another "
                                                              "control character (header injection)")
    label_id, label_name = _label(b)
    return SendRequest(
        sender=sender, to=to, cc=cc, bcc=bcc, reply_to=reply_to, subject=subject, html=html, text=text,
        preview_text=preview, vars=variables, label_id=label_id, label_name=label_name,
        headers=_headers(b.get("headers")), attachments=_attachments(b.get("attachments")), send_mode=mode,
        request_id=request_id(body), custom_args=_custom_args(body.get("custom_args")), tracking=tracking,
    )


def parse_send_mime(body: dict[str, Any], max_size: int) -> MimeRequest:
    """Check a ``/v1/mail/send_mime`` body: ``mime`` is the message, base64 (``mime_encoding``
    ``base64``, the default) or as text (``text``: CRLF or LF line ends)."""
    sender = mailbox(body.get("from"), "from").address
    to = tuple(m.address for m in _mailboxes(body.get("to"), "to", MAX_TO, required=True))
    encoding = body.get("mime_encoding", "base64")
    if encoding not in ("base64", "text"):
        raise _bad("mime_encoding", "base64 or text")
    raw = body.get("mime")
    if encoding == "base64":
        data = _b64(raw, "mime")
    else:
        if not isinstance(raw, str) or not raw:
            raise _bad("mime", "expected the message as text")
        data = raw.encode("utf-8")
    if max_size and len(data) > max_size:
        raise _bad("mime", f"{len(data)} bytes: over the message size limit of {max_size} bytes")
    data = normalise_lines(data)
    head_end = data.find(b"\r\n\r\n")
    if head_end <= 0 or b":" not in data[:head_end].split(b"\r\n", 1)[0]:
        raise _bad("mime", "not an RFC 5322 message (a header block, a blank line, then the body)")
    label_id, label_name = _label(body, "")
    return MimeRequest(sender, to, data, label_id, label_name, request_id(body),
                       _custom_args(body.get("custom_args")))


def normalise_lines(data: bytes) -> bytes:
    """CRLF line ends (bare LF or CR become CRLF): what the spool and SMTP carry."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
