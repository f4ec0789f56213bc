"""Every submission reply that carries a decision, in one place.

Policy verdicts become SMTP replies here (policies stay protocol-agnostic). The reason strings
come from ``policies.reasons`` unchanged, so the customer sees the exact SPEC §3 text.
"""

from __future__ import annotations

from policies import Verdict
from storage.records import SubStatus

RCPT_OK = "250 2.1.5 Ok"
MAIL_OK = "250 2.1.0 Ok"
RATE_LIMITED = "451 4.7.1 Message rate limit exceeded for this API_USER, try again later"
NOT_AUTHENTICATED = "530 5.7.0 Authentication required"
# The session's API_USER was revoked or got a new key since its AUTH: reconnect and authenticate again.
CREDENTIALS_GONE = "421 4.7.0 The credentials of this session are no longer valid, closing connection"
CREDENTIALS_CHECK_FAILED = "451 4.3.0 Temporary failure checking credentials, try again later"
NO_VALID_RECIPIENTS = "554 5.5.1 No valid recipients"
LOOKUP_FAILED = "451 4.3.0 Temporary failure checking recipient, try again later"
STORE_FAILED = "451 4.3.0 Temporary failure storing message, try again later"
INSUFFICIENT_STORAGE = "452 4.3.1 Insufficient system storage"  # below the free-space reserve, or disk full
BAD_EMAIL_TYPE = "550 5.6.0 Email type header must be transactional or marketing"
BAD_CUSTOM_ARGS = "550 5.6.0 X-Mailrelay-Custom-Args must be a JSON object of at most 1 KB: "
SENDER_SYNTAX = "553 5.1.7 Format Error: "


def queued(email_id: str) -> str:
    return f"250 2.0.0 Ok: queued as {email_id}"


def for_verdict(v: Verdict) -> str:
    """The 5xx reply for a rejecting verdict; its text holds the exact reason."""
    reason = v.reason or ""
    if v.sub_status == SubStatus.FORMAT_ERROR:
        return f"553 5.1.3 {reason}: {v.detail}" if v.detail else f"553 5.1.3 {reason}"
    return f"550 5.7.1 {reason}"
