"""Reply classification: AttemptResult -> Classified (outcome, scope, category, signal, pause).

What it does:
- :class:`ReplyRules` holds the ordered reply rules from ``relay/rules/reply_rules.toml`` (plus
  operator files, read first). Rules are data, compiled and VALIDATED once at start-up: an
  unknown key, a bad regex or an unknown value raises :class:`RulesError` naming the file and
  the rule (KumoMTA's bounce classifier and shaping rules, as data).
- :meth:`ReplyRules.classify` decides one attempt. The outcome comes from the code class
  (2xx after the final dot -> DELIVERED, 4xx -> TEMPFAIL, 5xx -> PERMFAIL) unless the matched rule
  overrides it; the scope, category and throttle signal come from the first matching rule
  (Postfix ``smtp_trouble.c``: site / message / recipient failures).
- :meth:`ReplyRules.match_text` is the same matcher for the feedback parser (DSN diagnostic text).

Guarantees (checked at load time, so no rule can break them):
- only SITE-scope rules carry a throttle signal or a pause;
- ``adds_bounce`` only on ``not_exist`` rules that are not site-scoped — an IP/reputation block
  never puts a recipient on the bounce list; and it only applies to permanent failures.

Results without a reply code (DNS, connect, TLS, timeouts) are classified structurally, never by
rules: TEMPFAIL, scope SITE, ``server_error`` (sub-status 403); a permanent DNS failure (null MX,
NXDOMAIN: stage DNS, text ``"permanent: ..."``) is PERMFAIL ``server_error``.

No I/O except reading the rules files in :meth:`ReplyRules.load`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from re import _constants as _sre  # type: ignore[attr-defined]
from re import _parser as _sre_parser  # type: ignore[attr-defined]
from typing import Any, TypeVar

from relay.rules import RulesError, packaged_path, read_toml
from relay.rules.types import AttemptResult, Category, Classified, Outcome, PauseReason, Role, Scope, Signal, Stage

__all__ = ["ReplyRules", "Rule", "RulesError", "default_scope", "parse_reply"]

E = TypeVar("E", bound=Enum)

_RULE_KEYS = frozenset(
    {"name", "match", "codes", "stages", "enhanced", "category", "scope", "signal", "pause", "adds_bounce", "outcome",
     "role"}
)
_CODE_PATTERN = re.compile(r"^[2-5][0-9x][0-9x]$")
_ENHANCED_PATTERN = re.compile(r"^([245x])\.(\d{1,3}|x)\.(\d{1,3}|x)$")
# "550 5.1.1 text", "550-5.1.1 text", "smtp; 550 5.1.1 text", "5.1.1 text" (enhanced only)
_REPLY_PREFIX = re.compile(
    r"^\s{0,20}(?:smtp\s{0,20};\s{0,20})?(?:(\d{3})(?:[ -]{1,20}|$))?(?:([245]\.\d{1,3}\.\d{1,3})\b)?", re.I)
_ENHANCED_AT_START = re.compile(r"^\s{0,20}([245]\.\d{1,3}\.\d{1,3})\b")
_SMTP_PREFIX = re.compile(r"^\s{0,20}smtp\s{0,20};\s{0,20}", re.I)
#: The longest repetition a rule pattern may ask for ({0,N}): rules read text from strangers, so
#: every quantifier is bounded and the cost of one search stays linear in the text.
MAX_REPEAT = 1000
# Replies before the SMTP transaction concern the whole site (Postfix smtp_site_fail()).
_PRE_TRANSACTION = frozenset({Stage.DNS, Stage.CONNECT, Stage.GREETING, Stage.EHLO, Stage.STARTTLS})
# what classify() names a reply no rule matched
_DEFAULT_RULES = frozenset({"default-4xx", "default-5xx"})


def default_scope(stage: Stage | None) -> Scope:
    """Scope of a reply whose rule does not set one: SITE before the transaction, else RECIPIENT."""
    return Scope.SITE if stage in _PRE_TRANSACTION else Scope.RECIPIENT


def parse_reply(text: str) -> tuple[int | None, str | None]:
    """Leading reply code and enhanced code of ``"smtp; 550 5.1.1 ..."``-style text, if any."""
    m = _REPLY_PREFIX.match(text)
    if not m:  # pragma: no cover - the pattern matches the empty prefix
        return None, None
    return (int(m.group(1)) if m.group(1) else None), m.group(2)


def _normalize_enhanced(enhanced: str | None) -> tuple[str, str, str] | None:
    if not enhanced:
        return None
    parts = enhanced.strip().split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return parts[0], str(int(parts[1])), str(int(parts[2]))


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled classification rule (see the format notes in ``reply_rules.toml``)."""

    name: str
    category: Category
    patterns: tuple[re.Pattern[str], ...] = field(default=(), repr=False)
    codes: tuple[str, ...] = ()  # "550", "5xx", "45x"; empty = any code
    stages: frozenset[Stage] = frozenset()  # empty = any stage
    enhanced: tuple[str, ...] = ()  # "5.1.1", "x.7.x", "none"; empty = any
    scope: Scope | None = None  # None: default_scope(stage)
    signal: Signal = Signal.NONE
    pause: PauseReason | None = None
    adds_bounce: bool = False
    outcome: Outcome | None = None  # override of the code class (TEMPFAIL/PERMFAIL only)
    role: Role = Role.NONE  # how the bounce classifier weighs it (authoritative, domain, generic)
    source: str = ""  # the file it came from (for messages)

    def matches(self, line: str, code: int | None, enhanced: str | None, stage: Stage | None = None) -> bool:
        if self.codes and not _code_matches(self.codes, code):
            return False
        if self.stages and stage is not None and stage not in self.stages:
            return False
        if self.enhanced and not _enhanced_matches(self.enhanced, enhanced):
            return False
        if not self.patterns:
            return True
        return any(p.search(line) for p in self.patterns)


