"""Open and click tracking: the HTML parts of a message get their links rewritten to
``PUBLIC_URL/c/TOKEN`` and an open pixel ``PUBLIC_URL/o/TOKEN``, before the DKIM signature.

MIME is parsed and rebuilt with the standard library's ``email`` package (compat32, so header
fields and untouched parts are written back as they came): only ``text/html`` parts that are not
attachments change, each decoded with its charset and transfer encoding and encoded back the same
way (a 7bit/8bit part whose rewritten lines would pass 998 octets becomes quoted-printable).
multipart/alternative and multipart/related stay as they are; text parts are left alone.

Links rewritten: ``<a href>`` with an http or https URL up to ``tokens.MAX_LINK`` characters, not
pointing at our own ``public_url``, in a tag without ``data-mailrelay-notrack``. The tokens name the
recipient, so the rewriting is done per recipient (in a thread); a message found unmodifiable is
remembered and not parsed again for its other recipients.

Unmodifiable mail is delivered byte for byte as it came, with a log line saying why: broken MIME
(defects found by the parser), an unknown charset or text that does not decode with its charset,
multipart/signed or multipart/encrypted, S/MIME (application/pkcs7-mime) or PGP parts.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import html
import logging
import quopri
import re
from collections import OrderedDict
from collections.abc import Callable
from email import message_from_bytes
from email.generator import BytesGenerator
from email.message import Message
from email.policy import compat32
from io import BytesIO

from relay.delivery.recipient_links import RecipientLinks, SettingsCache
from relay.delivery.state import DeliveryItem
from relay.tokens import MAX_LINK, LinkKind

log = logging.getLogger("mailrelay.delivery.tracking")

_POLICY = compat32.clone(linesep="\r\n")
_A_TAG = re.compile(r"<a\s[^<>]{0,4000}>", re.I)  # bounded: no backtracking beyond one tag
_HREF = re.compile(r"""(\bhref\s*=\s*)(?:"([^"]{0,4000})"|'([^']{0,4000})'|([^\s"'<>`=]{1,4000}))""", re.I)
_BODY_END = re.compile(r"</body\s{0,20}>", re.I)
_SEALED = {"multipart/signed", "multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime",
           "application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-encrypted",
           "application/pgp-signature"}
_LRU = 4096


class Unrewritable(Exception):
    """The message cannot be rewritten safely; it is delivered unmodified."""


def _pixel(url: str) -> str:
    return (f'<img src="{html.escape(url)}" width="1" height="1" alt="" '
            'style="display:block;width:1px;height:1px;border:0">')


def rewrite_html(text: str, click: Callable[[str], str | None] | None, pixel: str | None) -> str:
    """``text`` with its links through ``click`` (None: left alone) and the pixel before </body>."""
    if click is not None:
        def tag(m: re.Match[str]) -> str:
            t = m.group(0)
            if "data-mailrelay-notrack" in t.lower():
                return t
            h = _HREF.search(t)
            if h is None:
                return t
            raw = next(g for g in (h.group(2), h.group(3), h.group(4)) if g is not None)
            url = html.unescape(raw).strip()
            if not url.lower().startswith(("http://", "https://")) or len(url) > MAX_LINK:
                return t
            new = click(url)
            if new is None:
                return t
            return f'{t[:h.start()]}{h.group(1)}"{html.escape(new)}"{t[h.end():]}'

        text = _A_TAG.sub(tag, text)
    if pixel is not None:
        ends = list(_BODY_END.finditer(text))
        at = ends[-1].start() if ends else len(text)
        text = text[:at] + _pixel(pixel) + text[at:]
    return text


