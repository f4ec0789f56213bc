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

_W = r"\s{1,20}"  # words of a phrase an MTA may wrap across lines ("in reply to RCPT TO\n    command")
# Tier 1, explicit: the MTA names the command the reply answered. Tried before tier 2.
_EXPLICIT_COMMANDS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p, re.I), c) for p, c in (
    (rf"in{_W}reply{_W}to{_W}(?:end{_W}of{_W})?data\b|after{_W}end{_W}of{_W}data|\[DATA\]|>>>{_W}DATA\b", "DATA"),
    (rf"in{_W}reply{_W}to{_W}rcpt{_W}to\b|\bRCPT_TO\b|after{_W}rcpt{_W}to\b|>>>{_W}RCPT{_W}TO\b", "RCPT"),
    (rf"in{_W}reply{_W}to{_W}mail{_W}from\b|\bMAIL_FROM\b|after{_W}mail{_W}from\b|>>>{_W}MAIL{_W}FROM\b", "MAIL"),
    (rf"in{_W}reply{_W}to{_W}(?:helo|ehlo)\b|\[(?:HELO|EHLO)\]|after{_W}(?:helo|ehlo)\b|>>>{_W}(?:HELO|EHLO)\b",
     "HELO"),
    (rf"in{_W}reply{_W}to{_W}(?:the{_W})?(?:initial{_W})?(?:connect|greeting)|after{_W}initial{_W}connection"
     rf"|refused{_W}to{_W}talk{_W}to{_W}me|\[CONN(?:ECT)?\]", "CONN"),
))
# Tier 2, wording that implies the command.
_COMMANDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"after data\b|end of data command|failed after I sent the message|did not like our DATA|\(DATA\)"
                r"|^[ \t]{0,20}DATA[ \t]{0,20}$", re.I | re.M), "DATA"),
    (re.compile(r"does not like recipient|did not like our RCPT|RCPT TO response|\bRCPT:|SMTP:RCPT\b"
                r"|^[ \t]{0,20}RCPT TO:", re.I | re.M), "RCPT"),
    (re.compile(r"sender was rejected|did not like our MAIL", re.I), "MAIL"),
    (re.compile(r"greeting", re.I), "CONN"),
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


def find_enhanced(text: str, failure: bool = False) -> str | None:
    """The first RFC 3463 code in ``text`` ("5.01.001" -> "5.1.1"); ``failure`` skips 2.x.x ones."""
    for m in _ENHANCED.finditer(text):
        if failure and m.group(1) == "2":
            continue
        return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"
    return None


def find_reply_code(text: str, strict: bool = False, failure: bool = False) -> int | None:
    """The first SMTP reply code in ``text``; ``strict`` only where a reply visibly starts;
    ``failure`` skips 2xx replies (a transcript's "250 2.1.5 Ok" is not why mail failed)."""
    if strict:
        for m in _CODE_STRICT.finditer(text):
            code = int(next(g for g in m.groups() if g))
            if not (failure and code < 400):
                return code
        return None
    for m in _CODE.finditer(text):
        start = m.start(1)
        before = text[max(0, start - 2):start]
        if before.endswith("#") or before.endswith("(#"):
            continue  # qmail's "(#5.1.1)" is an enhanced code, not a reply code
        if failure and m.group(1) < "4":
            continue
        return int(m.group(1))
    return None


def find_command(text: str) -> str | None:
    """The SMTP command a failure answered, from wording MTAs use ("in reply to RCPT TO command",
    also wrapped across lines, "[RCPT_TO]"): explicit naming first, implying wording second."""
    for pattern, command in (*_EXPLICIT_COMMANDS, *_COMMANDS):
        if pattern.search(text):
            return command
    return None