def _code_matches(patterns: Iterable[str], code: int | None) -> bool:
    if code is None:
        return False
    digits = f"{code:03d}"
    return any(all(p == "x" or p == d for p, d in zip(pat, digits, strict=True)) for pat in patterns)


def _enhanced_matches(patterns: Iterable[str], enhanced: str | None) -> bool:
    parts = _normalize_enhanced(enhanced)
    for pat in patterns:
        if pat == "none":
            if parts is None:
                return True
            continue
        if parts is None:
            continue
        if all(p == "x" or p == v for p, v in zip(pat.split("."), parts, strict=True)):
            return True
    return False


# region loading and validation
def unbounded_repeat(pattern: str) -> str | None:
    """Why ``pattern`` could take long on hostile text (an unbounded or huge repetition: ``*``,
    ``+``, ``{n,}``, ``{0,N}`` with N > MAX_REPEAT), or None when every repetition is bounded."""
    try:
        stack: list[Any] = [_sre_parser.parse(pattern)]
    except re.error as exc:
        return str(exc)
    while stack:
        for op, av in stack.pop():
            if op in _REPEATS:
                _low, high, item = av
                if high == _sre.MAXREPEAT:
                    return "unbounded repetition (*, + or {n,})"
                if high > MAX_REPEAT:
                    return f"repetition over {MAX_REPEAT}"
                stack.append(item)
            elif op is _sre.SUBPATTERN:
                stack.append(av[-1])
            elif op is _sre.BRANCH:
                stack.extend(av[1])
            elif op in (_sre.ASSERT, _sre.ASSERT_NOT):
                stack.append(av[1])
            elif op is _sre.ATOMIC_GROUP:
                stack.append(av)
            elif op is _sre.GROUPREF_EXISTS:
                stack.extend(x for x in av[1:] if x is not None)
    return None


_REPEATS = frozenset({_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT})


def _enum_value(enum: type[E], raw: object, key: str, where: str, exclude: Iterable[E] = ()) -> E:
    allowed = [m.value for m in enum if m not in exclude]
    if not isinstance(raw, str) or raw not in allowed:
        raise RulesError(f"{where}: {key} = {raw!r} is not one of {', '.join(map(str, allowed))}")
    return enum(raw)


