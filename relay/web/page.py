"""The unsubscribe landing page (``GET /u/TOKEN``) and its form nonce.

Everything from outside (the recipient's address) is HTML-escaped. The form posts back to the same
URL with a nonce, an HMAC of the token, so only a page we served can submit a reason: CSRF-safe
without cookies (the token itself is unguessable, and the nonce binds the form to it).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from html import escape

from storage.records import UnsubscribeReason

_NONCE_CONTEXT = b"mailrelay-unsubscribe-form-v1\0"


def form_nonce(token: str, secret: bytes) -> str:
    return hmac.new(secret, _NONCE_CONTEXT + token.encode("ascii"), hashlib.sha256).hexdigest()[:32]


def nonce_ok(token: str, nonce: str, secrets: Sequence[bytes]) -> bool:
    ok = False
    for key in secrets:
        ok |= hmac.compare_digest(form_nonce(token, key), nonce[:64])
    return ok


_STYLE = "body{font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em}label{display:block;margin:.4em 0}"


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>{body}</body></html>")


def landing_page(recipient: str, nonce: str) -> str:
    reasons = "".join(
        f'<label><input type="radio" name="reason" value="{int(r)}"{" checked" if r == 0 else ""}> '
        f"{escape(r.text)}</label>" for r in UnsubscribeReason)
    return _page("Unsubscribe", (
        f"<h1>Unsubscribe</h1><p>Stop sending mail to <b>{escape(recipient)}</b>?</p>"
        f'<form method="post"><input type="hidden" name="nonce" value="{escape(nonce)}">'
        f"<fieldset><legend>Why? (optional)</legend>{reasons}</fieldset>"
        f'<p><button type="submit">Unsubscribe</button></p></form>'))


def done_page(recipient: str) -> str:
    return _page("Unsubscribed", f"<h1>Unsubscribed</h1><p><b>{escape(recipient)}</b> will get no more of "
                                 "this sender's mail.</p>")
