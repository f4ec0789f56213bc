"""The review loop's pieces without a server: normalisation, the fallback flag of both
classifiers, site rules (validation, file, precedence over packaged phrase rules) and the batching
writer (one write per interval, kept while the database is down, bounded)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.feedback.classify import BounceClassifier
from relay.feedback.setup import load_classifier
from relay.rules import RulesError
from relay.rules.reply import ReplyRules
from relay.rules.review import MAX_TEXT, MAX_TEXTS, ReviewRecorder, normalise
from relay.rules.site import add_site_rule, load_reply_rules, read_site_rules, site_rules_path
from relay.rules.types import AttemptResult, Category, Outcome, Stage
from storage.unclassified import MAX_EXAMPLES, UnclassifiedHit

NOW = datetime(2026, 12, 1, tzinfo=UTC)


# region normalisation
def test_the_same_reply_with_other_addresses_and_numbers_is_one_text() -> None:
    a = normalise("550 5.7.1 <john@a.example>: Message 1A2B3C rejected from [192.0.2.7] at 12:00:01, ref=998")
    b = normalise("550 5.7.1 <MARY@b.example>: message 9Z8Y rejected from [2001:db8::1] at 23:59:59, ref=1")
    assert a == b == "550 5.7.1 <addr> message # rejected from # at # #"
    assert normalise("421-4.7.0 try later") == "421 4.7.0 try later"  # a multi-line reply's first line
    assert normalise("550-zq9 no") == "550 # no"
    assert normalise("452 4.2.2 mailbox full") == "452 4.2.2 mailbox full"
    assert normalise("550 5.1.1 user\x00 unknown\t\r\n") == "550 5.1.1 user unknown"
    assert normalise("") == "" and normalise(" \n ") == ""


def test_normalisation_is_bounded_on_hostile_text() -> None:
    assert len(normalise("x" * 1_000_000)) <= MAX_TEXT
    assert normalise(" " * 100_000 + "late") == ""  # only the first 1000 characters are read
    assert len(normalise("word " * 100_000)) <= MAX_TEXT
    assert len(normalise("\n" * 100_000)) == 0
# endregion


# region fallback flags
def test_delivery_fallbacks_are_code_only_verdicts() -> None:
    rules = ReplyRules.load()
    unknown = rules.classify(AttemptResult(Stage.RCPT, 550, None, "zq-gateway says no"))
    assert (unknown.rule, unknown.fallback, unknown.category) == ("default-5xx", True, Category.OTHERS)
    by_status = rules.classify(AttemptResult(Stage.RCPT, 550, "5.2.0", "zq-gateway says no"))
    assert (by_status.rule, by_status.fallback) == ("status-mailbox", True)
    phrase = rules.classify(AttemptResult(Stage.RCPT, 550, "5.1.1", "User unknown"))
    assert phrase.category is Category.NOT_EXIST and not phrase.fallback
    assert rules.is_fallback("default-4xx") and rules.is_fallback("status-mailbox")
    assert not rules.is_fallback(phrase.rule) and not rules.is_fallback("no-such-rule")


def test_bounce_fallbacks_are_code_only_verdicts() -> None:
    b = BounceClassifier.load()
    v = b.classify("smtp; 550 zq-gateway says no", 550, None, "failed")
    assert (v.rule, v.fallback) == ("fallback", True)
    v = b.classify("smtp; 451 zq-gateway says wait", 451, None, "delayed")
    assert (v.category, v.fallback) == (Category.SERVER_ERROR, True)
    v = b.classify("smtp; 550 5.1.1 <a@b.example>: User unknown", 550, "5.1.1", "failed", "RCPT")
    assert v.category is Category.NOT_EXIST and not v.fallback
    assert b.is_fallback("fallback") and b.is_fallback("refused+conn") and b.is_fallback("status-mailbox+data")
    assert not b.is_fallback(v.rule)
# endregion


# region site rules
def test_site_rule_file_round_trip_and_what_it_matches(tmp_path: Path) -> None:
    rule = add_site_rule(tmp_path, "  550 5.2.0 <addr>  account zq-frozen ref # ", "not_exist", "invalid", NOW)
    assert (rule.name, rule.match, rule.status) == ("site-1", "550 5.2.0 <addr> account zq-frozen ref #", "invalid")
    assert add_site_rule(tmp_path, "mailbox parked", "others", None, NOW).name == "site-2"
    assert [r.name for r in read_site_rules(tmp_path)] == ["site-1", "site-2"]
    rules = load_reply_rules(tmp_path)
    c = rules.classify(AttemptResult(Stage.RCPT, 550, "5.2.0", "<x@y.example> Account ZQ-FROZEN ref 42"))
    assert (c.rule, c.category, c.outcome, c.adds_bounce, c.fallback) == (
        "site-1", Category.NOT_EXIST, Outcome.PERMFAIL, True, False)
    # a placeholder stands for one token, not for anything
    c = rules.classify(AttemptResult(Stage.RCPT, 550, "5.2.0", "<x@y.example> account zq-frozen"))
    assert c.rule == "status-mailbox"


def test_site_rules_come_before_packaged_phrase_rules(tmp_path: Path) -> None:
    reply = "550 5.1.1 <a@b.example>: Recipient address rejected: User unknown in virtual mailbox table"
    packaged = ReplyRules.load().classify(AttemptResult(Stage.RCPT, 550, None, reply[4:]))
    assert packaged.category is Category.NOT_EXIST and not packaged.rule.startswith("site-")
    add_site_rule(tmp_path, "user unknown in virtual mailbox table", "rejected", "sending", NOW)
    c = load_reply_rules(tmp_path).classify(AttemptResult(Stage.RCPT, 550, None, reply[4:]))
    assert (c.rule, c.category, c.outcome, c.adds_bounce) == ("site-1", Category.REJECTED, Outcome.TEMPFAIL, False)
    v = load_classifier(tmp_path).classify("smtp; " + reply, 550, "5.1.1", "failed", "RCPT")
    assert (v.rule, v.category) == ("site-1", Category.REJECTED)
    assert BounceClassifier.load().classify("smtp; " + reply, 550, "5.1.1", "failed", "RCPT").category is \
        Category.NOT_EXIST


@pytest.mark.parametrize(("match", "category", "status", "message"), [
    ("", "others", None, "--match: empty text"),
    ("<addr> #", "others", None, "needs at least one word"),
    ("x" * 301, "others", None, "at most 300"),
    ("user\x07unknown", "others", None, "control character U+0007"),
    ("user unknown", "bounced", None, "--category: 'bounced' is not one of server_error"),
    ("user unknown", "others", "soft_bounce", "--status: 'soft_bounce' is not one of invalid"),
    ("user unknown", "others", "5", "--status: '5' is not one of"),
])
def test_bad_site_rules_are_refused_and_nothing_is_written(tmp_path: Path, match: str, category: str,
                                                          status: str | None, message: str) -> None:
    with pytest.raises(RulesError, match=re.escape(message)):
        add_site_rule(tmp_path, match, category, status, NOW)
    assert not site_rules_path(tmp_path).exists() and list(tmp_path.iterdir()) == []


def test_status_numbers_and_duplicates(tmp_path: Path) -> None:
    assert add_site_rule(tmp_path, "zq one", "others", "18", NOW).status == "sending"
    assert add_site_rule(tmp_path, "zq two", "others", "4", NOW).status == "invalid"
    with pytest.raises(RulesError, match="exists already"):
        add_site_rule(tmp_path, "ZQ ONE", "rejected", None, NOW)
    assert len(read_site_rules(tmp_path)) == 2


@pytest.mark.parametrize(("text", "message"), [
    ("[[site]]\nname = 'site-1'\nmatch = '# <addr>'\ncategory = 'others'\n", "needs at least one word"),
    ("[[site]]\nname = 'mine'\nmatch = 'zq words'\ncategory = 'others'\n", "name must be a unique string"),
    ("[[site]]\nname = 'site-1'\nmatch = 'zq words'\ncategory = 'others'\nregex = 'x'\n", "unknown key"),
    ("[[rule]]\nname = 'x'\n", "unknown top-level key"),
    ("[[site]\n", "invalid TOML"),
])
def test_an_edited_site_file_is_validated_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    site_rules_path(tmp_path).write_text(text)
    with pytest.raises(RulesError, match=message) as exc:
        load_reply_rules(tmp_path)
    assert str(site_rules_path(tmp_path)) in str(exc.value)
# endregion


# region the batching writer
class _Repo:
    """Records the batches it is given; fails while ``down``."""

    def __init__(self) -> None:
        self.batches: list[list[UnclassifiedHit]] = []
        self.down = False

    async def record(self, hits: Sequence[UnclassifiedHit]) -> None:
        if self.down:
            raise ConnectionError("database is down")
        self.batches.append(list(hits))


async def test_sightings_are_batched_and_kept_while_the_database_is_down() -> None:
    repo = _Repo()
    rec = ReviewRecorder(repo, interval=3600)  # type: ignore[arg-type]
    for i in range(8):
        rec.note("delivery", f"550 5.2.0 <u{i}@x.example> zq-frozen {i}", "status-mailbox", 550, "5.2.0",
                 f"m{i}", f"u{i}@x.example", NOW + timedelta(seconds=i))
    rec.note("feedback", "550 weird", "fallback", 550, None, "m9", "v@x.example", NOW)
    assert repo.batches == []  # nothing written by note()
    repo.down = True
    await rec.flush()
    assert repo.batches == []
    repo.down = False
    rec.note("delivery", "550 5.2.0 <late@x.example> zq-frozen 99", "status-mailbox", 550, "5.2.0", "m99",
             "late@x.example", NOW - timedelta(seconds=5))
    await rec.close()
    [batch] = repo.batches
    hits = {(h.source, h.text): h for h in batch}
    frozen = hits[("delivery", "550 5.2.0 <addr> zq-frozen #")]
    assert frozen.count == 9 and frozen.first_seen == NOW - timedelta(seconds=5)
    assert frozen.last_seen == NOW + timedelta(seconds=7) and frozen.sample.endswith("zq-frozen 7")
    assert len(frozen.examples) == MAX_EXAMPLES and frozen.examples[0] == ("m0", "u0@x.example")
    assert hits[("feedback", "550 weird")].count == 1
    await rec.flush()
    assert len(repo.batches) == 1  # nothing left to write


async def test_distinct_texts_between_writes_are_bounded() -> None:
    repo = _Repo()
    rec = ReviewRecorder(repo, interval=3600, max_texts=3)  # type: ignore[arg-type]
    for i in range(5):
        rec.note("delivery", f"550 zq text {'abcde'[i]}", "default-5xx", 550, None, "m", "r@x.example", NOW)
    rec.note("delivery", "550 zq text a", "default-5xx", 550, None, "m2", "r@x.example", NOW)  # a known text
    assert rec.dropped == 2
    await rec.close()
    assert sorted((h.text, h.count) for h in repo.batches[0]) == [
        ("550 zq text a", 2), ("550 zq text b", 1), ("550 zq text c", 1)]
    assert MAX_TEXTS >= 1000
# endregion