def _str_list(raw: object, key: str, where: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise RulesError(f"{where}: {key} must be a list of strings")
    return list(raw)


def _compile_rule(raw: object, index: int, source: str) -> Rule:
    where = f"{source}: rule #{index + 1}"
    if not isinstance(raw, Mapping):
        raise RulesError(f"{where}: must be a table")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RulesError(f"{where}: name is required (a non-empty string)")
    where = f"{source}: rule {name!r}"
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise RulesError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_RULE_KEYS))})")

    patterns: list[re.Pattern[str]] = []
    for text in _str_list(raw.get("match", []), "match", where):
        try:
            patterns.append(re.compile(text, re.IGNORECASE))
        except re.error as exc:
            raise RulesError(f"{where}: bad regex {text!r}: {exc}") from exc
        unbounded = unbounded_repeat(text)
        if unbounded:
            raise RulesError(f"{where}: regex {text!r}: {unbounded} (write a bound, e.g. .{{0,200}} or \\S{{1,100}})")

    codes: list[str] = []
    raw_codes = raw.get("codes", [])
    if not isinstance(raw_codes, list):
        raise RulesError(f"{where}: codes must be a list like [550, \"4xx\"]")
    for c in raw_codes:
        text = str(c).lower() if isinstance(c, int | str) and not isinstance(c, bool) else ""
        if not _CODE_PATTERN.match(text):
            raise RulesError(f"{where}: bad reply code {c!r} in codes (use 200..599 or classes like \"5xx\")")
        codes.append(text)

    raw_stages = _str_list(raw.get("stages", []), "stages", where)
    stages = frozenset(_enum_value(Stage, s, "stages", where) for s in raw_stages)

    enhanced: list[str] = []
    for e in _str_list(raw.get("enhanced", []), "enhanced", where):
        e = e.strip().lower()
        m = _ENHANCED_PATTERN.match(e)
        if e != "none" and not m:
            raise RulesError(f"{where}: bad enhanced code {e!r} (use \"5.1.1\", \"x.7.x\" or \"none\")")
        if m:  # "5.01.001" and "5.1.1" are the same code
            e = ".".join(g if g == "x" else str(int(g)) for g in m.groups())
        enhanced.append(e)

    if not patterns and not codes and not enhanced:
        raise RulesError(f"{where}: match may be empty only if codes or enhanced narrow the rule")

    if "category" not in raw:
        raise RulesError(f"{where}: category is required")
    category = _enum_value(Category, raw["category"], "category", where)
    scope = _enum_value(Scope, raw["scope"], "scope", where) if "scope" in raw else None
    signal = _enum_value(Signal, raw.get("signal", "none"), "signal", where)
    pause = None
    if "pause" in raw:
        pause = _enum_value(PauseReason, raw["pause"], "pause", where, exclude=(PauseReason.ADMIN,))
    adds_bounce = raw.get("adds_bounce", False)
    if not isinstance(adds_bounce, bool):
        raise RulesError(f"{where}: adds_bounce must be true or false")
    outcome = None
    if "outcome" in raw:
        outcome = _enum_value(Outcome, raw["outcome"], "outcome", where, exclude=(Outcome.DELIVERED,))

    if (signal is not Signal.NONE or pause is not None) and scope is not Scope.SITE:
        raise RulesError(f"{where}: signal/pause need scope = \"site\" (only site failures throttle or pause)")
    if adds_bounce:
        if category is not Category.NOT_EXIST:
            raise RulesError(f"{where}: adds_bounce needs category = \"not_exist\" (got {category.value!r})")
        if scope is Scope.SITE:
            raise RulesError(f"{where}: adds_bounce with scope = \"site\": a site/IP refusal says nothing about the "
                             "recipient")

    return Rule(name=name, category=category, patterns=tuple(patterns), codes=tuple(codes), stages=stages,
                enhanced=tuple(enhanced), scope=scope, signal=signal, pause=pause, adds_bounce=adds_bounce,
                outcome=outcome, role=_enum_value(Role, raw.get("role", "none"), "role", where), source=source)


def compile_rules(data: Mapping[str, object], source: str) -> list[Rule]:
    """Validate and compile one parsed rules file (``[[rule]]`` tables)."""
    unknown = sorted(set(data) - {"rule"})
    if unknown:
        raise RulesError(f"{source}: unknown top-level key(s) {', '.join(unknown)} (rules are [[rule]] tables)")
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise RulesError(f"{source}: rule must be an array of tables ([[rule]])")
    rules = [_compile_rule(raw, i, source) for i, raw in enumerate(raw_rules)]
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise RulesError(f"{source}: rule {rule.name!r} is defined twice")
        seen.add(rule.name)
    return rules


# endregion


