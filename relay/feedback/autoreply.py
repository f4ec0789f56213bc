"""Recognise mail that is feedback-shaped but not a bounce: RFC 3834 auto-replies (vacation,
out-of-office, autoresponders) and the "is this a bounce at all" header signals.

What it does: :func:`is_autoreply` looks at headers only (Auto-Submitted, X-Autoreply,
X-Autorespond, Precedence: auto_reply, the subject prefixes mail clients use). :func:`bounce_signals`
says whether the headers look like a mail system's report (MAILER-DAEMON / postmaster sender,
delivery-failure subject, X-Failed-Recipients, null return path). An ordinary mail that merely
quotes a bounce in its body has no such signal and is not taken for one.

Guarantees: pure functions over a :class:`~relay.feedback.mime.Mail`; never raise.
"""

from __future__ import annotations

import re

from relay.feedback.mime import Mail

__all__ = ["BOUNCE_SUBJECT", "bounce_signals", "is_automated_sender", "is_autoreply"]

_AUTO_SUBJECT = re.compile(
    r"^\s{0,20}(auto(matic|matische)?[ -]?(reply|response|antwort|respuesta|risposta|réponse)|"
    r"out of (the )?office|abwesenheit|absence|vacation|on vacation|autoresponder|away from|"
    r"r[ée]ponse automatique|自動応答|自动回复)", re.I)
_AUTO_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder", "x-vacation")
_AUTOMATED_SENDER = re.compile(
    r"mailer[-_ ]?daemon|postmaster|post_master|mail delivery (subsystem|system)|mail\.delivery\.system|"
    r"\bmdaemon\b|mail administrator|system administrator|\bnoreply\b|no-reply|mailerdaemon", re.I)
BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status|failure|failed|notification|has failed|problem|report)|"
    r"returned mail|failure notice|mail delivery failed|could not be delivered|non[- ]?delivery|"
    r"returned to sender|mail system error|error sending|not delivered|permanent delivery failure|"
    r"delayed mail|warning: message|delivery delayed|message delivery|nondeliverable|"
    r"mail failure|mail failed|failed mail|rejected|bounce|there was an error|notification message|"
    r"не доставлено|не может быть доставлено|不達|エラー|退信|未送达|系统退信|"
    r"aws notification message|are not member", re.I)


def is_automated_sender(mail: Mail) -> bool:
    sender = mail.header("From") or ""
    return bool(_AUTOMATED_SENDER.search(sender))


def is_autoreply(mail: Mail) -> bool:
    """An RFC 3834 auto-reply (not a bounce): vacation notices, out-of-office, autoresponders."""
    subject = mail.header("Subject") or ""
    if is_automated_sender(mail) or BOUNCE_SUBJECT.search(subject):
        return False
    if _AUTO_SUBJECT.search(subject):
        return True
    if any(mail.header(h) for h in _AUTO_HEADERS):
        return True
    precedence = (mail.header("Precedence") or "").lower()
    if precedence in ("auto_reply", "auto-reply"):
        return True
    auto = (mail.header("Auto-Submitted") or "").lower()
    return auto.startswith("auto-replied")


def bounce_signals(mail: Mail) -> bool:
    """Header evidence that a mail system (not a person) wrote this report."""
    if mail.header("X-Failed-Recipients"):
        return True
    if is_automated_sender(mail):
        return True
    subject = mail.header("Subject") or ""
    if BOUNCE_SUBJECT.search(subject):
        return True
    if mail.content_type == "multipart/report":
        return True
    return_path = (mail.header("Return-Path") or "").strip()
    auto = (mail.header("Auto-Submitted") or "").lower()
    return return_path in ("<>", "") and mail.header("Return-Path") is not None and auto.startswith("auto-generated")
