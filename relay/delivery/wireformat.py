"""SMTP wire format: message content after DATA (CRLF, dot-stuffing, final dot) and server replies.

RFC 5321 §2.3.8: lines end in CRLF, so a bare LF or a bare CR becomes CRLF. §4.5.2: a line that
starts with "." gets one more "." (the receiver removes it). §4.1.1.4: the data ends with
CRLF "." CRLF, so content without a final line end gets one.

The content functions never change anything else: no line wrapping (that would break DKIM signatures),
no 8-bit conversion. They are pure and cheap on the common case (content already CRLF).

Replies (RFC 5321 §4.2): ``take_reply`` cuts one complete, possibly multi-line reply out of a
receive buffer and parses it into a :class:`Reply` (code, RFC 3463 enhanced code, text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EOL = re.compile(rb"\r\n|\r|\n")
END_OF_DATA = b".\r\n"
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
MAX_REPLY = 64 * 1024  # a reply longer than this is a broken or hostile server


def to_crlf(content: bytes) -> bytes:
    """Every line end (CRLF, bare LF, bare CR) as CRLF."""
    if b"\r" not in content:
        return content.replace(b"\n", b"\r\n")
    crlf = content.count(b"\r\n")
    if crlf == content.count(b"\r") and crlf == content.count(b"\n"):
        return content  # already well formed: the usual case for spooled mail
    return _EOL.sub(b"\r\n", content)


def dot_stuff(content: bytes) -> bytes:
    """Double the leading "." of every line (``content`` must already have CRLF line ends)."""
    if content.startswith(b"."):
        content = b"." + content
    return content.replace(b"\r\n.", b"\r\n..")


def data_payload(content: bytes) -> bytes:
    """What to send after the 354 reply: CRLF-normalised, dot-stuffed content ending in CRLF, then
    the final ``.`` line. Empty content gives just the final dot."""
    wire = dot_stuff(to_crlf(content))
    if wire and not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    return wire + END_OF_DATA


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str | None
    text: str  # lines joined with " / ", the enhanced code removed from each line
    lines: tuple[str, ...]  # the raw text after "NNN-"/"NNN " of each line (EHLO keywords)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 300


def parse_reply(code: int, lines: list[str]) -> Reply:
    """Build a :class:`Reply` from the text of each line (after the code and separator).

    The enhanced code (RFC 3463) is taken from the first line when its class matches the reply
    code's first digit (RFC 2034 §4); the same code repeated at the start of later lines (Gmail
    style) is dropped from the text.
    """
    enhanced: str | None = None
    m = _ENHANCED.match(lines[0]) if lines else None
    if m is not None and m.group(1) == str(code)[0]:
        enhanced = m.group(0)
    parts: list[str] = []
    for line in lines:
        if enhanced is not None and line.startswith(enhanced):
            line = line[len(enhanced):]
        line = line.strip()
        if line:
            parts.append(line)
    return Reply(code, enhanced, " / ".join(parts), tuple(lines))


class MalformedReply(ValueError):
    """The server sent something that is not an SMTP reply."""


def take_reply(buf: bytearray) -> Reply | None:
    """Remove one complete reply from the front of ``buf`` and return it; None (buf untouched) while
    the reply is incomplete. Lines may end in CRLF or bare LF. Raises :class:`MalformedReply`."""
    start = 0
    code = 0
    texts: list[str] = []
    while True:
        nl = buf.find(b"\n", start)
        if nl < 0:
            if len(buf) > MAX_REPLY:
                raise MalformedReply("reply too long")
            return None
        line = bytes(buf[start:nl]).rstrip(b"\r")
        start = nl + 1
        sep = line[3:4]
        if len(line) < 3 or not line[:3].isdigit() or sep not in (b"", b" ", b"-"):
            raise MalformedReply(f"malformed reply {line[:80]!r}")
        if not texts:
            code = int(line[:3])
        texts.append(line[4:].decode("utf-8", "replace"))
        if sep != b"-":
            del buf[:start]
            return parse_reply(code, texts)
