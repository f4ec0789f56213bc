"""Site rules: the operator's own classification rules, in ``site_rules.toml`` of the data directory.

``mailrelay rules add --match TEXT --category C [--status S]`` appends one; delivery's reply
classifier and the bounce classifier read them BEFORE every packaged phrase rule (first match
wins, in file order), at start-up and on a reload (SIGHUP).

``TEXT`` is literal text, matched case-insensitively anywhere in the reply ("550 5.7.1 text"),
with the placeholders of ``mailrelay rules unclassified``: ``<addr>`` stands for any address and
``#`` for any token holding a digit, so a listed text can be pasted as it is. The pattern made from
it is bounded (``\\S{1,320}``, ``\\s{1,20}``), like every rule applied to mail text.

File format (written by the command; an edited file is validated the same way at load)::

    [[site]]
    name = "site-1"
    match = "550 5.7.1 <addr> mailbox frozen"
    category = "not_exist"
    status = "invalid"        # optional: invalid (fail now) or sending (retry later)
    added = "2026-12-03T12:00:00+00:00"
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from relay.rules import RulesError
from relay.rules.reply import ReplyRules, Rule, compile_rules
from relay.rules.review import ADDRESS, NUMBER
from relay.rules.types import Category

__all__ = ["SITE_RULES_FILE", "STATUSES", "SiteRule", "add_site_rule", "compile_site_rules", "load_reply_rules",
           "read_site_rules", "site_rules_path"]

SITE_RULES_FILE = "site_rules.toml"
SITE_PREFIX = "site-"
#: what a rule's --status may say: the recipient fails now (4) or is retried (18)
STATUSES = {"invalid": "permfail", "sending": "tempfail"}
_STATUS_NUMBERS = {"4": "invalid", "18": "sending"}
MAX_MATCH = 300
MAX_RULES = 1000
_KEYS = frozenset({"name", "match", "category", "status", "added"})


@dataclass(frozen=True, slots=True)
class SiteRule:
    name: str
    match: str
    category: Category
    status: str | None  # invalid | sending | None (the reply code decides)
    added: str = ""


def site_rules_path(home: Path) -> Path:
    return home / SITE_RULES_FILE


def _pattern(text: str) -> str:
    parts = []
    for token in text.split():
        if token == ADDRESS:
            parts.append(r"\S{1,320}")
        elif token == NUMBER:
            parts.append(r"\S{1,100}")
        else:
            parts.append(re.escape(token))
    return r"\s{1,20}".join(parts)


def validate(match: str, category: str, status: str | None) -> tuple[str, Category, str | None]:
    """Check an operator's rule; the message of the error says what to type instead."""
    text = " ".join(match.split())
    if not text:
        raise RulesError("--match: empty text (give words of the reply, e.g. --match 'mailbox frozen')")
    if len(text) > MAX_MATCH:
        raise RulesError(f"--match: {len(text)} characters, at most {MAX_MATCH}")
    bad = next((ch for ch in text if not ch.isprintable()), None)
    if bad is not None:
        raise RulesError(f"--match: contains the control character U+{ord(bad):04X}")
    words = [t for t in text.split() if t not in (ADDRESS, NUMBER)]
    if not any(sum(ch.isalpha() for ch in w) >= 2 for w in words):
        raise RulesError("--match: needs at least one word besides <addr> and # (it would match every reply)")
    allowed = ", ".join(c.value for c in Category)
    if category not in {c.value for c in Category}:
        raise RulesError(f"--category: {category!r} is not one of {allowed}")
    if status is not None:
        status = _STATUS_NUMBERS.get(status.strip(), status.strip().lower())
        if status not in STATUSES:
            raise RulesError(f"--status: {status!r} is not one of invalid (4: fail now), sending (18: retry "
                             "later); delivered and soft_bounce are not what a reply decides")
    return text, Category(category), status


def _rule_table(rule: SiteRule) -> dict[str, object]:
    table: dict[str, object] = {"name": rule.name, "match": [_pattern(rule.match)], "category": rule.category.value,
                                "role": "authoritative"}  # the operator's word: the SMTP stage does not change it
    if rule.status is not None:
        table["outcome"] = STATUSES[rule.status]
    if rule.category is Category.NOT_EXIST:
        table["scope"] = "recipient"
        table["adds_bounce"] = rule.status != "sending"  # a missing mailbox enters the bounce list
    return table


