"""A checked send request (``send_body.py``) → the RFC 5322 message of one of its messages, built
with the standard library's ``email`` package:

- non-ASCII header text (subject, display names, custom header values, file names) as RFC 2047
  encoded-words; 8-bit UTF-8 bodies where the lines allow it (else quoted-printable or base64, as
  the package chooses);
- html and text together as multipart/alternative (text first); attachments after it in
  multipart/mixed with their types; inline attachments with a ``content_id`` in
  multipart/related with the html;
- ``preview_text``: a hidden preheader, the first thing in the html body (what mail clients show
  after the subject in the message list);
- ``vars``: each ``%name%`` in the subject, html, text and preview text replaced by the value for
  that ``to`` recipient.

No Message-ID here: the accept sequence adds one from our host name (``relay/accept.py``), as
for SMTP. CPU work: call it in a thread.
"""

from __future__ import annotations

import html as html_lib
import re
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from relay.http.send_body import Mailbox, SendRequest
from storage.records import utcnow

_BODY_TAG = re.compile(r"<body\b[^>]{0,2000}>", re.IGNORECASE)
_PREHEADER = ('<div style="display:none;font-size:1px;line-height:1px;max-height:0;max-width:0;opacity:0;'
              'overflow:hidden;mso-hide:all">{}</div>')


def _address(m: Mailbox) -> Address:
    local, _, domain = m.address.rpartition("@")
    return Address(display_name=m.name, username=local, domain=domain)


def substitute(text: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def with_preheader(html: str, preview: str) -> str:
    div = _PREHEADER.format(html_lib.escape(preview))
    m = _BODY_TAG.search(html)
    return html[:m.end()] + div + html[m.end():] if m else div + html


def build(req: SendRequest, index: int) -> bytes:
    """The message for ``to[index]`` (send_mode 0), or the one message (send_mode 1: index 0)."""
    values = {k: v[index] for k, v in req.vars.items()}
    msg = EmailMessage(policy=SMTP)
    msg["Date"] = format_datetime(utcnow())
    msg["From"] = _address(req.sender)
    msg["To"] = [_address(req.to[index])] if req.send_mode == 0 else [_address(m) for m in req.to]
    if req.cc:
        msg["Cc"] = [_address(m) for m in req.cc]
    if req.reply_to:
        msg["Reply-To"] = [_address(m) for m in req.reply_to]
    msg["Subject"] = substitute(req.subject, values)
    for name, value in req.headers:
        msg[name] = value
    text = substitute(req.text, values) if req.text else None
    html = substitute(req.html, values) if req.html else None
    if html is not None and req.preview_text:
        html = with_preheader(html, substitute(req.preview_text, values))
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    else:
        assert html is not None
        msg.set_content(html, subtype="html")
    html_part = _html_part(msg)
    for a in req.attachments:
        if a.inline and a.content_id and html_part is not None:
            html_part.add_related(a.data, a.maintype, a.subtype, cid=f"<{a.content_id}>", filename=a.filename,
                                  disposition="inline")
        else:
            msg.add_attachment(a.data, a.maintype, a.subtype, filename=a.filename,
                               disposition="inline" if a.inline else "attachment",
                               cid=f"<{a.content_id}>" if a.content_id else None)
    return msg.as_bytes()


def _html_part(msg: EmailMessage) -> EmailMessage | None:
    if msg.get_content_type() == "text/html":
        return msg
    for part in msg.iter_parts():
        if isinstance(part, EmailMessage) and part.get_content_type() == "text/html":
            return part
    return None