class ReplyRules:
    """The ordered rule list; the first matching rule wins."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = tuple(rules)

    @classmethod
    def load(cls, paths: Sequence[Path] | None = None, *, include_packaged: bool = True) -> ReplyRules:
        """Operator files ``paths`` (in order) followed by the packaged ``reply_rules.toml``.

        An operator rule replaces the packaged rule of the same name (it takes its place at the
        front); the same name in two operator files is an error.
        """
        merged: list[Rule] = []
        names: dict[str, str] = {}
        for path in paths or ():
            for rule in compile_rules(read_toml(path), str(path)):
                if rule.name in names:
                    raise RulesError(f"{path}: rule {rule.name!r} is already defined in {names[rule.name]}")
                names[rule.name] = str(path)
                merged.append(rule)
        if include_packaged:
            packaged = packaged_path("reply_rules.toml")
            merged.extend(r for r in compile_rules(read_toml(packaged), str(packaged)) if r.name not in names)
        return cls(merged)

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> ReplyRules:
        """Rules from TOML text alone (tests, ``mailrelay rules check``)."""
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RulesError(f"{source}: invalid TOML: {exc}") from exc
        return cls(compile_rules(data, source))

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def __len__(self) -> int:
        return len(self._rules)

    def is_fallback(self, name: str) -> bool:
        """Whether the rule called ``name`` (as a send-log line names it) decides without any phrase:
        the code-class defaults and the rules by reply or status code alone."""
        if name in _DEFAULT_RULES:
            return True
        rule = next((r for r in self._rules if r.name == name), None)
        return rule is not None and not rule.patterns

    def match(self, line: str, code: int | None, enhanced: str | None, stage: Stage | None = None) -> Rule | None:
        for rule in self._rules:
            if rule.matches(line, code, enhanced, stage):
                return rule
        return None

    def match_text(self, text: str, code: int | None = None, enhanced: str | None = None) -> Rule | None:
        """The first rule matching free text, e.g. a DSN ``Diagnostic-Code: smtp; 550 5.1.1 ...``.

        ``code`` and ``enhanced`` default to the ones at the start of ``text``; pass them when the
        report has them in separate fields (DSN ``Status:``). Stage filters are ignored.
        """
        stripped = _SMTP_PREFIX.sub("", text).strip()
        lead_code, lead_enhanced = parse_reply(stripped)
        code = code if code is not None else lead_code
        enhanced = enhanced or lead_enhanced
        if lead_code is not None:
            line = stripped
        else:
            parts = [str(code) if code is not None else "000"]
            if enhanced and lead_enhanced is None:
                parts.append(enhanced)
            parts.append(stripped)
            line = " ".join(parts)
        return self.match(line, code, enhanced)

    def classify(self, result: AttemptResult) -> Classified:
        stage, code = result.stage, result.code
        if stage is Stage.POLICY:
            # Our own suppression re-check stopped it; the caller uses the policy verdict instead.
            return Classified(Outcome.PERMFAIL, Scope.RECIPIENT, Category.OTHERS, rule="policy")
        if code is None:
            if stage is Stage.DNS and result.text.lower().startswith("permanent:"):
                # RFC 7505 null MX, NXDOMAIN: nowhere to deliver; 403 "server error".
                return Classified(Outcome.PERMFAIL, Scope.SITE, Category.SERVER_ERROR, rule="dns-permanent")
            return Classified(Outcome.TEMPFAIL, Scope.SITE, Category.SERVER_ERROR, rule=f"no-reply-{stage.value}")
        if 200 <= code < 300 and stage is Stage.DOT:
            return Classified(Outcome.DELIVERED, Scope.RECIPIENT, None, rule="delivered")
        if not 400 <= code < 600:
            # A 2xx/3xx where a failure was reported (e.g. 250 to DATA), or a garbage code: the
            # dialogue with this server is broken.
            return Classified(Outcome.TEMPFAIL, Scope.SITE, Category.SERVER_ERROR, rule="unexpected-reply")

        enhanced = result.enhanced
        if not enhanced:
            m = _ENHANCED_AT_START.match(result.text)
            enhanced = m.group(1) if m else None
        outcome = Outcome.TEMPFAIL if code < 500 else Outcome.PERMFAIL
        rule = self.match(result.reply_line(), code, enhanced, stage)
        if rule is None:
            return Classified(outcome, default_scope(stage),
                              Category.SERVER_ERROR if code < 500 else Category.OTHERS,
                              rule=f"default-{code // 100}xx", fallback=True)
        if rule.outcome is not None:
            outcome = rule.outcome
        return Classified(
            outcome=outcome,
            scope=rule.scope or default_scope(stage),
            category=rule.category,
            signal=rule.signal,
            pause=rule.pause,
            adds_bounce=rule.adds_bounce and outcome is Outcome.PERMFAIL,
            rule=rule.name,
            fallback=not rule.patterns,
        )
