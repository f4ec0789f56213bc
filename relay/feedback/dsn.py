"""RFC 3464 delivery status notifications -> recipient rows, or None ("not mine").

What it does: reads the ``message/delivery-status`` fields (Reporting-MTA, Final-Recipient,
Original-Recipient, Action, Status, Diagnostic-Code, Remote-MTA) — also when an MTA pasted them
into a text part or broke the multipart boundary — and fills what the fields leave out (a missing
Diagnostic-Code, the SMTP command) from the human-readable part, where MTAs such as Postfix write
"host x said: 550 ... (in reply to RCPT TO command)".

Guarantees: never raises on any :class:`~relay.feedback.mime.Mail`; returns None when the mail has
no per-recipient DSN fields. Rows are not classified here (``category`` is None).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from relay.feedback.mime import Mail
from relay.feedback.notice import split_notice
from relay.feedback.report import RecipientReport
from relay.feedback.scan import (
    clean_address,
    find_addresses,
    find_command,
    find_enhanced,
    find_reply_code,
    one_line,
    strip_diag_type,
)

__all__ = ["DsnResult", "human_block", "parse_dsn", "parse_fields"]

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]{1,40})[ \t]{0,20}:[ \t]?(.*)$")
_RECIPIENT_FIELDS = frozenset({"final-recipient", "original-recipient", "action", "status", "diagnostic-code",
                               "remote-mta", "last-attempt-date", "will-retry-until", "x-actual-recipient",
                               "final-log-id", "x-display-name"})
# [ \t], not \s: with re.M a \s* at each line start would run across every following blank
# line (250 KB of blank lines took 990 s).
_TEXT_DSN = re.compile(r"^[ \t]{0,20}(final-recipient|original-recipient)[ \t]{0,20}:", re.I | re.M)
_STATUS = re.compile(r"^\s{0,20}([245])\.(\d{1,3})\.(\d{1,3})")
_LOCAL_EXIT = re.compile(r"^\s{0,20}x-unix\s{0,20};\s{0,20}\d{0,10}\s{0,20}$", re.I)
_SUCCESS_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
MAX_RECIPIENTS = 500


@dataclass(slots=True)
class DsnResult:
    rows: list[RecipientReport]
    reporting_mta: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    recipients_total: int = 0  # per-recipient field groups in the mail (rows stop at MAX_RECIPIENTS)

    @property
    def delivery_success(self) -> bool:
        return bool(self.rows) and all((r.action or "") in _SUCCESS_ACTIONS or (r.status or "").startswith("2.")
                                       for r in self.rows)


def _unfold(text: str) -> list[str]:
    lines: list[str] = []
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and lines and lines[-1].strip() and line.strip():
            lines[-1] = lines[-1].rstrip() + " " + line.strip()
        else:
            lines.append(line)
    return lines


def parse_fields(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Per-message fields and per-recipient field groups of a delivery-status body."""
    message: dict[str, str] = {}
    recipients: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in _unfold(text):
        if not line.strip():
            if current is not None and ("final-recipient" in current or "original-recipient" in current):
                current = None
            continue
        m = _FIELD.match(line.strip())
        if not m:
            continue
        name, value = m.group(1).lower(), m.group(2).strip()
        if name in _RECIPIENT_FIELDS:
            if current is None or name in current:
                if len(recipients) >= MAX_RECIPIENTS:
                    break
                current = {}
                recipients.append(current)
            current[name] = value
        elif current is None:
            message.setdefault(name, value)
    return message, [r for r in recipients if "final-recipient" in r or "original-recipient" in r]


def _status(value: str | None) -> str | None:
    if not value:
        return None
    m = _STATUS.match(value)
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}" if m else None


def human_block(text: str, address: str, limit: int = 1200, occurrences: int = 3,
                others: Sequence[str] = ()) -> str:
    """The lines of ``text`` about ``address``: each line naming it and what follows, to a blank line
    or to a line naming another recipient of the same bounce (``others``: their lines are not about
    this one).

    Sendmail names the recipient twice (the failed-address list, then the transcript), so a few
    occurrences are joined.
    """
    if not address or not text:
        return ""
    lower = text.lower()
    needle = address.lower()
    blocks: list[str] = []
    pos = lower.find(needle)
    while pos >= 0 and len(blocks) < occurrences:
        start = text.rfind("\n", 0, pos) + 1
        end = text.find("\n\n", pos)
        if end < 0:
            end = len(text)
        block = text[start:min(end, start + limit)]
        if len(block.strip()) <= len(address) + 4:  # the address line alone; the reason follows
            nxt = text.find("\n\n", end + 2)
            block = text[start:min(nxt if nxt > 0 else len(text), start + limit)]
            end = start + len(block)
        blocks.append(_cut_at_others(block, needle, others))
        pos = lower.find(needle, max(end, pos + len(needle)))
    return "\n".join(blocks)


def _cut_at_others(block: str, needle: str, others: Sequence[str]) -> str:
    if not others:
        return block
    lines = block.split("\n")
    for i, line in enumerate(lines[1:], 1):
        low = line.lower()
        if needle not in low and any(o in low for o in others):
            return "\n".join(lines[:i])
    return block


