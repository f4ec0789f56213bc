"""Non-standard bounces (no RFC 3464 fields) -> recipient rows, or None ("not mine").

What it does: real MTAs write their failure notices as prose — Exim ("The following address(es)
failed:"), qmail ("<addr>:" then the remote reply), Sendmail v5/v8 transcripts, Postfix without
DSN, Exchange 2003 ("did not reach the following recipient(s)"), Office 365, Gmail/Google Groups,
Yahoo, Outlook.com, Tencent, NetEase, Mail.ru, OpenSMTPD, DragonFly, Notes, m-FILTER, ... Rather
than one parser per product, one engine reads the layout they share:

1. the notice is the human-readable text up to the returned message (cut at the markers MTAs
   print: "This is a copy of the message", "Below this line is a copy", "Original message", ...);
2. the failed recipients are, in order of trust: ``X-Failed-Recipients`` (Exim, Google), lines
   that hold an address alone or with a reason ("addr: reason", "addr on <date>",
   "<addr>... reason"), an address after a "recipient"/"to"/"undeliverable to" phrase, and at
   last the first address that is not the sender's or the bounce's own;
3. each recipient's diagnostic is the text that follows its line (or the nearest paragraph);
   reply code, enhanced code and SMTP command are read from it.
Amazon SES notifications (JSON over SNS) are read as JSON.

Guarantees: never raises; None when the mail has no bounce signal in its headers or no recipient
can be found. Rows are not classified here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from relay.feedback.autoreply import bounce_signals
from relay.feedback.mime import Mail, parse_header_block
from relay.feedback.notice import split_notice
from relay.feedback.report import RecipientReport
from relay.feedback.scan import (
    ADDRESS,
    clean_address,
    find_addresses,
    find_command,
    find_enhanced,
    find_reply_code,
    one_line,
    strip_diag_type,
)

__all__ = ["NonStandardResult", "parse_nonstandard", "parse_ses"]

_A = ADDRESS.pattern
# (pattern, the reason is on the same line)
_LINE_PATTERNS: tuple[tuple[re.Pattern[str], bool], ...] = tuple((re.compile(p, re.I), inline) for p, inline in (
    # the address alone (Exim, qmail, Gmail)
    (rf"^[ \t>*-]{{0,40}}[<\"(\[]?(?P<a>{_A})[>\")\]]?[ \t]{{0,40}}[:.,]?[ \t]{{0,40}}$", False),
    (rf"^[ \t>]{{0,40}}<?(?P<a>{_A})>?[ \t]{{1,40}}on[ \t]{{1,40}}\S", False),  # Exchange 2003: "addr on <date>"
    (rf"^[ \t>]{{0,40}}<?(?P<a>{_A})>?[ \t]{{0,40}}<mailto:", False),  # Office 365
    # Sendmail: "554 <addr>... reason"
    (rf"^[ \t>]{{0,40}}(?:\d{{3}}[ \t]{{1,40}})?<(?P<a>{_A})>\.\.\.[ \t]{{0,40}}\S", True),
    (rf"^[ \t>]{{0,40}}<?(?P<a>{_A})>?:[ \t]{{1,40}}\S", True),  # OpenSMTPD: "addr: reason"
    # Zoho and others: "addr Invalid Address, ..."
    (rf"^[ \t]{{0,40}}<?(?P<a>{_A})>?[ \t]{{1,40}}[A-Z][a-z]{{1,40}}\s", True),
))
_CONTEXT = re.compile(
    r"(?:(?<![a-z-])(?:to|rcpt to|recipient|recipients|undeliverable to|delivered to|failed recipient|"
    r"could not be delivered to|unable to deliver (?:message |mail )?to|deliver(?:ing)? (?:your )?"
    r"(?:mail |message )?to|address|user|userid|mailbox|destination))"
    r"[ \t]{0,20}(?:\(s\))?[ \t]{0,20}:?\s{0,20}[(<\[\"]?"
    rf"(?P<a>{_A})", re.I)
# Bounded gaps: "from" + 100,000 spaces took 301 s with \s*[:=]?\s* (two adjacent unbounded runs).
_SENDER_CONTEXT = re.compile(rf"(?:mail from|from|sender|envelope-from|F=)[ \t]{{0,20}}[:=]?[ \t]{{0,20}}[<\[(\"]?"
                             rf"(?P<a>{_A})", re.I)
_LETTERS = re.compile(r"[^\W\d_]{3}")
_ON_DATE = re.compile(r"[ \t]{0,40}on\s")
_QUOTED = re.compile(r"^>\s?", re.M)
MAX_RECIPIENTS = 200
_FAMILIES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p, re.I), n) for p, n in (
    (r"qmail-send program|does not like recipient", "qmail"),
    (r"The following address\(es\) failed|Exim|mail delivery software", "exim"),
    (r"Postfix program", "postfix"),
    (r"Transcript of session follows|MAILER-DAEMON.{0,200}Sendmail|----- The following addresses", "sendmail"),
    (r"did not reach the following recipient|MSEXCH", "exchange"),
    (r"Delivery has failed to these recipients|outlook\.com|Office 365", "office365"),
    (r"Google tried to deliver|Delivery to the following recipient|Google Groups", "gmail"),
    (r"OpenSMTPD|This is the MAILER-DAEMON, please DO NOT REPLY", "opensmtpd"),
    (r"DragonFly Mail Agent", "dragonfly"),
    (r"Mail\.Ru", "mailru"),
))


@dataclass(frozen=True, slots=True)
class NonStandardResult:
    rows: tuple[RecipientReport, ...]
    format: str
    delivery_success: bool = False
    complaint_type: str | None = None  # SES complaint notifications are complaints, not bounces
    notice: str = ""  # the notice text, one line (classification context)
    recipients_total: int = 0  # recipients found (rows stop at MAX_RECIPIENTS)


# RFC 2369 list-command headers of the bounce itself: a list manager's refusal (fml, ezmlm,
# Mailman "you are not a member") tells where to send "guide"/"subscribe" — the list's own
# control addresses, never the recipient that failed.
_LIST_HEADERS = ("List-Subscribe", "List-Unsubscribe", "List-Help", "List-Owner", "List-Post")


def _list_addresses(mail: Mail) -> set[str]:
    out: set[str] = set()
    for name in _LIST_HEADERS:
        for value in mail.all_headers(name):
            out.update(a.lower() for a in find_addresses(value))
    return out


def _excluded(mail: Mail, notice: str) -> set[str]:
    out: set[str] = _list_addresses(mail)
    for name in ("From", "To", "Return-Path", "Reply-To", "Sender", "Delivered-To"):
        for value in mail.all_headers(name):
            out.update(a.lower() for a in find_addresses(value))
    for name in ("From", "Return-Path", "Sender", "Reply-To"):
        out.update(a.lower() for a in find_addresses(mail.returned(name) or ""))
    out.update(m.group("a").lower() for m in _SENDER_CONTEXT.finditer(notice))
    return out


def _candidates(lines: list[str]) -> list[tuple[int, str, bool]]:
    found: list[tuple[int, str, bool]] = []
    for i, line in enumerate(lines):
        if len(line) > 400 or "@" not in line:
            continue
        for pattern, inline in _LINE_PATTERNS:
            m = pattern.match(line)
            if m:
                found.append((i, m.group("a"), inline))
                break
    return found


def _block(lines: list[str], idx: int, address: str, stops: set[int], inline: bool) -> str:
    """The explanation that belongs to the recipient on line ``idx``."""
    first = lines[idx]
    if inline:  # "554 <addr>... reason": this line, plus its indented continuation lines
        out = [first.strip()]
        for line in lines[idx + 1:idx + 6]:
            if not line[:1].isspace() or not line.strip():
                break
            out.append(line.strip())
        return "\n".join(out)
    pos = first.lower().find(address.lower())
    rest = first[pos + len(address):].lstrip(">\"): ,.") if pos >= 0 else first
    out = [rest] if _LETTERS.search(rest) and not _ON_DATE.match(rest) else []
    i = idx + 1
    while i < len(lines) and i not in stops and len(out) < 14:
        line = lines[i]
        if not line.strip():
            if out or i - idx > 3:
                break
        else:
            out.append(line.strip())
        i += 1
    if any(_LETTERS.search(x) for x in out):
        return "\n".join(out)
    # the reason came before the address (au/EZweb, Notes): the previous paragraph
    j = idx - 1
    prev: list[str] = []
    while j >= 0 and len(prev) < 6:
        if not lines[j].strip():
            if prev:
                break
        else:
            prev.insert(0, lines[j].strip())
        j -= 1
    return "\n".join(prev)


def parse_ses(mail: Mail) -> NonStandardResult | None:
    """An Amazon SES notification (JSON, maybe inside an SNS envelope): bounce, delivery or
    complaint. Read before the DSN parser: a complaint notification is never a DSN."""
    text = mail.plain_text
    start = text.find("{")
    if start < 0 or "notificationType" not in text[:200000]:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
        if isinstance(obj, dict) and isinstance(obj.get("Message"), str):
            obj = json.loads(obj["Message"])
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    kind = str(obj.get("notificationType") or obj.get("eventType") or "")
    rows: list[RecipientReport] = []
    if kind == "Bounce" and isinstance(obj.get("bounce"), dict):
        for r in obj["bounce"].get("bouncedRecipients") or []:
            if isinstance(r, dict) and clean_address(str(r.get("emailAddress", ""))):
                diag = strip_diag_type(one_line(str(r.get("diagnosticCode") or "")))
                rows.append(RecipientReport(
                    recipient=clean_address(str(r["emailAddress"])) or "", action=str(r.get("action") or "failed"),
                    status=find_enhanced(str(r.get("status") or "")) or find_enhanced(diag),
                    smtp_code=find_reply_code(diag), diagnostic=diag, command=find_command(diag)))
        if not rows:
            return None
        return NonStandardResult(tuple(rows[:MAX_RECIPIENTS]), "amazonses", recipients_total=len(rows))
    if kind == "Delivery" and isinstance(obj.get("delivery"), dict):
        diag = strip_diag_type(one_line(str(obj["delivery"].get("smtpResponse") or "")))
        for r in obj["delivery"].get("recipients") or []:
            addr = clean_address(str(r))
            if addr:
                rows.append(RecipientReport(recipient=addr, action="delivered", status=find_enhanced(diag),
                                            smtp_code=find_reply_code(diag), diagnostic=diag))
        return NonStandardResult(tuple(rows), "amazonses", delivery_success=True) if rows else None
    if kind == "Complaint" and isinstance(obj.get("complaint"), dict):
        c = obj["complaint"]
        for r in c.get("complainedRecipients") or []:
            addr = clean_address(str(r.get("emailAddress", ""))) if isinstance(r, dict) else None
            if addr:
                rows.append(RecipientReport(recipient=addr, rule="arf-amazonses"))
        ftype = str(c.get("complaintFeedbackType") or "abuse")
        return NonStandardResult(tuple(rows), "amazonses", complaint_type=ftype) if rows else None
    return None


def parse_nonstandard(mail: Mail) -> NonStandardResult | None:
    if not bounce_signals(mail):
        return None
    text = mail.plain_text
    if text.count("\n>") > 5:
        text = _QUOTED.sub("", text)  # a forwarded bounce ("Begin forwarded message:")
    notice, _returned = split_notice(text)
    if not mail.returned_headers and _returned:
        mail.returned_headers = parse_header_block(_returned.lstrip())
    lines = notice.splitlines()
    excluded = _excluded(mail, notice)

    list_addresses = _list_addresses(mail)
    line_hits = [h for h in _candidates(lines) if h[1].lower() not in list_addresses]
    inline_at = {i: inline for i, _, inline in line_hits}
    kept = [(i, a) for i, a, _ in line_hits if a.lower() not in excluded]
    recipients: list[tuple[int, str]] = kept or [(i, a) for i, a, _ in line_hits]
    failed_header = find_addresses(mail.header("X-Failed-Recipients") or "")
    if failed_header and not kept:
        # Exim, Google: the header names the failed recipients when the body has no address line
        recipients = [(next((i for i, line in enumerate(lines) if a.lower() in line.lower()), -1), a)
                      for a in failed_header]
    if not recipients:
        ctx = [(notice.count("\n", 0, m.start()), m.group("a")) for m in _CONTEXT.finditer(notice)]
        recipients = [(i, a) for i, a in ctx if a.lower() not in excluded][:1]
    if not recipients:
        for i, line in enumerate(lines):
            hit = next((a for a in find_addresses(line) if a.lower() not in excluded), None)
            if hit:
                recipients = [(i, hit)]
                break
    if not recipients:
        returned_to = clean_address(mail.returned("To"))
        if returned_to:
            recipients = [(-1, returned_to)]
    if not recipients:
        return None

    seen: set[str] = set()
    unique: list[tuple[int, str]] = []
    for i, a in recipients:
        if a.lower() not in seen:
            seen.add(a.lower())
            unique.append((i, a))
    total = len(unique)
    unique = unique[:MAX_RECIPIENTS]
    stops = {i for i, _, _ in line_hits}
    whole = one_line(notice, 4000)
    single = len(unique) == 1
    rows = []
    for idx, addr in unique:
        block = _block(lines, idx, addr, stops - {idx}, inline_at.get(idx, False)) if idx >= 0 else ""
        diag = strip_diag_type(one_line(block, 2000))
        if inline_at.get(idx) and "..." in diag:
            # Sendmail "554 <addr>... 550 Host unknown": the remote's reply follows the local one
            inner = diag.split("...", 1)[1]
            code = find_reply_code(inner, strict=True, failure=True) or find_reply_code(diag, strict=True, failure=True)
        else:
            code = find_reply_code(diag, strict=True, failure=True)
        if code is None and single:
            code = find_reply_code(notice, strict=True, failure=True)
        status = find_enhanced(diag, True) or (find_enhanced(whole, True) if single else None)
        rows.append(RecipientReport(
            recipient=addr, action="failed", status=status, smtp_code=code,
            diagnostic=diag or whole[:1000], command=find_command(block) or (find_command(notice) if single else None)))
    return NonStandardResult(tuple(rows), _family(text, mail), notice=whole, recipients_total=total)


def _family(text: str, mail: Mail) -> str:
    head = text[:4000] + " " + (mail.header("From") or "")
    for pattern, name in _FAMILIES:
        if pattern.search(head):
            return name
    return "generic"
