"""Domain records shared by every layer: statuses, suppression entries, accounts, status rows.

These are the typed values that cross module boundaries (no dicts). Times are timezone-aware UTC
``datetime`` objects here; the backends store them as integer epoch milliseconds and convert in
``storage/codec.py`` only.

Numeric codes follow the EngageLab email REST API (SPEC §4) so customers' tooling can read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import IntEnum, StrEnum

#: The API_USER scope value meaning "every API user of the account" (SPEC §1, §7).
ALL_API_USERS = "all"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Status(IntEnum):
    SENDING = 18
    DELIVERED = 1
    SOFT_BOUNCE = 5
    INVALID = 4


class SubStatus(IntEnum):
    # invalid (4): from SMTP replies or our policies
    BLACKLIST = 401
    UNSUBSCRIBE = 402
    SERVER_ERROR = 403
    FORMAT_ERROR = 404
    IP_REJECTION = 405
    NOT_EXIST = 406
    JUNK_MAIL = 407
    REJECTED = 408
    OTHERS = 409
    # soft bounce (5): from the returned bounce mail
    SB_SERVER_ERROR = 503
    SB_IP_REJECTION = 505
    SB_NOT_EXIST = 506
    SB_SPAM_REJECTED = 507
    SB_REJECTED = 508
    SB_OTHERS = 509


class ListKind(StrEnum):
    COMPLAINT = "complaint"
    BLOCK = "block"
    BOUNCE = "bounce"
    UNSUBSCRIBE = "unsubscribe"
    NO_INTERCEPTION = "no-interception"


class EmailType(StrEnum):
    TRANSACTIONAL = "transactional"
    MARKETING = "marketing"


class UnsubscribeReason(IntEnum):
    """EngageLab's unsubscribe reason codes (SPEC §7)."""

    NOT_WANTED = 0  # "I don't want to receive such mail anymore"
    NOT_MY_SUBSCRIPTION = 1  # "This is not my subscription"
    SPAM = 2  # "This is spam"
    FRAUD = 3  # "This is a fraudulent email"

    @property
    def text(self) -> str:
        return _UNSUBSCRIBE_TEXT[self]


_UNSUBSCRIBE_TEXT = {
    UnsubscribeReason.NOT_WANTED: "I don't want to receive such mail anymore",
    UnsubscribeReason.NOT_MY_SUBSCRIPTION: "This is not my subscription",
    UnsubscribeReason.SPAM: "This is spam",
    UnsubscribeReason.FRAUD: "This is a fraudulent email",
}


class LogKind(StrEnum):
    """What a send-log line records."""

    ACCEPTED = "accepted"  # taken into the spool at submission
    POLICY = "policy"  # stopped by a suppression policy (at RCPT or before an attempt)
    ATTEMPT = "attempt"  # one delivery attempt and its reply
    FEEDBACK = "feedback"  # bounce / complaint / open / click / unsubscribe event


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Label:
    """A label of an account: EngageLab's numeric ``label_id`` for a name that mail carries."""

    label_id: int
    account_id: int
    name: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ApiUser:
    name: str
    account_id: int
    account_name: str
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class SuppressionEntry:
    """One entry of one of the five lists.

    ``value`` is a lower-cased address (``user@example.com``) or, for block and
    no-interception entries, a bare receiving domain (``example.com``).
    ``api_user`` is one API_USER name or :data:`ALL_API_USERS`.
    """

    account_id: int
    kind: ListKind
    value: str
    api_user: str = ALL_API_USERS
    created_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None
    hit_count: int = 1
    reason_code: int | None = None  # unsubscribe reason (UnsubscribeReason)
    reason: str = ""  # free text: bounce diagnostic, complaint feedback type, note


@dataclass(frozen=True, slots=True)
class SuppressionHits:
    """Which lists match one recipient, from a single storage round trip."""

    no_interception: bool = False
    complaint: bool = False
    block: bool = False
    bounce_until: datetime | None = None  # latest unexpired bounce-list expiry, if any
    unsubscribe: bool = False