def _usable(address: str | None) -> bool:
    """An address a bounce can be about: a dotted domain (not "root@localhost", "user@mailhost")."""
    return bool(address) and "." in (address or "").rpartition("@")[2]


def parse_dsn(mail: Mail) -> DsnResult | None:
    # A DSN forwarded inside a message/rfc822 part (the report of a relay we handed the mail to)
    # is read when the mail has none of its own.
    sources = [t for t in (mail.delivery_status or mail.nested_delivery_status) if t.strip()]
    human = mail.plain_text
    if not sources:
        m = _TEXT_DSN.search(human)
        if not m:
            return None
        sources = [human[max(0, human.rfind("\n\n", 0, m.start())):]]
    message: dict[str, str] = {}
    groups: list[dict[str, str]] = []
    for text in sources:
        msg_fields, recips = parse_fields(text)
        for k, v in msg_fields.items():
            message.setdefault(k, v)
        groups.extend(recips)
    if not groups:
        return None
    rows: list[RecipientReport] = []
    seen: set[str] = set()
    notice = split_notice(human)[0] if human else ""
    failed_header = find_addresses(mail.header("X-Failed-Recipients") or "")
    everyone = [a.lower() for g in groups for a in (clean_address(g.get("final-recipient")),
                                                    clean_address(g.get("original-recipient"))) if a]
    for g in groups:
        final = clean_address(g.get("final-recipient"))
        original = clean_address(g.get("original-recipient"))
        if not _usable(final) and _usable(original):
            final = original  # Final-Recipient is a local alias or a path: the address we sent to
        recipient = final or original or clean_address(g.get("x-actual-recipient"))
        if not recipient and len(failed_header) == 1:
            recipient = failed_header[0]  # Exim: Final-Recipient is a file path, the header has the address
        if not recipient:
            raw = (g.get("final-recipient") or g.get("original-recipient") or "").split(";")[-1].strip()
            if not raw:
                continue
            recipient = raw.strip("<>")
        action = (g.get("action") or "").split()[0].lower() if g.get("action", "").strip() else None
        raw_diag = one_line(g.get("diagnostic-code", ""), 2000)
        diag = strip_diag_type(raw_diag)
        if _LOCAL_EXIT.match(raw_diag):  # "X-Unix; 77": a local exit code, not an SMTP reply
            diag = ""
        mine = {recipient.lower(), (original or "").lower()}
        block = human_block(human, recipient, others=[a for a in everyone if a not in mine]) if human else ""
        if not block and len(groups) == 1 and notice:
            block = notice
        status = _status(g.get("status"))
        fail = action not in _SUCCESS_ACTIONS and not (status or "").startswith("2.")
        detail = find_enhanced(diag, fail)
        if detail and (status is None or detail[0] == status[0]):
            status = detail  # the remote server's own code is more precise than the MTA's summary
        elif block and (status is None or status.endswith(".0.0")):
            detail = find_enhanced(block, fail)
            if detail and not detail.endswith(".0.0") and (status is None or detail[0] == status[0]):
                status = detail
        alone = len(groups) == 1 and notice and notice != block
        if alone and (status is None or status.endswith(".0.0")):
            # Sendmail writes the precise reply ("554 5.3.0 unknown mailer error 255") only in the
            # transcript of the notice; its Status field is the 5.0.0 summary (RFC 3464 2.3.4).
            detail = find_enhanced(notice, fail)
            if detail and not detail.endswith(".0.0") and (status is None or detail[0] == status[0]):
                status = detail
        code = find_reply_code(diag, strict=True, failure=fail)
        if code is None and block:
            code = find_reply_code(block, strict=True, failure=fail)
        if code is None and alone:
            code = find_reply_code(notice, strict=True, failure=fail)
        if not diag and block:
            diag = one_line(block, 2000)
        command = find_command(diag) or (find_command(block) if block else None)
        key = recipient.lower()
        if key in seen and action not in ("failed", None):
            continue
        seen.add(key)
        rows.append(RecipientReport(
            recipient=recipient,
            original_recipient=original,
            action=action,
            status=status,
            smtp_code=code,
            diagnostic=diag,
            remote_mta=strip_diag_type(g["remote-mta"]).strip() if g.get("remote-mta") else None,
            command=command,
        ))
    if not rows:
        return None
    total = max(len(groups), sum(_count_groups(t) for t in sources))
    reporting = strip_diag_type(message["reporting-mta"]).strip() if message.get("reporting-mta") else None
    return DsnResult(rows=rows, reporting_mta=reporting, fields=message, recipients_total=total)


def _count_groups(text: str) -> int:
    """Per-recipient groups in a delivery-status text, counted past the cap (for ``dropped``)."""
    finals = originals = 0
    for line in text.splitlines():
        head = line.lstrip()[:20].lower()
        finals += head.startswith("final-recipient")
        originals += head.startswith("original-recipient")
    return finals or originals
