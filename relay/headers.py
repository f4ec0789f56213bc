"""Reading and removing the customer's control headers before spooling; our trace header.

The label, email-type, opt-out and custom-args headers are read, then removed from the message,
so they are never delivered. The Subject is read (RFC 2047 decoded) for the status records. Only the header block
is touched; the body passes through unchanged. :func:`received_header` is the ``Received:`` line
prepended to every accepted message (RFC 5321 §4.4).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.header import decode_header, make_header
from email.utils import format_datetime

from relay import custom_args as cargs
from storage.records import EmailType

_HEADER_END = re.compile(rb"\r\n\r\n")
# What may appear of client-chosen names inside the trace header (no comment/quote/CR/LF tricks).
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9.\-_:\[\]@+]")


#: Per-message opt-out headers (removed at intake, never delivered): value ``off`` turns off
#: these features for the message.
OPT_OUT_HEADERS = {"x-mailrelay-track": ("opens", "clicks"), "x-mailrelay-unsubscribe": ("list-unsubscribe",)}


@dataclass(frozen=True)
class HeaderFacts:
    subject: str
    message_id: str | None
    label: str | None
    email_type: EmailType | None
    type_error: str | None  # the email-type header held something else
    opt_out: tuple[str, ...] = ()  # features turned off by the opt-out headers (see OPT_OUT_HEADERS)
    custom_args: str | None = None  # X-Mailrelay-Custom-Args, checked (relay/custom_args.py); removed
    custom_args_error: str | None = None  # that header held something else: the message is refused


def find_header_end(buf: bytes | bytearray) -> int:
    """Index just past the blank line that ends the header block, or -1 if not seen yet."""
    if buf.startswith(b"\r\n"):
        return 2
    m = _HEADER_END.search(buf)
    return m.end() if m else -1


def _unfold(lines: list[bytes]) -> list[tuple[str, bytes, list[bytes]]]:
    """Group header lines into (lower-case name, value, raw lines) fields."""
    fields: list[tuple[str, bytes, list[bytes]]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            prev_name, prev_value, prev_raw = fields[-1]
            fields[-1] = (prev_name, prev_value + b" " + line.strip(), [*prev_raw, line])
            continue
        raw_name, sep, value = line.partition(b":")
        if not sep:
            fields.append(("", b"", [line]))
            continue
        fields.append((raw_name.strip().decode("ascii", "replace").lower(), value.strip(), [line]))
    return fields


def header_fields(header_block: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, unfolded value) of each field of a header block with CRLF line ends
    (lines that are not fields are skipped)."""
    text = header_block.rstrip(b"\r\n")
    if not text:
        return []
    return [(name, value) for name, value, _raw in _unfold(text.split(b"\r\n")) if name]


def _decode(value: bytes) -> str:
    text = value.decode("utf-8", "replace")
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # malformed encoded-words: keep the raw text rather than fail the message
        return text


def process_headers(
    header_block: bytes, label_headers: tuple[str, ...], type_headers: tuple[str, ...],
    default_message_id: str | None = None,
) -> tuple[bytes, HeaderFacts]:
    """``header_block`` ends with the blank line. Returns (filtered block, facts).

    Without a Message-ID header, ``default_message_id`` is added (RFC 6409 §8.3: the submission
    server may add it) — bounces whose return path was rewritten are matched by it."""
    body_sep = header_block.endswith(b"\r\n\r\n")
    text = header_block[:-4] if body_sep else header_block.rstrip(b"\r\n")
    lines = text.split(b"\r\n") if text else []
    label_names = {h.lower() for h in label_headers}
    type_names = {h.lower() for h in type_headers}
    subject = ""
    message_id: str | None = None
    label: str | None = None
    email_type: EmailType | None = None
    type_error: str | None = None
    opt_out: list[str] = []
    custom: str | None = None
    custom_error: str | None = None
    kept: list[bytes] = []
    for name, value, raw in _unfold(lines):
        if name == cargs.HEADER:
            try:
                custom = cargs.from_header(value.decode("utf-8", "replace"))
            except cargs.CustomArgsError as e:
                custom_error = str(e)
            continue
        if name in OPT_OUT_HEADERS:
            if value.strip().lower() in (b"off", b"no", b"false", b"0"):
                opt_out.extend(f for f in OPT_OUT_HEADERS[name] if f not in opt_out)
            continue
        if name in label_names:
            label = _decode(value)[:255] or None
            continue
        if name in type_names:
            v = _decode(value).strip().lower()
            try:
                email_type = EmailType(v)
            except ValueError:
                type_error = v
            continue
        if name == "subject" and not subject:
            subject = _decode(value)[:998]
        if name == "message-id" and message_id is None:
            message_id = value.decode("ascii", "replace").strip()[:998] or None
        kept.extend(raw)
    if message_id is None and default_message_id:
        message_id = default_message_id
        kept.insert(0, b"Message-ID: " + default_message_id.encode("ascii"))
    out = b"\r\n".join(kept) + b"\r\n\r\n" if kept else b"\r\n"
    return out, HeaderFacts(subject, message_id, label, email_type, type_error, tuple(opt_out), custom, custom_error)


def with_protocol(*, esmtp: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    """The ``with`` keyword of a Received line: RFC 3848 (ESMTP/ESMTPS/ESMTPA/ESMTPSA) and
    RFC 6531 §3.7.4 (UTF8SMTP...) for a transaction that used SMTPUTF8."""
    if not esmtp:
        return "SMTP"
    return ("UTF8SMTP" if smtputf8 else "ESMTP") + ("S" if tls else "") + ("A" if authenticated else "")


# The caches below hold a few client names and addresses: every message of a busy client repeats them.
@functools.lru_cache(maxsize=1024)
def _safe(name: str, limit: int = 255) -> str:
    return _UNSAFE_NAME.sub("", name)[:limit] or "unknown"


@functools.lru_cache(maxsize=1024)
def _address_literal(ip: str) -> str:
    try:
        v6 = ipaddress.ip_address(ip).version == 6
    except ValueError:
        return f"[{_safe(ip, 64)}]"
    return f"[IPv6:{ip}]" if v6 else f"[{ip}]"


@functools.lru_cache(maxsize=4)
def _date_text(at: datetime, _offset: timedelta | None) -> str:
    # whole seconds: messages of the same second share the text; the offset is part of the key
    # because equal instants in two zones are equal datetimes but print differently
    return format_datetime(at)


def received_header(
    *, helo: str | None, peer_ip: str, api_user: str | None, hostname: str, protocol: str, email_id: str,
    recipients: list[str], at: datetime,
) -> bytes:
    """The ``Received:`` field (folded, CRLF-terminated) for a message we accepted.

    Like Postfix, the authenticated API_USER is named in a comment (never the key), and ``for``
    is given only when there is exactly one recipient (more would disclose the others)."""
    lines = [f"Received: from {_safe(helo or '')} ({_address_literal(peer_ip)})"]
    if api_user:
        lines.append(f"\t(Authenticated sender: {_safe(api_user)})")
    by = f"\tby {_safe(hostname)} (mailrelay) with {protocol} id {email_id}"
    whole = at.replace(microsecond=0)
    date = _date_text(whole, whole.utcoffset())
    if len(recipients) == 1:
        lines.append(by)
        lines.append(f"\tfor <{recipients[0]}>; {date}")
    else:
        lines.append(by + ";")
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
