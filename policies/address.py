"""Recipient address syntax: ``parse_address(raw, smtputf8) -> Address | FormatError``.

What it does: checks one RCPT TO argument against the SMTP grammar (RFC 5321 §4.1.2, the size
limits of §4.5.3.1, and RFC 6531 for SMTPUTF8), and returns the parsed address or a
:class:`FormatError` whose ``detail`` is a short human text for the 5xx reply and the status record.

Guarantees: pure (no I/O, no DNS), never raises, and every octet count is a UTF-8 byte count.

Must never: look anything up, or accept 8-bit characters unless the client declared SMTPUTF8.

Choices where the RFCs leave room (documented so nobody "fixes" them by accident):
- one pair of surrounding ``<>`` is stripped; a source route (``@a,@b:user@c``) is accepted and
  ignored, as RFC 5321 §4.1.1.3 and Appendix C require of servers;
- an empty quoted local part (``""@example.com``) is rejected: it is grammatical but no mailbox
  has it, and an ESP should not send to it;
- address literals: ``[1.2.3.4]`` and ``[IPv6:...]`` only (no other standardized tags);
- the lookup key (``Address.key``) unquotes a quoted local part that does not need its quotes
  (``"john"`` and ``john`` are the same mailbox) and lower-cases everything; ``Address.local``
  keeps the text as given, for delivery.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass

LOCAL_MAX_OCTETS = 64  # RFC 5321 §4.5.3.1.1
DOMAIN_MAX_OCTETS = 255  # RFC 5321 §4.5.3.1.2
PATH_MAX_OCTETS = 256  # RFC 5321 §4.5.3.1.3, counting the "<" and ">" of the path
LABEL_MAX_OCTETS = 63  # RFC 1035 §2.3.4; for U-labels the A-label form counts (RFC 5890 §2.3.2.1)

# RFC 5322 §3.2.3 atext (RFC 5321 Atom uses it)
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")
_LDH_CHARS = re.compile(r"[A-Za-z0-9-]*\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_IPV4_LITERAL = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\Z")  # RFC 5321 IPv4-address-literal
# Non-ASCII characters never allowed, even with SMTPUTF8: surrogates, private use, unassigned.
_BAD_UNICODE_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn"})


@dataclass(frozen=True, slots=True)
class FormatError:
    """Why a recipient is not a syntactically valid address. ``detail`` is short and human."""

    detail: str


@dataclass(frozen=True, slots=True)
class Address:
    """A syntactically valid mailbox. ``domain`` is always lower-case; ``local`` is as given."""

    local: str
    domain: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "domain", self.domain.lower())

    @property
    def address(self) -> str:
        """``local@domain`` for delivery and display (local part as given)."""
        return f"{self.local}@{self.domain}"

    @property
    def key(self) -> str:
        """The suppression-list lookup key: canonical local part, fully lower-cased."""
        return f"{_canonical_local(self.local).lower()}@{self.domain}"


def parse_address(raw: str, smtputf8: bool) -> Address | FormatError:
    """Parse one recipient path; see the module docstring for the rules."""
    text = raw
    if text.startswith("<") or text.endswith(">"):
        if len(text) < 2 or not (text.startswith("<") and text.endswith(">")):
            return FormatError("unbalanced angle brackets")
        text = text[1:-1]
    if not text:
        return FormatError("empty address")
    error = _check_characters(text, smtputf8)
    if error is not None:
        return error

    if text.startswith("@") and ":" in text:
        route_end = _skip_source_route(text, smtputf8)
        if isinstance(route_end, FormatError):
            return route_end
        text = text[route_end:]

    if text.startswith('"'):
        end = _scan_quoted_string(text)
        if isinstance(end, FormatError):
            return end
        local, rest = text[:end], text[end:]
        if not rest:
            return FormatError("missing '@'")
        if not rest.startswith("@"):
            return FormatError("text after quoted local part")
        domain = rest[1:]
    else:
        local, at, domain = text.rpartition("@")
        if not at:
            return FormatError("missing '@'")

    if not local or local == '""':
        return FormatError("empty local part")
    if not domain:
        return FormatError("empty domain")

    local_octets = len(local.encode("utf-8"))
    domain_octets = len(domain.encode("utf-8"))
    if local_octets > LOCAL_MAX_OCTETS:
        return FormatError(f"local part longer than {LOCAL_MAX_OCTETS} octets")
    if domain_octets > DOMAIN_MAX_OCTETS:
        return FormatError(f"domain longer than {DOMAIN_MAX_OCTETS} octets")
    if local_octets + 1 + domain_octets + 2 > PATH_MAX_OCTETS:
        return FormatError(f"path longer than {PATH_MAX_OCTETS} octets")

    if not local.startswith('"'):
        error = _check_dot_atom(local)
        if error is not None:
            return error
    canonical_domain = _check_domain(domain)
    if isinstance(canonical_domain, FormatError):
        return canonical_domain
    return Address(local, canonical_domain)


def _check_characters(text: str, smtputf8: bool) -> FormatError | None:
    """Characters that are wrong anywhere in a path, quoted or not (RFC 5321 §4.1.2 qtextSMTP)."""
    bad = _CONTROL.search(text)
    if bad is not None:
        char = bad.group()
        if char == "\x00":
            return FormatError("contains NUL")
        if char in "\r\n":
            return FormatError("contains CR or LF")
        return FormatError("contains a control character")
    if text.isascii():
        return None
    if not smtputf8:
        return FormatError("non-ASCII characters require SMTPUTF8")  # RFC 6531 §3.2
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return FormatError("invalid UTF-8")  # lone surrogates from a lenient decoder
    for char in text:
        if not char.isascii() and unicodedata.category(char) in _BAD_UNICODE_CATEGORIES:
            return FormatError(f"invalid character U+{ord(char):04X}")
    return None


def _skip_source_route(text: str, smtputf8: bool) -> int | FormatError:
    """Validate an obsolete source route ``@a,@b:`` and return the index after its ':'.

    RFC 5321 §4.1.1.3 and Appendix C: servers MUST accept the syntax and SHOULD ignore the route.
    """
    pos = 0
    while True:
        if not text.startswith("@", pos):
            return FormatError("invalid source route")
        start = pos + 1
        if text.startswith("[", start):
            close = text.find("]", start)
            end = -1 if close == -1 else close + 1
        else:
            end = min((i for i in (text.find(",", start), text.find(":", start)) if i != -1), default=-1)
        if end == -1 or end >= len(text) or text[end] not in ",:":
            return FormatError("invalid source route")
        hop = _check_domain(text[start:end])
        if isinstance(hop, FormatError):
            return FormatError(f"invalid source route: {hop.detail}")
        if text[end] == ":":
            return end + 1
        pos = end + 1


def _scan_quoted_string(text: str) -> int | FormatError:
    """Index just after the closing quote of the quoted string at ``text[0]``.

    RFC 5321 §4.1.2: qtextSMTP = %d32-33 / %d35-91 / %d93-126 (RFC 6531 adds UTF8-non-ascii);
    quoted-pairSMTP = "\\" %d32-126. Control characters were rejected before this is called.
    """
    i = 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 >= len(text) or not (" " <= text[i + 1] <= "~"):
                return FormatError("invalid quoted-pair in local part")
            i += 2
        elif char == '"':
            return i + 1
        else:
            i += 1
    return FormatError("unterminated quoted string")


def _check_dot_atom(local: str) -> FormatError | None:
    """RFC 5321 Dot-string = Atom *("." Atom); RFC 6531 lets atext include UTF8-non-ascii."""
    if local.startswith("."):
        return FormatError("leading dot in local part")
    if local.endswith("."):
        return FormatError("trailing dot in local part")
    if ".." in local:
        return FormatError("consecutive dots in local part")
    for char in local:
        if char == "." or char in _ATEXT:
            continue
        if char.isspace():
            return FormatError("space in local part")
        if not char.isascii() and not unicodedata.category(char).startswith("Z"):
            continue  # UTF8-non-ascii; only reachable with SMTPUTF8 (checked before)
        if char == '"':
            return FormatError("misplaced quote in local part")
        return FormatError(f"invalid character {char!r} in local part")
    return None


def _check_domain(domain: str) -> str | FormatError:
    """Domain or address literal; returns its canonical (lower-case) form."""
    if not domain:
        return FormatError("empty domain")
    if domain.startswith("[") or domain.endswith("]"):
        return _check_address_literal(domain)
    if domain.startswith("."):
        return FormatError("leading dot in domain")
    if domain.endswith("."):
        return FormatError("trailing dot in domain")
    if ".." in domain:
        return FormatError("consecutive dots in domain")
    for label in domain.split("."):
        error = _check_ldh_label(label) if label.isascii() else _check_u_label(label)
        if error is not None:
            return error
    return domain.lower()


def _check_ldh_label(label: str) -> FormatError | None:
    """RFC 5321 sub-domain = Let-dig [Ldh-str]; an "xn--" label must be a decodable A-label."""
    if len(label) > LABEL_MAX_OCTETS:
        return FormatError(f"domain label longer than {LABEL_MAX_OCTETS} octets")
    if not _LDH_LABEL.match(label):
        if any(char.isspace() for char in label):
            return FormatError("space in domain")
        if _LDH_CHARS.match(label):
            return FormatError("domain label starts or ends with a hyphen")
        bad = next(char for char in label if not (char.isalnum() or char == "-"))
        return FormatError(f"invalid character {bad!r} in domain")
    if label[:4].lower() == "xn--":
        try:
            label[4:].lower().encode("ascii").decode("punycode")
        except UnicodeError:
            return FormatError("invalid A-label in domain")  # RFC 5890 §2.3.2.1
    return None


def _check_u_label(label: str) -> FormatError | None:
    """A U-label (RFC 5890 §2.3.2.1), only reachable with SMTPUTF8 (RFC 6531 §3.3).

    A close approximation of IDNA2008 without its tables: NFC, letters, marks and digits (plus
    ASCII LDH), not starting with a mark, and an A-label form of at most 63 octets.
    """
    if not unicodedata.is_normalized("NFC", label):
        return FormatError("domain label is not in NFC form")
    if label.startswith("-") or label.endswith("-"):
        return FormatError("domain label starts or ends with a hyphen")
    if unicodedata.category(label[0]).startswith("M"):
        return FormatError("domain label starts with a combining mark")
    for char in label:
        if char.isascii():
            if char.isalnum() or char == "-":
                continue
        elif unicodedata.category(char)[0] in "LMN":
            continue
        if char.isspace() or unicodedata.category(char).startswith("Z"):
            return FormatError("space in domain")
        return FormatError(f"invalid character {char!r} in domain")
    if len(b"xn--" + label.lower().encode("punycode")) > LABEL_MAX_OCTETS:
        return FormatError(f"domain label longer than {LABEL_MAX_OCTETS} octets")
    return None


def _check_address_literal(domain: str) -> str | FormatError:
    """RFC 5321 §4.1.3: ``[IPv4]`` or ``[IPv6:...]``; returns the canonical literal."""
    if not (domain.startswith("[") and domain.endswith("]")) or len(domain) < 2:
        return FormatError("invalid address literal")
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        value = inner[5:]
        if "%" in value:  # zone ids are not part of the RFC 5321 grammar
            return FormatError("invalid IPv6 address literal")
        try:
            return f"[ipv6:{ipaddress.IPv6Address(value)}]"
        except ValueError:
            return FormatError("invalid IPv6 address literal")
    match = _IPV4_LITERAL.match(inner)
    if match is None:
        return FormatError("invalid address literal")
    octets = [int(group) for group in match.groups()]
    if any(octet > 255 for octet in octets):
        return FormatError("invalid IPv4 address literal")
    return "[" + ".".join(str(octet) for octet in octets) + "]"


def _canonical_local(local: str) -> str:
    """A quoted local part without needless quotes and escapes; other local parts unchanged."""
    if not (len(local) >= 2 and local.startswith('"') and local.endswith('"')):
        return local
    content = re.sub(r"\\(.)", r"\1", local[1:-1], flags=re.DOTALL)
    if content and _check_dot_atom(content) is None:
        return content
    return '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"'