class EventType(StrEnum):
    """What a recipient did with a message (README "Unsubscribe links, open and click tracking")."""

    UNSUBSCRIBE = "unsubscribe"
    OPEN = "open"
    CLICK = "click"


@dataclass(frozen=True, slots=True)
class RecipientEvent:
    """The details of an unsubscribe, open or click (on a ``feedback`` log line)."""

    type: EventType
    ip: str = ""
    user_agent: str = ""
    link: str | None = None  # the original URL of a click
    reason_type: int | None = None  # the unsubscribe reason (UnsubscribeReason), when one was given
    machine: bool = False  # an open fetched by a mail privacy proxy, not by the person


@dataclass(frozen=True, slots=True)
class AccountSettings:
    """An account's recipient-facing features (defaults: List-Unsubscribe on, tracking off)."""

    list_unsubscribe: bool = True
    track_opens: bool = False
    track_clicks: bool = False


@dataclass(frozen=True, slots=True)
class ApiUserSettings:
    """One API_USER's overrides of its account's :class:`AccountSettings` (None: inherit)."""

    list_unsubscribe: bool | None = None
    track_opens: bool | None = None
    track_clicks: bool | None = None

    def over(self, account: AccountSettings) -> AccountSettings:
        """The settings that apply to this API_USER's mail under ``account``'s."""
        return AccountSettings(
            account.list_unsubscribe if self.list_unsubscribe is None else self.list_unsubscribe,
            account.track_opens if self.track_opens is None else self.track_opens,
            account.track_clicks if self.track_clicks is None else self.track_clicks,
        )


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of a recipient's send log."""

    at: datetime
    kind: LogKind
    text: str = ""
    code: int | None = None  # SMTP reply code
    enhanced: str | None = None  # RFC 3463 code, e.g. "5.1.1"
    mx_host: str | None = None
    mx_ip: str | None = None
    duration_ms: int | None = None
    rule: str | None = None  # which classification rule / policy decided
    event: RecipientEvent | None = None  # unsubscribe / open / click details


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One submitted message (the envelope-level facts shared by its recipients)."""

    email_id: str
    account_id: int
    api_user: str
    sender: str
    subject: str
    label: str | None
    email_type: EmailType | None
    size: int
    request_time: datetime
    request_ip: str
    node: str = ""
    message_id: str | None = None  # the Message-ID header (bounce matching when the return path is lost)
    # Features the message turned off for itself (X-Mailrelay-Track / X-Mailrelay-Unsubscribe: off):
    # "opens", "clicks", "list-unsubscribe". Kept in the spool envelope only (delivery reads it).
    opt_out: tuple[str, ...] = ()
    # the customer's custom_args (compact JSON of an object, relay/custom_args.py): every webhook
    # event of the message's recipients carries them
    custom_args: str | None = None


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """What submission decided for one recipient: accepted (SENDING) or intercepted (INVALID)."""

    recipient: str
    status: Status
    sub_status: SubStatus | None = None
    reason: str = ""
    rule: str | None = None  # policy name for intercepted recipients


@dataclass(frozen=True, slots=True)
class SubmissionRecord:
    """Everything the status table learns at submission: one message and its recipients."""

    message: MessageRecord
    recipients: tuple[RecipientOutcome, ...]


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """The status of one (message, recipient), as the status search returns it (SPEC §4)."""

    email_id: str
    account_id: int
    api_user: str
    sender: str
    recipient: str
    domain: str
    subject: str
    label: str | None
    email_type: EmailType | None
    request_time: datetime
    request_ip: str
    status: Status
    sub_status: SubStatus | None
    reason: str
    updated_at: datetime
    send_time: datetime | None = None
    send_ip: str | None = None
    mx_host: str | None = None
    mx_ip: str | None = None
    log: tuple[LogEntry, ...] = ()

    @property
    def key(self) -> StatusKey:
        """This record's place in the search order (the cursor of the page after it)."""
        return StatusKey(self.request_time, self.email_id, self.recipient)


