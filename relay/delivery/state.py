"""Delivery state of spooled messages: one DeliveryItem per pending recipient.

The spool entry (content + envelope) is written once at submission. What changes afterwards —
attempts, the next attempt time, which recipients are done — lives in ``spool/meta/<id>.json``,
rewritten atomically after an outcome that leaves recipients pending. A message with no meta file
has all of its SENDING recipients pending with no attempts (it was never tried).

Start-up rebuilds the scheduler from these two files (:func:`load_pending`), so a restart resumes
every recipient with its attempt count and next time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from relay.spool import Spool, SpoolError
from storage.records import Status, SubmissionRecord

log = logging.getLogger("mailrelay.delivery.state")


@dataclass(slots=True, eq=False)
class DeliveryItem:
    """One recipient of one message, waiting for (another) attempt. Small: bodies stay in the spool."""

    email_id: str
    recipient: str
    domain: str
    account_id: int
    api_user: str
    sender: str
    first_seen: float  # epoch seconds of the submission (max age counts from here)
    size: int
    smtputf8: bool = False
    attempts: int = 0
    next_at: float = 0.0
    last_reason: str = ""
    done: bool = False
    checked_at: float = 0.0  # when the suppression lists were last checked for it (epoch seconds)
    label: str | None = None  # the message's label (X-Label), for the Feedback-ID header
    opt_out: tuple[str, ...] = ()  # features the message turned off (MessageRecord.opt_out)

    @property
    def queue_key(self) -> tuple[str, str]:
        return (self.api_user, self.domain)


@dataclass(slots=True)
class MessageState:
    """The pending recipients of one spooled message."""

    email_id: str
    items: dict[str, DeliveryItem] = field(default_factory=dict)
    has_meta: bool = False  # a meta file may exist (written, or found at start-up)

    def encode(self) -> bytes:
        pending = {r: [i.attempts, i.next_at, i.last_reason] for r, i in self.items.items() if not i.done}
        return json.dumps({"v": 1, "rcpts": pending}, separators=(",", ":")).encode()

    @property
    def finished(self) -> bool:
        return all(i.done for i in self.items.values())


def _needs_smtputf8(record: SubmissionRecord) -> bool:
    if not record.message.sender.isascii():
        return True
    return any(not r.recipient.isascii() for r in record.recipients)


def items_from_record(record: SubmissionRecord, meta: bytes | None = None) -> MessageState:
    """Pending recipients of a spooled message (all SENDING ones, narrowed by its meta if any)."""
    m = record.message
    state = MessageState(m.email_id, has_meta=meta is not None)
    saved: dict[str, list[object]] | None = None
    if meta is not None:
        try:
            saved = json.loads(meta)["rcpts"]
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable delivery state; retrying all recipients",
                        extra={"event": "delivery_meta_bad", "email_id": m.email_id})
    smtputf8 = _needs_smtputf8(record)
    first_seen = m.request_time.timestamp()
    for r in record.recipients:
        if r.status is not Status.SENDING:
            continue
        if saved is not None and r.recipient not in saved:
            continue  # done before the restart
        item = DeliveryItem(
            email_id=m.email_id, recipient=r.recipient, domain=r.recipient.rpartition("@")[2].lower(),
            account_id=m.account_id, api_user=m.api_user, sender=m.sender, first_seen=first_seen,
            size=m.size, smtputf8=smtputf8, label=m.label, opt_out=m.opt_out,
        )
        if saved is not None:
            attempts, next_at, reason = saved[r.recipient]
            item.attempts, item.next_at, item.last_reason = int(attempts), float(next_at), str(reason)  # type: ignore[call-overload,arg-type]
        state.items[r.recipient] = item
    return state


def load_pending(spool: Spool) -> Iterator[MessageState]:
    """Every spooled message with pending recipients (blocking: run in a thread)."""
    for email_id in spool.enumerate():
        try:
            record = spool.read_envelope_sync(email_id)
        except (OSError, SpoolError, ValueError, KeyError) as e:
            log.error("unreadable spool entry left in place",
                      extra={"event": "spool_entry_bad", "email_id": email_id, "error": str(e)})
            continue
        state = items_from_record(record, spool.read_meta_sync(email_id))
        if state.items:
            yield state
        else:
            spool.remove_sync(email_id)  # nothing left to deliver (all done or all refused)
