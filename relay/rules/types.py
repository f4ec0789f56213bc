"""The vocabulary of SMTP outcomes, shared by delivery (live replies) and feedback (bounce mail).

Every SMTP reply becomes an :class:`AttemptResult` (data, never an exception); the classifier turns
it into a :class:`Classified` with an outcome, a failure *scope* (site, message, recipient) and a
throttle signal. Only SITE-scope results touch throttling and pauses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, StrEnum

from storage.records import SubStatus


class Stage(StrEnum):
    """Where in the SMTP dialogue a result came from."""

    DNS = "dns"
    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the reply to the DATA command (354 expected)
    DOT = "dot"  # the reply after the final "." — 2xx here means delivered
    POLICY = "policy"  # stopped by our own suppression re-check before the attempt


_LEADING_CODE = re.compile(r"([2-5][0-9]{2})(?:[ -]+|$)")
_LEADING_ENHANCED = re.compile(r"([245]\.[0-9]{1,3}\.[0-9]{1,3})(?:\s+|$)")


def reply_text(code: int | str | None, enhanced: str | None, text: str) -> str:
    """One reply as ``"550 5.1.1 text"``, for live replies and bounce reports alike.

    The code and enhanced code are not repeated when the text already starts with them: a DSN's
    Diagnostic-Code usually is the whole reply (``550 5.1.1 <x@y>: user unknown``) and comes with
    the same code and status. A leading enhanced code of the same class counts as the text's own
    (more precise than a report's summary status); any other leading number is just text."""
    rest = text.strip()
    lead = _LEADING_CODE.match(rest)
    if lead is not None and (code is None or lead.group(1) == str(code)):
        code, rest = lead.group(1), rest[lead.end():]
    lead_enh = _LEADING_ENHANCED.match(rest)
    if enhanced and lead_enh is not None and lead_enh.group(1)[0] == enhanced[0]:
        enhanced = None
    return " ".join(str(p) for p in (code, enhanced, rest) if p)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    stage: Stage
    code: int | None  # SMTP reply code; None for DNS/connect/TLS/timeouts
    enhanced: str | None  # RFC 3463 code like "5.1.1", if the reply had one
    text: str  # reply text (multi-line joined with " / ") or our description of the failure
    mx_host: str | None = None
    mx_ip: str | None = None
    duration_ms: int = 0
    tls: bool = False  # the transaction ran over STARTTLS
    local_ip: str | None = None  # our source address (the "send IP")

    @property
    def delivered(self) -> bool:
        return self.stage is Stage.DOT and self.code is not None and 200 <= self.code < 300

    def reply_line(self) -> str:
        """``"550 5.1.1 text"`` form, what rules match against."""
        return reply_text(self.code if self.code is not None else "000", self.enhanced, self.text)


class Outcome(Enum):
    DELIVERED = "delivered"
    TEMPFAIL = "tempfail"  # retry later
    PERMFAIL = "permfail"  # invalid (4) now


class Scope(Enum):
    SITE = "site"  # the destination refuses us: throttle / pause the site, retry the message
    MESSAGE = "message"  # this message (sender, content) was refused
    RECIPIENT = "recipient"  # this recipient was refused


class Role(Enum):
    """How the bounce classifier weighs a rule's verdict (a rule attribute in the TOML)."""

    NONE = "none"
    AUTHORITATIVE = "authoritative"  # said by the recipient's own system: the SMTP stage does not change it
    DOMAIN = "domain"  # about the domain/host, not the mailbox: the SMTP stage does not change it
    GENERIC = "generic"  # only a generic refusal word ("rejected", "policy"): the reason may be elsewhere


class Signal(Enum):
    """What a SITE-scope reply tells the throttle."""

    NONE = "none"
    RATE_LIMIT = "rate_limit"  # too many messages per time: cut the rate (AIMD decrease)
    CONN_LIMIT = "conn_limit"  # too many connections: cut concurrency and rate
    REPUTATION = "reputation"  # our IP is refused (RBL, reputation): pause


class Category(StrEnum):
    """The six categories shared by reply classification (invalid 40x) and bounce mail (50x)."""

    SERVER_ERROR = "server_error"
    IP_REJECTION = "ip_rejection"
    NOT_EXIST = "not_exist"
    SPAM_REJECTED = "spam_rejected"
    REJECTED = "rejected"
    OTHERS = "others"

    @property
    def invalid_sub_status(self) -> SubStatus:
        return _INVALID[self]

    @property
    def soft_bounce_sub_status(self) -> SubStatus:
        return _SOFT[self]


_INVALID = {
    Category.SERVER_ERROR: SubStatus.SERVER_ERROR,
    Category.IP_REJECTION: SubStatus.IP_REJECTION,
    Category.NOT_EXIST: SubStatus.NOT_EXIST,
    Category.SPAM_REJECTED: SubStatus.JUNK_MAIL,
    Category.REJECTED: SubStatus.REJECTED,
    Category.OTHERS: SubStatus.OTHERS,
}
_SOFT = {
    Category.SERVER_ERROR: SubStatus.SB_SERVER_ERROR,
    Category.IP_REJECTION: SubStatus.SB_IP_REJECTION,
    Category.NOT_EXIST: SubStatus.SB_NOT_EXIST,
    Category.SPAM_REJECTED: SubStatus.SB_SPAM_REJECTED,
    Category.REJECTED: SubStatus.SB_REJECTED,
    Category.OTHERS: SubStatus.SB_OTHERS,
}


class PauseReason(StrEnum):
    DOMAIN_LIMIT = "domain_limit"  # limits of the receiving domain
    IP_REPUTATION = "ip_reputation"  # our IP's reputation
    CONNECTION_FREQUENCY = "connection_frequency"  # frequency of our IP's connections
    ADMIN = "admin"  # an operator paused it


@dataclass(frozen=True, slots=True)
class Classified:
    outcome: Outcome
    scope: Scope
    category: Category | None  # None when delivered
    signal: Signal = Signal.NONE
    pause: PauseReason | None = None  # SITE scope only: pause the queue with this reason
    adds_bounce: bool = False  # "user unknown": enter the bounce list (SPEC §7)
    rule: str = ""  # which rule matched (shown in the send log)
    fallback: bool = False  # no phrase rule recognised the reply (code/status only): the review loop keeps it

    @property
    def sub_status(self) -> SubStatus | None:
        return self.category.invalid_sub_status if self.category else None
