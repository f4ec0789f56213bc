"""Safe, bounded MIME reading for the feedback parsers (stdlib ``email`` underneath).

What it does: :func:`load` turns raw bytes into a :class:`Mail` view with decoded top-level
headers, the human-readable text parts, the machine-readable report parts
(``message/delivery-status``, ``message/feedback-report``) and the headers of the returned
message (``message/rfc822``, ``text/rfc822-headers``).

Guarantees — whatever the input (broken MIME, unknown charsets, deep nesting, huge attachments,
binary junk):
- never raises; at worst the view is empty or the whole input is one text part;
- bounded work: only the first :data:`MAX_BYTES` of the input are parsed, at most
  :data:`MAX_BOUNDARIES` multipart levels/boundaries are honoured, at most :data:`MAX_PARTS` parts
  are visited, no deeper than :data:`MAX_DEPTH`, and each text is cut at :data:`MAX_TEXT` chars.
A bounce puts its report before the returned message, so the cut loses nothing that matters.

It never decodes attachments other than text, and never follows anything outside the input.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import decode_header
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_LINE", "MAX_PARTS", "Mail", "TextPart", "cap_lines", "clean_text",
           "decode_bytes", "decode_header_value", "header_pairs", "load", "parse_header_block"]

MAX_BYTES = 2 * 1024 * 1024  # of the raw mail
MAX_BOUNDARIES = 64  # "boundary=" declarations honoured; the rest of the input is cut
MAX_DEPTH = 16  # MIME nesting visited
MAX_PARTS = 128  # parts visited
MAX_TEXT = 256 * 1024  # chars kept of one decoded text part
MAX_HEADERS = 200  # header fields kept of one header block
MAX_HEADER_VALUE = 2000  # chars kept of one header value
MAX_LINE = 8192  # chars kept of one line of a text part (the parsers' regexes never see more)

_BOUNDARY = re.compile(rb"boundary[ \t]{0,20}=", re.I)
_WS = re.compile(r"\s+")
# [^<>], not [^>]: a run of "<" without ">" is then scanned once, not 2000 chars per "<".
_TAG = re.compile(r"<[^<>]{0,2000}>")
_HTML_BREAK = re.compile(r"<\s{0,20}(br|/p|/div|/tr|/li|p|div)\b[^<>]{0,2000}>", re.I)


@dataclass(frozen=True, slots=True)
class TextPart:
    content_type: str  # "text/plain", "text/html" (already converted to text), ...
    text: str
    filename: str | None = None


@dataclass(slots=True)
class Mail:
    """What the parsers look at. Built by :func:`load`; the parsers only read it."""

    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "text/plain"
    report_type: str = ""  # the report-type parameter of a multipart/report
    texts: list[TextPart] = field(default_factory=list)  # human-readable parts, outside returned messages
    delivery_status: list[str] = field(default_factory=list)  # message/delivery-status bodies as text
    nested_delivery_status: list[str] = field(default_factory=list)  # the same, inside a returned message
    feedback_reports: list[str] = field(default_factory=list)  # message/feedback-report bodies as text
    returned_headers: tuple[tuple[str, str], ...] = ()  # headers of the first returned message
    returned_text: str = ""  # body text of the first returned message (ARF: some carry only this)
    has_returned: bool = False  # a message/rfc822 or text/rfc822-headers part exists
    truncated: bool = False
    dropped: list[str] = field(default_factory=list)  # what the caps cut, one note per kind of cut
    error: str = ""  # why parsing fell back, if it did

    def drop(self, note: str) -> None:
        """Record that a cap cut something (``truncated: true`` in the output says what)."""
        self.truncated = True
        if note not in self.dropped:
            self.dropped.append(note)

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def all_headers(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def returned(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.returned_headers:
            if key.lower() == lname:
                return value
        return None

    @property
    def plain_text(self) -> str:
        """The human-readable text: every text/plain part, or the HTML ones as text if there is none."""
        plain = [t.text for t in self.texts if t.content_type != "text/html"]
        if not plain:
            plain = [t.text for t in self.texts]
        return "\n\n".join(plain)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes to text with the declared charset; unknown/wrong charsets never raise."""
    if charset:
        cs = charset.strip().strip('"').lower()
        if cs in ("us-ascii", "ascii", "7bit", "8bit", "unknown-8bit", "x-unknown", "default"):
            cs = "utf-8"
        try:
            codecs.lookup(cs)
        except (LookupError, ValueError):
            cs = "utf-8"
    else:
        cs = "utf-8"
    try:
        return data.decode(cs, "replace")
    except Exception:  # codec bugs on garbage (e.g. some CJK codecs) must not escape
        return data.decode("latin-1")


