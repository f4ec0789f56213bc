"""The review loop's storage: replies that no phrase rule recognised, grouped by normalised text.

Writers batch (relay/rules/review.py): :meth:`SqlUnclassifiedRepo.record` upserts many texts in one
group-committed transaction, so the hot paths never wait on it. ``decided`` lists the final
records (invalid, soft bounce) with the send-log line that decided them, for ``rules reapply``.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from storage import codec
from storage.executor import Executor, Op
from storage.records import LogKind, Status, SubStatus

#: example messages kept per text
MAX_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class UnclassifiedHit:
    """Sightings of one normalised text since the last write (what a writer batches)."""

    source: str  # delivery | feedback
    text: str  # normalised
    sample: str  # the newest reply as received (capped by the writer)
    rule: str  # the fallback rule that decided it
    code: int | None
    enhanced: str | None
    count: int
    first_seen: datetime
    last_seen: datetime
    examples: tuple[tuple[str, str], ...] = ()  # (email_id, recipient)


@dataclass(frozen=True, slots=True)
class UnclassifiedReply:
    """One stored text with its totals and example messages."""

    source: str
    text: str
    sample: str
    rule: str
    code: int | None
    enhanced: str | None
    count: int
    first_seen: datetime
    last_seen: datetime
    examples: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class DecidedRecord:
    """A final recipient record and the send-log line that decided it."""

    email_id: str
    recipient: str
    account_id: int
    status: Status
    sub_status: SubStatus | None
    reason: str
    mx_host: str | None
    kind: LogKind
    code: int | None
    enhanced: str | None
    text: str
    rule: str


class SqlUnclassifiedRepo:
    def __init__(self, ex: Executor) -> None:
        self._ex = ex

    async def record(self, hits: Sequence[UnclassifiedHit]) -> None:
        """Add the sightings of ``hits`` (one transaction): counts add up, first/last seen widen,
        the newest sample wins, examples are kept until a text has :data:`MAX_EXAMPLES`."""
        if not hits:
            return
        rows = [{"source": h.source, "text": h.text, "sample": h.sample, "rule": h.rule, "code": h.code,
                 "enhanced": h.enhanced, "count": h.count, "first_seen": codec.to_ms(h.first_seen),
                 "last_seen": codec.to_ms(h.last_seen)} for h in hits]
        examples = [{"source": h.source, "text": h.text, "email_id": e, "recipient": r, "cap": MAX_EXAMPLES}
                    for h in hits for e, r in h.examples[:MAX_EXAMPLES]]
        # run row by row in the same transaction: each cap check sees the examples written before it
        ops = [Op("unclassified.upsert", rows)] + ([Op("unclassified.example", examples)] if examples else [])
        await self._ex.write_batch(ops)

    async def list(self, source: str | None = None, since: datetime | None = None,
                   limit: int = 100) -> builtins.list[UnclassifiedReply]:
        """Most frequent first (then the most recent)."""
        rows = await self._ex.fetch("unclassified.list", {
            "source": source or "", "since": codec.to_ms(since) if since else codec.MIN_MS, "limit": limit})
        out: list[UnclassifiedReply] = []
        current: UnclassifiedReply | None = None
        examples: list[tuple[str, str]] = []
        for r in rows:
            if current is None or (current.source, current.text) != (r["source"], r["text"]):
                if current is not None:
                    out.append(_with_examples(current, examples))
                current = UnclassifiedReply(
                    source=r["source"], text=r["text"], sample=r["sample"], rule=r["rule"], code=r["code"],
                    enhanced=r["enhanced"], count=int(r["count"]), first_seen=codec.from_ms(r["first_seen"]),
                    last_seen=codec.from_ms(r["last_seen"]), examples=())
                examples = []
            if r["email_id"] is not None:
                examples.append((r["email_id"], r["recipient"]))
        if current is not None:
            out.append(_with_examples(current, examples))
        return out

    async def remove(self, keys: Sequence[tuple[str, str]]) -> int:
        """Drop texts (source, text) with their examples (a rule covers them now)."""
        if not keys:
            return 0
        rows = [{"source": s, "text": t} for s, t in keys]
        counts = await self._ex.write_batch([Op("unclassified.delete", [row]) for row in rows]
                                            + [Op("unclassified.delete_examples", rows)])
        return sum(max(c, 0) for c in counts[:len(rows)])

    async def decided(self, since: datetime, after: tuple[str, str] = ("", ""),
                      limit: int = 500) -> builtins.list[DecidedRecord]:
        """Invalid and soft-bounce records changed at or after ``since``, in (email_id, recipient)
        order after ``after``, each with the last send-log line that is not an open/click event."""
        rows = await self._ex.fetch("unclassified.decided", {
            "since": codec.to_ms(since), "after_email": after[0], "after_rcpt": after[1], "limit": limit})
        return [DecidedRecord(
            email_id=r["email_id"], recipient=r["recipient"], account_id=int(r["account_id"]),
            status=Status(int(r["status"])),
            sub_status=SubStatus(int(r["sub_status"])) if r["sub_status"] is not None else None,
            reason=r["reason"], mx_host=r["mx_host"], kind=LogKind(r["kind"]), code=r["code"],
            enhanced=r["enhanced"], text=r["text"], rule=r["rule"] or "") for r in rows]


def _with_examples(reply: UnclassifiedReply, examples: list[tuple[str, str]]) -> UnclassifiedReply:
    return UnclassifiedReply(reply.source, reply.text, reply.sample, reply.rule, reply.code, reply.enhanced,
                             reply.count, reply.first_seen, reply.last_seen, tuple(examples))