def _encode(part: Message, data: bytes) -> None:
    cte = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    too_long = any(len(line) > 990 for line in data.splitlines())
    if cte in ("7bit", "8bit", "binary", "") and not too_long and (cte != "7bit" or data.isascii()):
        part.set_payload(data.decode("ascii", "surrogateescape"))
        return
    if cte == "base64":
        part.set_payload(base64.encodebytes(data).decode("ascii"))
        return
    part.set_payload(quopri.encodestring(data).decode("ascii"))
    if cte != "quoted-printable":
        del part["Content-Transfer-Encoding"]
        part["Content-Transfer-Encoding"] = "quoted-printable"


def _rewrite_part(part: Message, click: Callable[[str], str | None] | None, pixel: str | None) -> None:
    charset = part.get_content_charset() or "us-ascii"
    try:
        codecs.lookup(charset)
    except LookupError:
        raise Unrewritable(f"unknown charset {charset[:40]!r}") from None
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raise Unrewritable("HTML part without a body")
    try:
        text = payload.decode(charset)
    except UnicodeDecodeError:
        raise Unrewritable(f"HTML part does not decode as {charset[:40]}") from None
    new = rewrite_html(text, click, pixel)
    try:
        data = new.encode(charset)
    except UnicodeEncodeError:  # pragma: no cover - the added text is ASCII
        raise Unrewritable(f"rewritten HTML does not encode as {charset[:40]}") from None
    _encode(part, data)


def rewrite(content: bytes, click: Callable[[str], str | None] | None, pixel: str | None) -> bytes:
    """The message with its HTML parts rewritten; ``content`` itself when it has no HTML part.
    Raises :class:`Unrewritable`."""
    msg = message_from_bytes(content, policy=_POLICY)
    parts = list(msg.walk())
    html_parts: list[Message] = []
    for part in parts:
        ctype = part.get_content_type()
        if ctype in _SEALED or (ctype == "application/octet-stream"
                                and str(part.get_filename("")).lower().endswith((".p7m", ".asc", ".pgp"))):
            raise Unrewritable(f"signed or encrypted content ({ctype})")
        if part.defects:
            raise Unrewritable(f"broken MIME: {type(part.defects[0]).__name__}")
        if ctype == "text/html" and part.get_content_disposition() != "attachment":
            html_parts.append(part)
    if not html_parts:
        return content
    for part in html_parts:
        body = part.get_payload(decode=False)
        if isinstance(body, str) and "-----BEGIN PGP" in body:
            raise Unrewritable("inline PGP")
        _rewrite_part(part, click, pixel)
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, maxheaderlen=0, policy=_POLICY).flatten(msg)
    return out.getvalue()


class Tracker:
    """The body transform registered on :class:`relay.delivery.outgoing.Outgoing`."""

    def __init__(self, links: RecipientLinks, settings: SettingsCache, public_url: str) -> None:
        self._links = links
        self._settings = settings
        self._own = public_url.rstrip("/") + "/"
        self._unmodifiable: OrderedDict[str, None] = OrderedDict()

    async def transform(self, item: DeliveryItem, content: bytes) -> bytes:
        st = await self._settings.get(item.account_id, item.api_user)
        opens = st.track_opens and "opens" not in item.opt_out
        clicks = st.track_clicks and "clicks" not in item.opt_out
        if not (opens or clicks) or item.email_id in self._unmodifiable:
            return content

        def click(url: str) -> str | None:
            return None if url.startswith(self._own) else self._links.url(LinkKind.CLICK, item, url)

        pixel = self._links.url(LinkKind.OPEN, item) if opens else None
        try:
            return await asyncio.to_thread(rewrite, content, click if clicks else None, pixel)
        except Unrewritable as e:
            reason = str(e)
        except Exception as e:  # a parser/generator failure must not hold the mail: send it as it is
            reason = f"rewriting failed: {type(e).__name__}: {e}"
        log.warning(f"tracking skipped, message delivered unmodified: {reason}",
                 extra={"event": "tracking_skipped", "email_id": item.email_id, "reason": reason})
        self._unmodifiable[item.email_id] = None
        if len(self._unmodifiable) > _LRU:
            self._unmodifiable.popitem(last=False)
        return content
