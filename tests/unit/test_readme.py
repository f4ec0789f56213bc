"""The README stands alone (users do not have the product specification) and states the rules the
code applies: the check order, the exact replies, the bounce expiry rule and the status codes."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from policies import bounce_expiry, default_chain
from policies.base import Verdict
from policies.reasons import REASON_BLOCK, REASON_BOUNCE, REASON_COMPLAINT, REASON_UNSUBSCRIBE
from relay.smtp.replies import for_verdict
from storage.records import Status, SubStatus

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_user_facing_docs_cite_no_specification() -> None:
    for doc in (ROOT / "README.md", *sorted((ROOT / "deploy").glob("*.example")), ROOT / "deploy/install.sh",
                ROOT / "deploy/mailrelay.service"):
        assert not re.search(r"\bSPEC\b", doc.read_text()), doc


def test_the_check_table_is_the_chain() -> None:
    rows = re.findall(r"^\| (\d) \| (.+?) \| (.+?) \| (.+?) \|$", README, re.M)
    assert [int(n) for n, *_ in rows] == [1, 2, 3, 4, 5, 6]
    order = default_chain(index=None).order  # type: ignore[arg-type]  # no storage: only the order is read
    assert order == ("syntax", "no-interception", "complaint", "block", "bounce", "unsubscribe")
    for (_n, check, _status, reply), name in zip(rows, order, strict=True):
        assert name.split("-")[0] in check.lower()
        if reply != "—":
            assert reply.startswith("`") and reply.endswith("`")
    replies = [reply.strip("`") for *_, reply in rows]
    reasons = {
        3: Verdict.reject("complaint", SubStatus.BLACKLIST, REASON_COMPLAINT),
        4: Verdict.reject("block", SubStatus.BLACKLIST, REASON_BLOCK),
        5: Verdict.reject("bounce", SubStatus.BLACKLIST, REASON_BOUNCE),
        6: Verdict.reject("unsubscribe", SubStatus.UNSUBSCRIBE, REASON_UNSUBSCRIBE),
    }
    for n, verdict in reasons.items():
        assert replies[n - 1] == for_verdict(verdict)


def test_the_bounce_rule_as_written() -> None:
    assert [bounce_expiry(n, tencent=True) for n in range(1, 8)] == [
        timedelta(days=d) for d in (1, 2, 4, 8, 16, 30, 30)]
    assert [bounce_expiry(n, tencent=False) for n in (1, 2, 3, 9)] == [timedelta(days=d) for d in (30, 60, 180, 180)]
    assert "2^(N-1) days\n  (1, 2, 4, 8, 16), at most 30 days" in README
    assert "30 days the first time, 60 days the second, 180 days from the third on" in README


def test_every_status_and_sub_status_is_explained() -> None:
    for status in Status:
        assert f"{status.name.lower().replace('_', ' ')} ({int(status)})" in README, status
    for sub in SubStatus:
        name = sub.name.lower().removeprefix("sb_").replace("_", " ")
        assert f"{int(sub)} {name}" in README.lower(), sub
