"""Reply classification: the corpus table (KumoMTA style), rule loading/merging and validation errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relay.rules import RULES_DIR, packaged_path
from relay.rules.reply import ReplyRules, RulesError, parse_reply
from relay.rules.types import AttemptResult, Category, Outcome, PauseReason, Scope, Signal, Stage, reply_text

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "replies" / "corpus.txt"
_LINE = re.compile(
    r"^(?:\[(?P<stage>\w+)\]\s+)?(?P<code>\d{3}|-)\s+(?:(?P<enhanced>[245]\.\d{1,3}\.\d{1,3})\s+)?(?P<text>.*)$"
)


def _corpus() -> list[tuple[int, AttemptResult, list[str]]]:
    cases = []
    for lineno, raw in enumerate(CORPUS.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        reply, _, expected = raw.partition("\t")
        m = _LINE.match(reply)
        assert m and expected, f"corpus.txt:{lineno}: malformed line"
        result = AttemptResult(
            stage=Stage(m["stage"]) if m["stage"] else Stage.RCPT,
            code=None if m["code"] == "-" else int(m["code"]),
            enhanced=m["enhanced"],
            text=m["text"],
        )
        cases.append((lineno, result, expected.split()))
    return cases


CASES = _corpus()


@pytest.fixture(scope="module")
def rules() -> ReplyRules:
    return ReplyRules.load()


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 80


@pytest.mark.parametrize(("lineno", "result", "expected"), CASES, ids=[f"line{c[0]}" for c in CASES])
def test_corpus(rules: ReplyRules, lineno: int, result: AttemptResult, expected: list[str]) -> None:
    outcome, scope, category, signal, pause, adds_bounce, *rule = expected
    c = rules.classify(result)
    got = [c.outcome.value, c.scope.value, c.category.value if c.category else "-", c.signal.value,
           c.pause.value if c.pause else "-", "true" if c.adds_bounce else "false"]
    want = [outcome, scope, category, signal, pause, adds_bounce]
    if rule:
        got.append(c.rule)
        want.append(rule[0])
    assert got == want, f"corpus.txt:{lineno}: {result.reply_line()!r}"


def test_every_packaged_rule_is_exercised_by_the_corpus(rules: ReplyRules) -> None:
    used = {rules.classify(r).rule for _, r, _ in CASES}
    unused = [r.name for r in rules.rules if r.name not in used]
    assert unused == []


def test_site_invariants_hold_for_every_packaged_rule(rules: ReplyRules) -> None:
    for r in rules.rules:
        if r.signal is not Signal.NONE or r.pause is not None:
            assert r.scope is Scope.SITE, r.name
        if r.adds_bounce:
            assert r.category is Category.NOT_EXIST and r.scope is not Scope.SITE, r.name
        if r.category is Category.IP_REJECTION:
            assert not r.adds_bounce, r.name


def test_adds_bounce_only_on_permanent_failure(rules: ReplyRules) -> None:
    temp = rules.classify(AttemptResult(Stage.RCPT, 450, "4.1.1", "Bad destination mailbox address"))
    assert temp.outcome is Outcome.TEMPFAIL and temp.category is Category.NOT_EXIST and not temp.adds_bounce
    perm = rules.classify(AttemptResult(Stage.RCPT, 550, "5.1.1", "Bad destination mailbox address"))
    assert perm.adds_bounce and perm.sub_status is not None and perm.sub_status.value == 406


def test_enhanced_code_found_at_start_of_text_when_not_split(rules: ReplyRules) -> None:
    c = rules.classify(AttemptResult(Stage.RCPT, 550, None, "5.1.1 mailbox gone"))
    assert c.rule == "status-mailbox-unknown" and c.adds_bounce


def test_dns_permanent_is_server_error_403(rules: ReplyRules) -> None:
    c = rules.classify(AttemptResult(Stage.DNS, None, None, "permanent: NXDOMAIN example.invalid"))
    assert c.outcome is Outcome.PERMFAIL and c.sub_status is not None and c.sub_status.value == 403


# region match_text (the feedback parser's entry point)
@pytest.mark.parametrize(
    ("text", "code", "enhanced", "name"),
    [
        ("smtp; 550 5.1.1 <a@example.org>: Recipient address rejected: User unknown", None, None, "user-unknown"),
        ("550-5.1.1 The email account that you tried to reach does not exist.", None, None, "gmail-not-exist"),
        ("Client host [203.0.113.5] blocked using zen.spamhaus.org", 554, "5.7.1", "ip-blocklisted"),
        ("mailbox is full", None, "5.2.2", "mailbox-full"),
        ("5.1.1 no such user", None, None, "status-mailbox-unknown"),
        ("5.1.1 no such user", 550, None, "user-unknown"),
        ("something nobody wrote before", 550, "5.7.1", "status-policy"),
    ],
)
def test_match_text(rules: ReplyRules, text: str, code: int | None, enhanced: str | None, name: str) -> None:
    rule = rules.match_text(text, code=code, enhanced=enhanced)
    assert rule is not None and rule.name == name


def test_match_text_unknown_returns_none(rules: ReplyRules) -> None:
    assert rules.match_text("the weather is nice") is None


def test_parse_reply() -> None:
    assert parse_reply("smtp; 550 5.1.1 x") == (550, "5.1.1")
    assert parse_reply("550-5.1.1 x") == (550, "5.1.1")
    assert parse_reply("421 try later") == (421, None)
    assert parse_reply("4.2.2 full") == (None, "4.2.2")
    assert parse_reply("hello") == (None, None)


# endregion


# region loading, merging, validation
def test_packaged_paths() -> None:
    assert packaged_path("reply_rules.toml").parent == RULES_DIR
    assert (RULES_DIR / "reply_rules.toml").is_file()


def test_operator_rules_come_first_and_replace_same_name(tmp_path: Path) -> None:
    extra = tmp_path / "local.toml"
    extra.write_text(
        """