def compile_site_rules(rules: Sequence[SiteRule], source: str = SITE_RULES_FILE) -> list[Rule]:
    return compile_rules({"rule": [_rule_table(r) for r in rules]}, source)


def _parse(data: Mapping[str, object], source: str) -> list[SiteRule]:
    unknown = sorted(set(data) - {"site"})
    if unknown:
        raise RulesError(f"{source}: unknown top-level key(s) {', '.join(unknown)} (site rules are [[site]] tables)")
    raw = data.get("site", [])
    if not isinstance(raw, list):
        raise RulesError(f"{source}: site must be an array of tables ([[site]])")
    out: list[SiteRule] = []
    names: set[str] = set()
    for i, t in enumerate(raw):
        where = f"{source}: site rule #{i + 1}"
        if not isinstance(t, Mapping):
            raise RulesError(f"{where}: must be a table")
        extra = sorted(set(t) - _KEYS)
        if extra:
            raise RulesError(f"{where}: unknown key(s) {', '.join(extra)} (allowed: {', '.join(sorted(_KEYS))})")
        name, match, category, status = t.get("name"), t.get("match"), t.get("category"), t.get("status")
        if not isinstance(name, str) or not name.startswith(SITE_PREFIX) or name in names:
            raise RulesError(f"{where}: name must be a unique string starting with {SITE_PREFIX!r}")
        if not isinstance(match, str) or not isinstance(category, str) or not isinstance(status, str | None):
            raise RulesError(f"{where}: match and category (and status, if given) must be strings")
        try:
            text, cat, st = validate(match, category, status)
        except RulesError as e:
            raise RulesError(f"{where} ({name}): {e}") from None
        names.add(name)
        out.append(SiteRule(name, text, cat, st, str(t.get("added", ""))))
    compile_site_rules(out, source)  # the same validation as every rule file
    return out


def read_site_rules(home: Path) -> list[SiteRule]:
    """The site rules of ``home`` ([] when there is no file); a malformed file raises RulesError."""
    path = site_rules_path(home)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise RulesError(f"{path}: cannot read: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise RulesError(f"{path}: invalid TOML: {e}") from e
    return _parse(data, str(path))


def _toml(rules: Sequence[SiteRule]) -> str:
    lines = ["# Site classification rules, written by `mailrelay rules add` (README: Classification review).",
             "# Read before the packaged rules by delivery and feedback, at start-up and on SIGHUP.", ""]
    for r in rules:
        lines.append("[[site]]")
        for key, value in (("name", r.name), ("match", r.match), ("category", r.category.value),
                           ("status", r.status), ("added", r.added)):
            if value:
                lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
        lines.append("")
    return "\n".join(lines)


def add_site_rule(home: Path, match: str, category: str, status: str | None, now: datetime) -> SiteRule:
    """Validate and append one rule; the file is replaced atomically (nothing is written on error)."""
    text, cat, st = validate(match, category, status)
    rules = read_site_rules(home)
    if len(rules) >= MAX_RULES:
        raise RulesError(f"{site_rules_path(home)}: already {MAX_RULES} site rules")
    if any(r.match.lower() == text.lower() for r in rules):
        raise RulesError(f"--match: a site rule for {text!r} exists already")
    taken = {r.name for r in rules}
    n = len(rules) + 1
    while f"{SITE_PREFIX}{n}" in taken:
        n += 1
    rule = SiteRule(f"{SITE_PREFIX}{n}", text, cat, st, now.isoformat(timespec="seconds"))
    body = _toml([*rules, rule])
    _parse(tomllib.loads(body), "new site rules")  # what is written reads back
    path = site_rules_path(home)
    fd, tmp = tempfile.mkstemp(prefix=".site_rules.", dir=home)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return rule


def load_reply_rules(home: Path | None) -> ReplyRules:
    """Delivery's reply rules: the site rules of ``home`` first, then the packaged ones."""
    packaged = ReplyRules.load()
    if home is None:
        return packaged
    site = compile_site_rules(read_site_rules(home), str(site_rules_path(home)))
    return ReplyRules([*site, *packaged.rules])
