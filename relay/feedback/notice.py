"""Where a bounce's notice ends and the returned message begins (text-only bounces).

MTAs paste the returned message after a marker line ("------ This is a copy of the message",
"--- Below this line is a copy of the message.", "----- Original message -----", ...) or start the
returned headers right after a blank line. :func:`split_notice` cuts there so that addresses and
codes of the returned message are not taken for the failure's. Pure, linear-time, never raises.
"""

from __future__ import annotations

import re

__all__ = ["split_notice"]

_MARKER = re.compile(
    r"^[\s>|*=_#-]{0,40}(?:this is a copy of (?:the|your)|(?:a )?copy of (?:the )?original message|"
    r"original message(?!\s{1,20}was received)(?!\s{1,20}received)|returned message|unsent message follows|"
    r"below this line is a copy|enclosed is a copy|the header of the original message|original mail info|"
    r"message headers follow|below is a copy of the original|headers of the original message|"
    r"undelivered message|included is a copy|returned mail follows|original message header|"
    r"content of the original message|original header|message header follows)", re.I)
_HEADER_START = re.compile(r"^(?:Return-Path|Received|DKIM-Signature|X-Received|ARC-Seal):", re.I)
def split_notice(text: str) -> tuple[str, str]:
    """(notice, returned part) of a bounce's text, cut where the returned message starts."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if i and len(line) < 120 and _MARKER.match(line):
            return "\n".join(lines[:i]), "\n".join(lines[i + 1:])
        if i > 2 and _HEADER_START.match(line) and not lines[i - 1].strip():
            return "\n".join(lines[:i]), "\n".join(lines[i:])
    return text, ""