[[rule]]
name = "local-acme"
match = ['acme says no']
category = "rejected"

[[rule]]
name = "gmail-not-exist"   # override: no bounce list for Gmail
match = ['email account that you tried to reach does not exist']
category = "not_exist"
"""
    )
    rules = ReplyRules.load([extra])
    names = [r.name for r in rules.rules]
    assert names[:2] == ["local-acme", "gmail-not-exist"]
    assert names.count("gmail-not-exist") == 1
    gmail = "The email account that you tried to reach does not exist."
    c = rules.classify(AttemptResult(Stage.RCPT, 550, "5.1.1", gmail))
    assert c.rule == "gmail-not-exist" and not c.adds_bounce
    assert rules.classify(AttemptResult(Stage.DOT, 554, None, "ACME says no")).rule == "local-acme"


def test_same_name_in_two_operator_files_is_an_error(tmp_path: Path) -> None:
    body = '[[rule]]\nname = "x"\nmatch = ["a"]\ncategory = "others"\n'
    (tmp_path / "a.toml").write_text(body)
    (tmp_path / "b.toml").write_text(body)
    with pytest.raises(RulesError, match=r"b\.toml: rule 'x' is already defined in .*a\.toml"):
        ReplyRules.load([tmp_path / "a.toml", tmp_path / "b.toml"])


def test_without_packaged_rules_everything_falls_back_to_code_class() -> None:
    rules = ReplyRules.load([], include_packaged=False)
    assert len(rules) == 0
    c = rules.classify(AttemptResult(Stage.RCPT, 550, "5.1.1", "user unknown"))
    assert (c.outcome, c.scope, c.category, c.rule) == (Outcome.PERMFAIL, Scope.RECIPIENT, Category.OTHERS,
                                                          "default-5xx")
    c = rules.classify(AttemptResult(Stage.GREETING, 421, None, "busy"))
    assert (c.outcome, c.scope, c.category) == (Outcome.TEMPFAIL, Scope.SITE, Category.SERVER_ERROR)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        ReplyRules.load([tmp_path / "nope.toml"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]\n")
    with pytest.raises(RulesError, match=r"bad\.toml: invalid TOML"):
        ReplyRules.load([bad])


_BASE = 'name = "r1"\nmatch = ["x"]\ncategory = "others"\n'


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('name = "r1"\nmatch = ["x"]\ncategory = "others"\nscop = "site"\n', r"rule 'r1': unknown key\(s\) scop"),
        ('name = "r1"\nmatch = ["(unclosed"]\ncategory = "others"\n', r"rule 'r1': bad regex '\(unclosed'"),
        ('name = "r1"\nmatch = ["x"]\ncategory = "spam"\n', r"rule 'r1': category = 'spam' is not one of"),
        (_BASE + 'scope = "domain"\n', r"rule 'r1': scope = 'domain' is not one of"),
        (_BASE + 'scope = "site"\nsignal = "slow"\n', r"rule 'r1': signal = 'slow'"),
        (_BASE + 'scope = "site"\npause = "admin"\n', r"rule 'r1': pause = 'admin' is not one of"),
        (_BASE + 'outcome = "delivered"\n', r"rule 'r1': outcome = 'delivered'"),
        (_BASE + 'stages = ["helo"]\n', r"rule 'r1': stages = 'helo'"),
        (_BASE + 'codes = [650]\n', r"rule 'r1': bad reply code 650"),
        (_BASE + 'codes = ["5x"]\n', r"rule 'r1': bad reply code '5x'"),
        (_BASE + 'codes = 550\n', r"rule 'r1': codes must be a list"),
        (_BASE + 'enhanced = ["5.1"]\n', r"rule 'r1': bad enhanced code '5.1'"),
        (_BASE + 'adds_bounce = "yes"\n', r"rule 'r1': adds_bounce must be true or false"),
        ('name = "r1"\nmatch = "x"\ncategory = "others"\n', r"rule 'r1': match must be a list of strings"),
        ('name = "r1"\ncategory = "others"\n', r"rule 'r1': match may be empty only if"),
        ('name = "r1"\nmatch = ["x"]\n', r"rule 'r1': category is required"),
        ('match = ["x"]\ncategory = "others"\n', r"rule #1: name is required"),
        # only SITE-scope rules may throttle or pause
        (_BASE + 'signal = "rate_limit"\n', r"rule 'r1': signal/pause need scope = \"site\""),
        (_BASE + 'scope = "recipient"\npause = "domain_limit"\n', r"rule 'r1': signal/pause need scope"),
        # IP/reputation blocks never enter the bounce list
        ('name = "r1"\nmatch = ["spamhaus"]\ncategory = "ip_rejection"\nadds_bounce = true\n',
         r"rule 'r1': adds_bounce needs category = \"not_exist\""),
        ('name = "r1"\nmatch = ["x"]\ncategory = "not_exist"\nscope = "site"\nadds_bounce = true\n',
         r"rule 'r1': adds_bounce with scope = \"site\""),
    ],
)
def test_validation_errors_name_the_rule(body: str, error: str) -> None:
    with pytest.raises(RulesError, match=error):
        ReplyRules.from_toml("[[rule]]\n" + body, "ops.toml")


def test_validation_errors_name_the_file_and_top_level() -> None:
    with pytest.raises(RulesError, match=r"^ops\.toml: unknown top-level key\(s\) rules"):
        ReplyRules.from_toml('[[rules]]\nname = "a"\n', "ops.toml")
    with pytest.raises(RulesError, match=r"ops\.toml: rule 'a' is defined twice"):
        ReplyRules.from_toml(("[[rule]]\n" + 'name = "a"\nmatch = ["x"]\ncategory = "others"\n') * 2, "ops.toml")


def test_filters_codes_stages_enhanced() -> None:
    rules = ReplyRules.from_toml(
        """
