"""Small text scanners shared by the feedback parsers: addresses, reply codes, SMTP commands.

Pure functions over ``str``; bounded regexes (no nested quantifiers over unbounded input), so
any text is scanned in linear time. Nothing here decides a category.
"""

from __future__ import annotations

import re

__all__ = ["ADDRESS", "clean_address", "find_addresses", "find_command", "find_enhanced", "find_reply_code",
           "one_line", "strip_diag_type"]

_LOCAL = r"(?:\"[^\"\r\n]{1,64}\"|[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64})"
_DOMAIN = r"(?:\[[0-9.:a-fA-F]{3,45}\]|[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.){0,10}[A-Za-z0-9-]{1,63})"
# C0 controls other than TAB/LF/CR, and DEL: an address touching one is not read at all, so a
# NUL inside "us\0er@x" never yields another address ("er@x"); the look-ahead is bounded.
CONTROL = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
ADDRESS = re.compile(rf"(?<![A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.{CONTROL}-]){_LOCAL}@{_DOMAIN}"
                     rf"(?![A-Za-z0-9.-]{{0,255}}[{CONTROL}])")
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\d)(?!\.\d)")
# A reply code: at the start, or after a separator a server or MTA writes before one.
_CODE = re.compile(r"(?:^|(?<=[\s:;(\[\"'<>#]))([245][0-9][0-9])(?=[ \t\-:,.)\]\"']|$)(?!\.\d)", re.M)
# Strict: where a server reply starts (a line, "said:", "<<<", "response:") — for whole notices.
_CODE_STRICT = re.compile(
    r"(?:(?:^[ \t>]{0,20}|said:?\s{0,20}|<<<\s{0,20}|response:?\s{0,20}|error:?\s{0,20}|reason:?\s{0,20}"
    r"|returned was:\s{0,20}|returned '|\]:\s{0,20})"
    r"([245][0-9][0-9])(?:[ \t-]{1,20}|:\s)(?=\S))"
    r"|(?:(?<![\d.])([245][0-9][0-9])[ \t-]{1,20}[245]\.\d{1,3}\.\d{1,3}(?!\d))"
    r"|(?:(?<=:)\s{0,20}([45][0-9][0-9])\s{1,20}(?=[A-Za-z]))|(?:ERROR_CODE\s{0,20}:\s{0,20}([45][0-9][0-9])\b)"
    r"|(?:ResponseCode\s{0,20}:?\s{0,20}([45][0-9][0-9])\b)",  # Zoho: "[Status: Error, ..., ResponseCode 421, ...]"
    re.M | re.I)
_DIAG_TYPE = re.compile(r"^\s{0,20}(?:smtp|x-[a-z0-9-]{1,40}|x-unix|unix|mail|ldap|dns)\s{0,20};\s{0,20}", re.I)
_WS = re.compile(r"\s+")

_COMMANDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"in reply to (?:end of )?data\b|after end of data|after data\b|end of data command"
                r"|>>> DATA|failed after I sent the message|did not like our DATA|\(DATA\)"
                r"|^[ \t]{0,20}DATA[ \t]{0,20}$",
                re.I | re.M), "DATA"),
    (re.compile(r"in reply to rcpt to|after rcpt to|>>> RCPT TO|does not like recipient|did not like our RCPT"
                r"|RCPT TO response|\bRCPT:|SMTP:RCPT\b|^[ \t]{0,20}RCPT TO:", re.I | re.M), "RCPT"),
    (re.compile(r"in reply to mail from|after mail from|>>> MAIL FROM|sender was rejected|did not like our MAIL",
                re.I), "MAIL"),
    (re.compile(r"in reply to (?:helo|ehlo)|after (?:helo|ehlo)|>>> (?:HELO|EHLO)", re.I), "HELO"),
    (re.compile(r"refused to talk to me|after initial connection|greeting", re.I), "CONN"),
)


def one_line(text: str, limit: int = 1000) -> str:
    return _WS.sub(" ", text).strip()[:limit]


def strip_diag_type(text: str) -> str:
    """``"smtp; 550 5.1.1 x"`` -> ``"550 5.1.1 x"`` (the RFC 3464 diagnostic-type prefix)."""
    return _DIAG_TYPE.sub("", text, count=1)


def clean_address(text: str | None) -> str | None:
    """The address in ``"rfc822; <a@b>"``, ``"A <a@b>"`` or ``"a@b"``; None if there is none."""
    if not text:
        return None
    value = text.strip()
    if ";" in value and value.split(";", 1)[0].strip().lower() in ("rfc822", "utf-8", "x400", "x-local"):
        value = value.split(";", 1)[1].strip()
    m = ADDRESS.search(value)
    if m:
        return m.group(0).strip(".")
    return None


def find_addresses(text: str) -> list[str]:
    return [m.group(0).rstrip(".") for m in ADDRESS.finditer(text)]


def find_enhanced(text: str) -> str | None:
    m = _ENHANCED.search(text)
    if not m:
        return None
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"


def find_reply_code(text: str, strict: bool = False) -> int | None:
    """The first SMTP reply code in ``text``; ``strict`` only where a reply visibly starts."""
    if strict:
        m = _CODE_STRICT.search(text)
        return int(next(g for g in m.groups() if g)) if m else None
    for m in _CODE.finditer(text):
        start = m.start(1)
        before = text[max(0, start - 2):start]
        if before.endswith("#") or before.endswith("(#"):
            continue  # qmail's "(#5.1.1)" is an enhanced code, not a reply code
        return int(m.group(1))
    return None


def find_command(text: str) -> str | None:
    """The SMTP command a failure answered, from wording MTAs use ("in reply to RCPT TO command")."""
    for pattern, command in _COMMANDS:
        if pattern.search(text):
            return command
    return None