@dataclass(frozen=True, slots=True)
class StatusFilter:
    """Status search filters (SPEC §4). ``None`` means "no filter on this field"."""

    account_id: int | None = None  # None only for operators (all accounts)
    recipient: str | None = None
    email_ids: tuple[str, ...] = ()
    # per-recipient ids (EngageLab's ``EMAIL_ID$recipient``) as (email_id, recipient) pairs: a
    # record matches when it is one of these pairs or one of ``email_ids`` (either list may be empty)
    recipient_ids: tuple[tuple[str, str], ...] = ()
    api_user: str | None = None
    domain: str | None = None
    label: str | None = None
    email_type: EmailType | None = None
    statuses: tuple[Status, ...] = ()
    sub_statuses: tuple[SubStatus, ...] = ()
    start: datetime | None = None  # request_time >= start
    end: datetime | None = None  # request_time < end


@dataclass(frozen=True, slots=True)
class StatsFilter:
    """Which delivery statistics to sum: one account's, for whole days in a time zone of whole hours.
    Empty tuples mean "every value"."""

    account_id: int
    start: date  # first day, inclusive
    end: date  # last day, inclusive
    tz_hours: int = 0  # the days' offset from UTC, -12..14
    api_users: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # label names ("" for mail without a label)


@dataclass(frozen=True, slots=True)
class StatsCount:
    """How many recipients requested on ``day`` (in the filter's time zone) are in this status now."""

    day: date
    api_user: str
    domain: str
    label: str  # "" for none
    status: Status
    sub_status: SubStatus | None
    count: int


@dataclass(frozen=True, slots=True)
class StatusKey:
    """A status record's place in the search order (newest first): the keyset-paging cursor.

    A page "after" a key holds the records strictly older in (request_time, email_id, recipient)
    order, so paging never skips or repeats a record, however many arrive meanwhile."""

    request_time: datetime
    email_id: str
    recipient: str


class ExportStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


#: The only export type so far: per-recipient status records (the status search, without its 30-day cap).
EXPORT_EMAIL_STATUS = "email_status"


@dataclass(frozen=True, slots=True)
class ExportTask:
    """One offline export: its filter, its state, and (once it succeeded) its file's facts.

    ``node`` is the node that claimed it (its file is in that node's data directory);
    ``expired_at`` is set when the file was deleted after the retention period (the row stays).
    """

    id: str
    account_id: int
    kind: str
    filter: StatusFilter
    status: ExportStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rows_done: int = 0
    rows_total: int | None = None
    file_size: int | None = None
    attempts: int = 0
    node: str = ""
    error: str = ""
    expired_at: datetime | None = None


class DkimAlgorithm(StrEnum):
    RSA = "rsa"  # rsa-sha256, 2048-bit keys
    ED25519 = "ed25519"  # ed25519-sha256 (RFC 8463)


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One DKIM signing key (``domain`` lower-case A-labels; the DNS name is
    ``selector._domainkey.domain``).

    ``private_key`` is what dkimpy signs with: PEM (PKCS#1) for RSA, the base64 seed for ed25519;
    ``public_key`` is the base64 ``p=`` value of the DNS record. ``account_id`` None: the key signs
    any account's mail from its domain; else only that account's."""

    domain: str
    selector: str
    algorithm: DkimAlgorithm
    private_key: str
    public_key: str
    created_at: datetime
    account_id: int | None = None
    account_name: str | None = None  # filled when read back (listing)


@dataclass(frozen=True, slots=True)
class NotExistReport:
    """One more "does not exist" report for ``address``: the bounce-list entry's count goes up and
    its expiry is ``expiry_for(new count)`` from the report time (the rule is the caller's)."""

    account_id: int
    address: str
    expiry_for: Callable[[int], timedelta]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FeedbackEffects:
    """Everything one received bounce or complaint changes for one recipient, written in ONE
    transaction with its ``seen_key`` mark: all of it, or (seen before / a failure) none of it."""

    seen_key: str
    at: datetime
    email_id: str
    recipient: str
    log: LogEntry
    status: Status | None = None  # None: the status stays (a complaint adds a log line only)
    sub_status: SubStatus | None = None
    reason: str = ""
    entries: tuple[SuppressionEntry, ...] = ()
    not_exist: NotExistReport | None = None