[[rule]]
name = "only-rcpt-55x"
codes = ["55x"]
stages = ["rcpt"]
match = ['nope']
category = "rejected"

[[rule]]
name = "no-enhanced"
enhanced = ["none"]
codes = [554]
category = "others"

[[rule]]
name = "padded"
enhanced = ["5.01.001"]
category = "not_exist"
"""
    )
    assert rules.classify(AttemptResult(Stage.RCPT, 553, None, "NOPE")).rule == "only-rcpt-55x"
    assert rules.classify(AttemptResult(Stage.MAIL, 553, None, "nope")).rule == "default-5xx"
    assert rules.classify(AttemptResult(Stage.RCPT, 541, None, "nope")).rule == "default-5xx"
    assert rules.classify(AttemptResult(Stage.DOT, 554, None, "x")).rule == "no-enhanced"
    assert rules.classify(AttemptResult(Stage.DOT, 554, "5.0.0", "x")).rule == "default-5xx"
    assert rules.classify(AttemptResult(Stage.RCPT, 550, "5.1.1", "x")).rule == "padded"
    # stage filters are ignored when the stage is unknown (bounce mail)
    only = rules.match_text("553 nope")
    assert only is not None and only.name == "only-rcpt-55x"


def test_outcome_override_and_pause_reason_types() -> None:
    rules = ReplyRules.from_toml(
        """
