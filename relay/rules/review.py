"""The review loop's writer: replies that no phrase rule recognised, counted by normalised text.

Delivery (a remote SMTP reply decided by a code-class default or a status-code rule) and feedback
(a bounce whose diagnostic fell to a fallback) call :meth:`ReviewRecorder.note`, which only updates
an in-memory table: no I/O, no await, bounded work (:func:`normalise` reads at most
:data:`MAX_INPUT` characters, token by token, without regexes). A timer writes the table a few
seconds later in ONE storage call (upserts, group-committed), so the mail path never waits on it.

What a crash costs: the sightings of the last :data:`FLUSH_INTERVAL` seconds (review data, never
mail or statuses). While the database is down the table is kept, up to :data:`MAX_TEXTS` texts.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from storage.protocols import UnclassifiedRepo
from storage.unclassified import MAX_EXAMPLES, UnclassifiedHit, UnclassifiedReply

log = logging.getLogger("mailrelay.rules.review")

__all__ = ["FLUSH_INTERVAL", "MAX_TEXTS", "ReviewRecorder", "normalise", "unclassified_json"]

#: characters of a reply :func:`normalise` reads; of a sample that is stored
MAX_INPUT = 1000
MAX_SAMPLE = 500
#: tokens and characters a normalised text keeps
MAX_TOKENS = 60
MAX_TEXT = 300
#: texts buffered between writes (more distinct texts than this in one interval are dropped, counted)
MAX_TEXTS = 2000
FLUSH_INTERVAL = 2.0

ADDRESS = "<addr>"
NUMBER = "#"
_PUNCT = "<>()[]{},;:.!?\"'`"


def _is_code(token: str) -> bool:
    """A reply code ("550") or an enhanced status code ("5.1.1"): structure, kept as is."""
    if len(token) == 3 and token.isdigit():
        return token[0] in "2345"
    parts = token.split(".")
    return (len(parts) == 3 and token[0] in "245" and all(p.isdigit() and 0 < len(p) <= 3 for p in parts))


def normalise(text: str) -> str:
    """The same reply with other addresses, ids, hosts' numbers and dates counts as one text:
    lower case, every token with an ``@`` becomes ``<addr>``, every other token holding a digit
    becomes ``#`` (reply and enhanced codes stay), whitespace collapses. Linear, capped."""
    out: list[str] = []
    for raw in text[:MAX_INPUT].lower().split():
        if len(out) >= MAX_TOKENS:
            break
        token = "".join(ch for ch in raw if ch.isprintable())
        if not token:
            continue
        if "@" in token:
            token = ADDRESS
        elif any(ch.isdigit() for ch in token):
            bare = token.strip(_PUNCT)
            if len(bare) > 4 and bare[3] == "-" and _is_code(bare[:3]):  # "550-5.1.1": a multi-line reply's line
                out.append(bare[:3])
                bare = bare[4:]
            token = bare if _is_code(bare) else NUMBER
        out.append(token)
    return " ".join(out)[:MAX_TEXT]


@dataclass
class _Pending:
    sample: str
    rule: str
    code: int | None
    enhanced: str | None
    first: datetime
    last: datetime
    count: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)


class ReviewRecorder:
    def __init__(self, repo: UnclassifiedRepo, *, interval: float = FLUSH_INTERVAL,
                 max_texts: int = MAX_TEXTS) -> None:
        self.repo = repo
        self.interval = interval
        self.max_texts = max_texts
        self.dropped = 0  # sightings not kept (too many distinct texts between two writes)
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._timer: asyncio.Task[None] | None = None
        self._closed = False
        self._writing = asyncio.Lock()  # close() waits for a write in progress

    def note(self, source: str, reply: str, rule: str, code: int | None, enhanced: str | None,
             email_id: str, recipient: str, at: datetime | None = None) -> None:
        """One reply decided by ``rule`` (a fallback) for (email_id, recipient). Never blocks."""
        text = normalise(reply)
        if not text:
            return
        at = at or datetime.now(UTC)
        key = (source, text)
        p = self._pending.get(key)
        if p is None:
            if len(self._pending) >= self.max_texts:
                self.dropped += 1
                return
            p = self._pending[key] = _Pending(reply[:MAX_SAMPLE], rule, code, enhanced, at, at)
        elif at >= p.last:
            p.sample, p.rule, p.code, p.enhanced = reply[:MAX_SAMPLE], rule, code, enhanced
        p.count += 1
        p.first, p.last = min(p.first, at), max(p.last, at)
        if len(p.examples) < MAX_EXAMPLES and (email_id, recipient) not in p.examples:
            p.examples.append((email_id, recipient))
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is None and not self._closed:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside a loop (a script): flush() writes it
                return
            self._timer = loop.create_task(self._flush_later(), name="review-flush")

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(self.interval)
        finally:
            self._timer = None
        await self.flush()

    async def flush(self) -> None:
        """Write what was noted since the last write (one storage call). On a storage error the
        sightings stay buffered for the next write."""
        async with self._writing:
            await self._write()

    async def _write(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        hits = [UnclassifiedHit(source=s, text=t, sample=p.sample, rule=p.rule, code=p.code, enhanced=p.enhanced,
                                count=p.count, first_seen=p.first, last_seen=p.last, examples=tuple(p.examples))
                for (s, t), p in batch.items()]
        try:
            await self.repo.record(hits)
        except Exception as e:  # the database is down: keep them (bounded), try again later
            log.warning(f"unclassified replies not written yet: {e}", extra={"event": "review_write_failed"})
            for key, p in batch.items():
                self._merge_back(key, p)
            self._schedule()

    def _merge_back(self, key: tuple[str, str], p: _Pending) -> None:
        cur = self._pending.get(key)
        if cur is None:
            if len(self._pending) >= self.max_texts:
                self.dropped += p.count
                return
            self._pending[key] = p
            return
        cur.count += p.count
        cur.first = min(cur.first, p.first)
        if p.last > cur.last:
            cur.last, cur.sample, cur.rule, cur.code, cur.enhanced = p.last, p.sample, p.rule, p.code, p.enhanced
        for ex in p.examples:
            if len(cur.examples) < MAX_EXAMPLES and ex not in cur.examples:
                cur.examples.append(ex)

    async def close(self) -> None:
        """Stop the timer and write what is left (at shutdown, before the storage closes)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.flush()


def unclassified_json(r: UnclassifiedReply) -> dict[str, object]:
    """One stored text as `rules unclassified --json` and GET /v1/rules/unclassified show it."""
    return {"source": r.source, "text": r.text, "count": r.count, "first_seen": r.first_seen.isoformat(),
            "last_seen": r.last_seen.isoformat(), "email_ids": list(dict.fromkeys(e for e, _ in r.examples)),
            "sample": r.sample, "rule": r.rule, "code": r.code, "enhanced": r.enhanced}
