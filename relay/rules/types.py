"""The vocabulary of SMTP outcomes, shared by delivery (live replies) and feedback (bounce mail).

Every SMTP reply becomes an :class:`AttemptResult` (data, never an exception); the classifier turns
it into a :class:`Classified` with an outcome, a failure *scope* (site, message, recipient) and a
throttle signal. Only SITE-scope results touch throttling and pauses.
"""

from __future__ import annotations

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
        parts = [str(self.code) if self.code is not None else "000"]
        if self.enhanced:
            parts.append(self.enhanced)
        parts.append(self.text)
        return " ".join(parts)


class Outcome(Enum):
    DELIVERED = "delivered"
    TEMPFAIL = "tempfail"  # retry later
    PERMFAIL = "permfail"  # invalid (4) now


class Scope(Enum):
    SITE = "site"  # the destination refuses us: throttle / pause the site, retry the message
    MESSAGE = "message"  # this message (sender, content) was refused
    RECIPIENT = "recipient"  # this recipient was refused


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

    @property
    def sub_status(self) -> SubStatus | None:
        return self.category.invalid_sub_status if self.category else None