def clean_text(text: str) -> str:
    """``text`` as valid Unicode: the stdlib parser keeps 8-bit bytes of headers and preambles as
    lone surrogates (surrogateescape), which no UTF-8 output can carry; they become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode(
            "utf-8", "replace").decode("utf-8")


def cap_lines(text: str, limit: int = MAX_LINE) -> tuple[str, bool]:
    """``text`` with every line cut at ``limit`` chars; True if one was cut."""
    if len(text) <= limit or all(len(line) <= limit for line in text.split("\n")):
        return text, False
    return "\n".join(line[:limit] for line in text.split("\n")), True


def decode_header_value(value: object) -> str:
    """RFC 2047-decoded, whitespace-collapsed header text; never raises."""
    if value is None:
        return ""
    text = clean_text(str(value)[: MAX_HEADER_VALUE * 2])
    if "=?" in text:
        try:
            chunks = []
            for raw, charset in decode_header(text):
                if isinstance(raw, bytes):
                    chunks.append(decode_bytes(raw, charset))
                else:
                    chunks.append(raw)
            text = "".join(chunks)
        except Exception:
            pass
    return _WS.sub(" ", text).strip()[:MAX_HEADER_VALUE]


def header_pairs(msg: Message) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    try:
        for name, value in msg.items()[:MAX_HEADERS]:
            pairs.append((str(name), decode_header_value(value)))
    except Exception:
        pass
    return tuple(pairs)


def parse_header_block(text: str) -> tuple[tuple[str, str], ...]:
    """Headers from a text that starts with a header block (returned headers pasted into a bounce)."""
    try:
        msg = HeaderParser(policy=compat32).parsestr(text[:MAX_TEXT], headersonly=True)
    except Exception:
        return ()
    return header_pairs(msg)


def _html_to_text(html: str) -> str:
    text = _HTML_BREAK.sub("\n", html)
    text = _TAG.sub(" ", text)
    for ent, ch in (("&nbsp;", " "), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&amp;", "&")):
        text = text.replace(ent, ch)
    return text


def _part_text(part: Message, mail: Mail | None = None) -> str:
    text = _raw_part_text(part)
    if len(text) >= MAX_TEXT and mail is not None:
        mail.drop(f"text beyond {MAX_TEXT} characters of a part")
    text, cut = cap_lines(text)
    if cut and mail is not None:
        mail.drop(f"line text beyond {MAX_LINE} characters")
    return text


def _raw_part_text(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        data = payload
    else:
        raw = part.get_payload()
        if isinstance(raw, str):
            data = raw.encode("utf-8", "surrogateescape")
        elif isinstance(raw, list):  # message/* parsed as sub-messages (delivery-status blocks)
            # A line that is no header (an unindented continuation of a multi-line reply) ends the
            # stdlib's header block: the fields after it are in the block's body, kept here too.
            return "\n\n".join(_block_text(m) for m in raw if isinstance(m, Message))
        else:
            return ""
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return _newlines(clean_text(decode_bytes(data[: MAX_TEXT * 4], charset))[:MAX_TEXT])


def _block_text(block: Message) -> str:
    head = "\n".join(f"{k}: {decode_header_value(v)}" for k, v in block.items()[:MAX_HEADERS])
    body = block.get_payload()
    if isinstance(body, str) and body.strip():
        return head + "\n" + clean_text(body[:MAX_TEXT])
    return head


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "text/plain"


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    return decode_header_value(name) if name else None


def _cut(raw: bytes) -> tuple[bytes, bool]:
    truncated = len(raw) > MAX_BYTES
    data = raw[:MAX_BYTES]
    # Each "boundary=" can add a nesting level; the stdlib parser recurses per level. Cap them.
    count = 0
    for m in _BOUNDARY.finditer(data):
        count += 1
        if count > MAX_BOUNDARIES:
            cut = data.rfind(b"\n", 0, m.start())
            return data[: max(cut, 0)], True
    return data, truncated


def load(raw: bytes) -> Mail:
    """Parse ``raw`` into a :class:`Mail`; never raises."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        return Mail(error="input is not bytes")
    data, truncated = _cut(bytes(raw))
    mail = Mail()
    if truncated:
        mail.drop(f"input beyond {len(data)} bytes (of {len(raw)}) or beyond {MAX_BOUNDARIES} multipart boundaries")
    try:
        msg = message_from_bytes(data, policy=compat32)
    except (RecursionError, MemoryError) as exc:
        mail.error = f"MIME structure too deep: {type(exc).__name__}"
        mail.texts.append(TextPart("text/plain", cap_lines(_newlines(decode_bytes(data[:MAX_TEXT], None)))[0]))
        return mail
    except Exception as exc:  # the stdlib parser is lenient; this is a last resort
        mail.error = f"MIME parse error: {type(exc).__name__}"
        mail.texts.append(TextPart("text/plain", cap_lines(_newlines(decode_bytes(data[:MAX_TEXT], None)))[0]))
        return mail
    mail.headers = header_pairs(msg)
    mail.content_type = _content_type(msg)
    try:
        mail.report_type = (msg.get_param("report-type") or "").__str__().lower() if mail.content_type == \
            "multipart/report" else ""
    except Exception:
        mail.report_type = ""
    try:
        _walk(msg, mail)
    except (RecursionError, MemoryError, Exception) as exc:  # pragma: no cover - defensive
        mail.error = f"MIME walk error: {type(exc).__name__}"
    return mail


