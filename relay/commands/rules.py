"""`mailrelay rules list|unclassified|add|reapply`: the classification review loop.

- ``unclassified`` lists the replies and bounces that no phrase rule recognised (a fallback decided
  them), most frequent first, with examples (``relay/rules/review.py`` keeps them);
- ``add`` writes a site rule into ``DIR/site_rules.toml`` (``relay/rules/site.py``), validated;
  a running server reads it on its next reload (SIGHUP, ``systemctl reload mailrelay``) or start;
- ``reapply`` classifies the affected records again (``relay/commands/reapply.py``);
- ``list`` shows the site rules and the packaged ones, in the order they are tried.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relay.commands.common import CommandError, with_storage
from relay.rules import RulesError, packaged_path, packaged_tencent_rules
from relay.rules.reply import ReplyRules, Rule
from relay.rules.review import unclassified_json
from relay.rules.site import STATUSES, SiteRule, add_site_rule, read_site_rules, site_rules_path
from relay.rules.types import Category
from storage.protocols import Storage

_CATEGORIES = ", ".join(c.value for c in Category)


def add_parser(p: argparse.ArgumentParser, with_home: Callable[[argparse.ArgumentParser],
               argparse.ArgumentParser]) -> None:
    sub = p.add_subparsers(dest="rules_command", required=True)
    sp = with_home(sub.add_parser("list", help="site rules and packaged rules, in the order they are tried"))
    sp.add_argument("--json", action="store_true", help="a JSON list")
    sp.set_defaults(func=list_rules)
    sp = with_home(sub.add_parser("unclassified", help="replies and bounces no phrase rule recognised"))
    sp.add_argument("--json", action="store_true", help="a JSON list")
    sp.add_argument("--source", choices=["delivery", "feedback"], help="only replies (delivery) or bounces")
    sp.add_argument("--limit", type=int, default=100, help="at most this many texts (default 100)")
    sp.set_defaults(func=unclassified)
    sp = with_home(sub.add_parser("add", help="add a site rule (DIR/site_rules.toml)"))
    sp.add_argument("--match", required=True, metavar="TEXT",
                    help="text of the reply (case-insensitive; <addr> = any address, # = any number/id)")
    sp.add_argument("--category", required=True, metavar="C", help=f"one of {_CATEGORIES}")
    sp.add_argument("--status", metavar="S",
                    help=f"{' or '.join(STATUSES)}: fail the recipient now or retry (default: the reply code)")
    sp.set_defaults(func=add)
    sp = with_home(sub.add_parser("reapply", help="classify the records a fallback decided again"))
    sp.add_argument("--since", required=True, metavar="DATE",
                    help="records changed since (YYYY-MM-DD or ISO 8601, UTC)")
    sp.add_argument("--json", action="store_true", help="one JSON object")
    sp.set_defaults(func=reapply)


def _site_json(r: SiteRule) -> dict[str, Any]:
    return {"origin": "site", "name": r.name, "category": r.category.value, "match": [r.match],
            "status": r.status, "codes": [], "enhanced": [], "added": r.added or None}


def _rule_json(origin: str, r: Rule) -> dict[str, Any]:
    return {"origin": origin, "name": r.name, "category": r.category.value, "match": [p.pattern for p in r.patterns],
            "status": {"permfail": "invalid", "tempfail": "sending"}.get(r.outcome.value) if r.outcome else None,
            "codes": list(r.codes), "enhanced": list(r.enhanced)}


def _site(home: Path) -> list[SiteRule]:
    try:
        return read_site_rules(home)
    except RulesError as e:
        raise CommandError(str(e)) from None


def list_rules(args: argparse.Namespace) -> int:
    from relay.feedback.classify import BOUNCE_RULES_FILE, BounceClassifier

    rows = [_site_json(r) for r in _site(args.home)]
    reply = ReplyRules.load()
    rows += [_rule_json("reply", r) for r in reply.rules]
    reply_names = {r.name for r in reply.rules}
    rows += [_rule_json("bounce", r) for r in BounceClassifier.load(reply_rules=reply).rules
             if r.name not in reply_names]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    print(f"# site rules: {site_rules_path(args.home)}; packaged: {packaged_path('reply_rules.toml')}, "
          f"{packaged_path(BOUNCE_RULES_FILE)}")
    print(f"{'ORIGIN':<7} {'NAME':<36} {'CATEGORY':<14} {'STATUS':<8} MATCH")
    for r in rows:
        what = " | ".join(r["match"]) or " ".join([*r["codes"], *r["enhanced"]])
        print(f"{r['origin']:<7} {r['name']:<36} {r['category']:<14} {r['status'] or '-':<8} {what[:100]}")
    return 0


def unclassified(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 10_000:
        raise CommandError("--limit: give 1 to 10000")

    async def run(storage: Storage) -> list[dict[str, Any]]:
        return [unclassified_json(r) for r in await storage.unclassified.list(args.source, limit=args.limit)]

    rows = with_storage(args.home, run)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    if not rows:
        print("no unclassified replies")
        return 0
    print(f"{'COUNT':>7} {'SOURCE':<8} {'LAST SEEN':<20} {'RULE':<22} TEXT")
    for r in rows:
        print(f"{r['count']:>7} {r['source']:<8} {r['last_seen'][:19]:<20} {r['rule'][:22]:<22} {r['text']}")
        print(f"{'':>7} examples: {', '.join(r['email_ids'])}")
    return 0


def add(args: argparse.Namespace) -> int:
    try:
        rule = add_site_rule(args.home, args.match, args.category, args.status, datetime.now(UTC))
    except RulesError as e:
        raise CommandError(str(e)) from None
    print(f"added {rule.name}: {rule.match!r} -> {rule.category.value}"
          + (f", {rule.status}" if rule.status else "") + f" ({site_rules_path(args.home)})")
    print("a running server uses it after a reload (systemctl reload mailrelay, or SIGHUP) or a restart; "
          "`mailrelay rules reapply --since DATE` classifies earlier records again")
    return 0


def parse_since(raw: str) -> datetime:
    try:
        at = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise CommandError(f"--since: {raw!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, UTC)") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def reapply(args: argparse.Namespace) -> int:
    from relay.commands.reapply import reapply as run_reapply
    from relay.feedback.setup import load_classifier
    from relay.rules.site import load_reply_rules

    since = parse_since(args.since)
    try:
        rules, bounce = load_reply_rules(args.home), load_classifier(args.home)
    except RulesError as e:
        raise CommandError(str(e)) from None

    async def run(storage: Storage) -> Any:
        return await run_reapply(storage, since, rules, bounce, packaged_tencent_rules(), datetime.now(UTC))

    report = with_storage(args.home, run)
    if args.json:
        print(json.dumps(report.json(), ensure_ascii=False))
        return 0
    for c in report.changes:
        listed = f", bounce list: {c.bounce_list}" if c.bounce_list else ""
        print(f"{c.email_id} {c.recipient}: {c.status_before}/{c.sub_status_before} -> {c.status}/{c.sub_status} "
              f"({c.source}, rule {c.rule}){listed}")
    print(f"{report.examined} records decided by a fallback or site rule since {since.isoformat()}: "
          f"{len(report.changes)} changed; {len(report.resolved)} unclassified texts now covered by a rule")
    return 0


__all__ = ["add_parser"]