[[rule]]
name = "five-means-later"
match = ['frequency']
category = "ip_rejection"
scope = "site"
signal = "conn_limit"
pause = "connection_frequency"
outcome = "tempfail"
"""
    )
    c = rules.classify(AttemptResult(Stage.GREETING, 550, None, "Ip frequency limited"))
    assert c.outcome is Outcome.TEMPFAIL
    assert c.pause is PauseReason.CONNECTION_FREQUENCY and c.signal is Signal.CONN_LIMIT


# endregion


# region tencent.toml (relay.rules.load_tencent_rules)
def test_packaged_tencent_rules() -> None:
    from policies import TencentRules, is_tencent
    from relay.rules import load_tencent_rules

    t = load_tencent_rules()
    assert isinstance(t, TencentRules)
    assert {"qq.com", "foxmail.com", "vip.qq.com", "exmail.qq.com"} <= t.domains
    assert is_tencent("customer.example", ["mxbiz1.qq.com."], t)
    assert is_tencent("QQ.COM", [], t)
    assert not is_tencent("notqq.com", ["mx.notqq.com"], t)
    assert "vip.foxmail.com" in t.domains


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('domains = ["qq.com"]\nmx_suffixes = ["qq.com"]\nextra = 1\n', r"unknown key\(s\) extra"),
        ('domains = ["qq.com"]\n', "mx_suffixes must be a non-empty list"),
        ('domains = "qq.com"\nmx_suffixes = ["qq.com"]\n', "domains must be a non-empty list"),
        ('domains = ["qq.com", " "]\nmx_suffixes = ["qq.com"]\n', "domains must be a non-empty list"),
        ('domains = ["qq.com"]\nmx_suffixes = ["."]\n', "empty domain or MX suffix"),
        ("domains = [\n", "invalid TOML"),
    ],
)
def test_tencent_rules_validation(tmp_path: Path, body: str, error: str) -> None:
    from relay.rules import load_tencent_rules

    path = tmp_path / "tencent.toml"
    path.write_text(body)
    with pytest.raises(RulesError, match=error) as exc:
        load_tencent_rules(path)
    assert str(path) in str(exc.value)


# endregion


@pytest.mark.parametrize(("code", "enhanced", "text", "want"), [
    (550, "5.1.1", "550 5.1.1 <x@y>: user unknown", "550 5.1.1 <x@y>: user unknown"),  # a DSN's Diagnostic-Code
    (550, "5.1.1", "550-5.1.1 <x@y>: user unknown", "550 5.1.1 <x@y>: user unknown"),
    (550, "5.1.1", "<x@y>: user unknown", "550 5.1.1 <x@y>: user unknown"),  # a live reply's text
    (550, "5.0.0", "5.1.1 user unknown", "550 5.1.1 user unknown"),  # the text's own code is more precise
    (None, "5.1.1", "550 5.1.1 gone", "550 5.1.1 gone"),
    (550, "5.7.1", "250 messages per hour exceeded", "550 5.7.1 250 messages per hour exceeded"),  # just text
    (451, None, "try later", "451 try later"),
    (None, None, "bounce", "bounce"),
])
def test_reply_text_never_repeats_a_leading_code(code: int | None, enhanced: str | None, text: str,
                                                 want: str) -> None:
    assert reply_text(code, enhanced, text) == want