def _walk(root: Message, mail: Mail) -> None:
    # Iterative depth-first walk; (part, depth, inside a returned message)
    stack: list[tuple[Message, int, bool]] = [(root, 0, False)]
    visited = 0
    while stack and visited < MAX_PARTS:
        part, depth, returned = stack.pop()
        visited += 1
        ctype = _content_type(part)
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            if depth >= MAX_DEPTH:
                mail.drop(f"parts nested deeper than {MAX_DEPTH}")
                continue
            if part.preamble and not returned and depth == 0 and len(payload) <= 1:
                mail.texts.append(TextPart("text/plain", cap_lines(_newlines(clean_text(part.preamble[:MAX_TEXT])))[0]))
            if ctype in ("message/rfc822", "message/global", "message/partial"):
                subs = [p for p in payload if isinstance(p, Message)]
                if subs and not returned and not mail.has_returned:
                    mail.has_returned = True
                    mail.returned_headers = header_pairs(subs[0])
                    mail.returned_text = _first_text(subs[0])
                stack.extend((p, depth + 1, True) for p in reversed(subs))
                continue
            if ctype in ("message/delivery-status", "message/global-delivery-status"):
                (mail.nested_delivery_status if returned else mail.delivery_status).append(_part_text(part, mail))
                continue
            if ctype == "message/feedback-report":
                if not returned:
                    mail.feedback_reports.append(_part_text(part, mail))
                continue
            stack.extend((p, depth + 1, returned) for p in reversed(payload) if isinstance(p, Message))
            continue
        if returned:
            if ctype in ("message/delivery-status", "message/global-delivery-status"):
                mail.nested_delivery_status.append(_part_text(part, mail))
            continue
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            mail.delivery_status.append(_part_text(part, mail))
        elif ctype == "message/feedback-report":
            mail.feedback_reports.append(_part_text(part, mail))
        elif ctype in ("text/rfc822-headers", "text/rfc822-header", "message/global-headers", "message/rfc822",
                       "message/global"):
            text = _part_text(part)
            if not mail.has_returned:
                mail.has_returned = True
                mail.returned_headers = parse_header_block(text.lstrip())
        elif ctype.startswith("text/") or ctype == "multipart/mixed" or part.get_content_maintype() == "multipart":
            text = _part_text(part, mail)
            if ctype == "text/html":
                text = _html_to_text(text)
            if text.strip():
                mail.texts.append(TextPart(ctype if ctype.startswith("text/") else "text/plain", text,
                                           _filename(part)))
    if stack:
        mail.drop(f"parts beyond the first {MAX_PARTS}")


def _first_text(msg: Message) -> str:
    try:
        for part in msg.walk():
            if part.get_content_type() == "text/plain":
                return _part_text(part)[:8192]
    except Exception:
        return ""
    return ""
