"""`mailrelay rules reapply --since DATE`: classify again the final records a fallback decided.

Which records: invalid (delivery) and soft-bounce (feedback) records changed since DATE whose
deciding send-log line was classified by a fallback (a code-class default or a rule by status
code alone) or by a site rule. Their reply (the send log keeps it) goes through today's rules,
site rules first; a different verdict changes the record's status and sub-status, and the bounce
list through the one suppression service (``policies/suppression.py``): a missing mailbox enters
it, a reply that no longer says so takes the address off. The list change is written before the
status, so a crash in between is repaired by running the command again.

Idempotent: a second run finds every record already as the rules say and changes nothing.
Records still being sent are left to delivery, which classifies their next reply with the new
rules once the server has reloaded them. The unclassified texts a rule now covers are dropped
from ``rules unclassified``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from policies import SuppressionService, TencentRules
from relay.feedback.classify import BounceClassifier
from relay.rules.reply import ReplyRules
from relay.rules.site import SITE_PREFIX
from relay.rules.types import AttemptResult, Outcome, Stage
from storage.protocols import Storage
from storage.records import LogKind, Status, SubStatus
from storage.unclassified import DecidedRecord

__all__ = ["Change", "ReapplyReport", "reapply"]

CHUNK = 500
_STAGES = frozenset(s.value for s in Stage)
BOUNCE_PREFIX = "bounce: "  # feedback's send-log text (relay/feedback/ingest.py)


@dataclass(frozen=True, slots=True)
class Change:
    email_id: str
    recipient: str
    source: str  # delivery | feedback
    rule: str  # the rule that decides now
    status_before: int
    sub_status_before: int | None
    status: int
    sub_status: int | None
    bounce_list: str | None  # "added" | "removed" | None

    def json(self) -> dict[str, Any]:
        return {"email_id": self.email_id, "recipient": self.recipient, "source": self.source, "rule": self.rule,
                "status_before": self.status_before, "sub_status_before": self.sub_status_before,
                "status": self.status, "sub_status": self.sub_status, "bounce_list": self.bounce_list}


@dataclass
class ReapplyReport:
    since: datetime
    examined: int = 0  # final records a fallback or a site rule had decided
    changes: list[Change] = field(default_factory=list)
    resolved: list[tuple[str, str]] = field(default_factory=list)  # (source, text) now covered by a rule

    def json(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "examined": self.examined, "changed": len(self.changes),
                "changes": [c.json() for c in self.changes],
                "resolved": [{"source": s, "text": t} for s, t in self.resolved]}


@dataclass(frozen=True, slots=True)
class _Verdict:
    source: str
    rule: str
    status: Status
    sub_status: SubStatus
    bounce: bool  # the address belongs on the bounce list


def _delivery(rec: DecidedRecord, rules: ReplyRules) -> _Verdict | None:
    if rec.kind is not LogKind.ATTEMPT or rec.status is not Status.INVALID or rec.code is None:
        return None
    if not (rules.is_fallback(rec.rule) or rec.rule.startswith(SITE_PREFIX)):
        return None
    prefix, sep, text = rec.text.partition(": ")
    if not sep or prefix not in _STAGES:
        return None
    c = rules.classify(AttemptResult(Stage(prefix), rec.code, rec.enhanced, text))
    if c.outcome is Outcome.DELIVERED or c.sub_status is None:
        return None
    # retries are over for this record: it stays invalid whatever the rule says about retrying
    return _Verdict("delivery", c.rule, Status.INVALID, c.sub_status, c.adds_bounce)


def _feedback(rec: DecidedRecord, bounce: BounceClassifier) -> _Verdict | None:
    if rec.kind is not LogKind.FEEDBACK or rec.status is not Status.SOFT_BOUNCE:
        return None
    if not rec.text.startswith(BOUNCE_PREFIX):
        return None
    if not (bounce.is_fallback(rec.rule) or rec.rule.startswith(SITE_PREFIX)):
        return None
    v = bounce.classify(rec.text[len(BOUNCE_PREFIX):], rec.code, rec.enhanced)
    sub = v.category.soft_bounce_sub_status
    return _Verdict("feedback", v.rule, Status.SOFT_BOUNCE, sub, sub is SubStatus.SB_NOT_EXIST)


async def _apply(storage: Storage, lists: SuppressionService, rec: DecidedRecord, v: _Verdict,
                 now: datetime) -> Change:
    had = rec.sub_status in (SubStatus.NOT_EXIST, SubStatus.SB_NOT_EXIST)
    listed: str | None = None
    if v.bounce and not had:
        hosts = (rec.mx_host,) if rec.mx_host else ()
        await lists.report_not_exist(rec.account_id, rec.recipient, now, hosts, reason=rec.reason[:500])
        listed = "added"
    elif had and not v.bounce and await lists.withdraw_not_exist(rec.account_id, rec.recipient):
        listed = "removed"
    await storage.statuses.update_status(rec.email_id, rec.recipient, v.status, v.sub_status, rec.reason)
    return Change(rec.email_id, rec.recipient, v.source, v.rule, int(rec.status),
                  int(rec.sub_status) if rec.sub_status is not None else None, int(v.status), int(v.sub_status),
                  listed)


async def _resolved(storage: Storage, rules: ReplyRules, bounce: BounceClassifier) -> list[tuple[str, str]]:
    """Stored unclassified texts whose sample a phrase rule (or a site rule) now recognises."""
    covered = []
    for r in await storage.unclassified.list(limit=100_000):
        if r.source == "delivery":
            rule = rules.match_text(r.sample, r.code, r.enhanced)
            known = rule is not None and bool(rule.patterns)
        else:
            known = not bounce.classify(r.sample, r.code, r.enhanced).fallback
        if known:
            covered.append((r.source, r.text))
    await storage.unclassified.remove(covered)
    return covered


async def reapply(storage: Storage, since: datetime, rules: ReplyRules, bounce: BounceClassifier,
                  tencent: TencentRules, now: datetime) -> ReapplyReport:
    lists = SuppressionService(storage, tencent)
    report = ReapplyReport(since)
    after = ("", "")
    while True:
        chunk = await storage.unclassified.decided(since, after, CHUNK)
        for rec in chunk:
            v = _delivery(rec, rules) or _feedback(rec, bounce)
            if v is None:
                continue
            report.examined += 1
            if (v.status, v.sub_status) != (rec.status, rec.sub_status):
                report.changes.append(await _apply(storage, lists, rec, v, now))
        if len(chunk) < CHUNK:
            break
        after = (chunk[-1].email_id, chunk[-1].recipient)
    report.resolved = await _resolved(storage, rules, bounce)
    return report
