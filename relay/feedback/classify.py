"""Bounce diagnostic -> soft-bounce :class:`Category` (503/505/506/507/508/509), as data.

What it does: :class:`BounceClassifier` matches a recipient row's diagnostic text, reply code and
enhanced status against, in order:

1. ``relay/rules/bounce_rules.toml`` — wording that only appears in bounce mail (queue expiry,
   MTA-local failures, "Google tried to deliver your message", ...) and conditions whose meaning in
   a bounce differs from a live reply (a full mailbox is a *server* condition here, SPEC §4 and the
   corpus mapping). It is small and specific, so it sits first;
2. the shared ``reply_rules.toml`` through :meth:`ReplyRules.match_text` (one rule set with
   delivery, ending in the RFC 3463 status-code fallbacks);
3. both again on the bounce's whole notice text when the per-recipient diagnostic said nothing;
4. structural fallbacks: 4.x.x or ``Action: delayed`` -> server_error, the rest -> others.

Before any rule reads them, a multi-line reply is unfolded and the remote host's own name in the
MTA's frame ("host NAME[IP] said:") and the local part of any quoted address are masked: they
are names, not reasons.

ORDER OF PRECEDENCE (the one place it is written; :meth:`BounceClassifier.classify` follows it):

1. structure — the SMTP stage the reply answered (``command``): a permanent refusal at connect,
   greeting or HELO/EHLO refuses the *sending host*, before any address was named -> ip_rejection,
   whatever the wording (a phrase there names the host's problem, not the mailbox's);
2. the rules above (phrase families that name a cause, then the RFC 3463 enhanced-code rules:
   class / subject / detail, then the reply code), each with its TOML ``role``. Within the phrase
   families the order follows what each names, most specific first: the recipient system's own
   verdicts, content (virus, spam), authentication, our credentials, PTR, suspended, mailbox
   full, too big, limits, not accepting, sender refused, our IP refused, recipient filters, host
   unknown, moved; then the shared reply rules; then the broad bounce wording (network, system
   error, expiry, user unknown without a matching code, IP, spam, named policy, bare refusal);
3. structure again, to weigh the verdict: a "generic" refusal word after Postfix's "Recipient
   address rejected:" prefix is re-judged on the reason after it; a generic refusal next to a
   status that names the cause (subjects 1, 2, 3, 5, 6: bad mailbox, mailbox full, too big ...)
   yields to that status; a generic refusal with an X.7.x status says no more than "security or
   policy" (others); "user unknown" answered to MAIL FROM,
   after DATA or with a non-address status is a refusal, not a missing mailbox (rejected),
   unless the rule's role is authoritative or domain-level or the status is X.1.x;
4. fallbacks: temporary (4.x.x, 4xx or ``Action: delayed``) -> server_error, the rest -> others.

Rules files use the reply-rules format and validation (:func:`compile_rules`); an error names the
file and the rule, at start-up. No I/O after :meth:`BounceClassifier.load`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from relay.rules import RulesError, packaged_path, read_toml
from relay.rules.reply import ReplyRules, Rule, compile_rules
from relay.rules.types import Category, Role

__all__ = ["BOUNCE_RULES_FILE", "BounceClassifier", "Verdict"]

BOUNCE_RULES_FILE = "bounce_rules.toml"


@dataclass(frozen=True, slots=True)
class Verdict:
    category: Category
    rule: str
    fallback: bool = False  # no phrase rule recognised the diagnostic (the review loop keeps it)


#: Characters of a diagnostic / of the notice context the rules read: their regexes are bounded,
#: so this caps the cost of one classification whatever the mail holds.
MAX_DIAGNOSTIC = 4096
MAX_CONTEXT = 8192
_LEAD = re.compile(r"^\s{0,20}([245]\d\d)[ -]{1,20}(?:([245]\.\d{1,3}\.\d{1,3})\s{1,20})?")


def _unfold_reply(text: str) -> str:
    """Join a multi-line reply: "552-5.7.0 This message was ... 552-5.7.0 security issue" ->
    "552-5.7.0 This message was ... security issue": the repeated code and enhanced code of each
    continuation line (and of the last line, "552 5.7.0 ...") are dropped, so phrases read whole."""
    lead = _LEAD.match(text)
    if not lead:
        return text
    code, enhanced = lead.group(1), lead.group(2)
    rest = text[lead.end():]
    if f"{code}-" not in text:
        return text  # one line: a later "550" is part of the text ("-> 550 : User unknown")
    # "550-" continuations, and the last line "550 5.1.1" (only with the same enhanced code)
    enh = rf"{re.escape(enhanced)}\s{{1,20}}" if enhanced else ""
    repeat = rf"(?<=\S)\s{{1,20}}{code}(?:-(?:{enh})?|[ ]{enh})" if enh else rf"(?<=\S)\s{{1,20}}{code}-"
    return text[:lead.end()] + re.sub(repeat, " ", rest)


# A DNS name (at least one dot) as MTAs print the remote host; it starts where a name can start,
# so a long run of letters is tried once, not at each of its characters.
_HOSTNAME = r"(?<![A-Za-z0-9_.-])[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63}){1,10}\.?"
# The remote host's own name in an MTA's fixed frame: Postfix "host NAME[IP] said:", Exim
# "host NAME [IP]:", Sendmail "while talking to NAME.:", "NAME [IP] did not like our RCPT TO",
# the DSN's Remote-MTA / Reporting-MTA fields. A filter appliance's name ("antispam", "barracuda",
# "virusgw") says nothing about why it refused, yet it carries the very words the spam, blocklist
# and virus families look for: it is masked before any rule reads the text.
_REMOTE_HOST = re.compile(
    rf"(?:(?<=\bhost )|(?<=\bwhile talking to )|(?<=-mta: dns; )|(?<=-mta: dns;)){_HOSTNAME}"
    rf"|{_HOSTNAME}(?=\s{{0,5}}\[[0-9A-Fa-f.:]{{1,45}}\])", re.IGNORECASE)


# The local part of an address quoted in the reply ("<nospam@example.org>: User unknown"): a name
# someone chose, not the server's reason. Masked like the host (the domain stays: provider rules
# read it).
_LOCAL_PART = re.compile(r"(?<![A-Za-z0-9._%+=/-])[A-Za-z0-9._%+=/-]{1,64}(?=@[A-Za-z0-9-])")


def _mask_names(text: str) -> str:
    return _LOCAL_PART.sub("user", _REMOTE_HOST.sub("remote-host", text))


def _fused(rules: Sequence[Rule]) -> ReplyRules:
    """The same rules with each rule's patterns joined into one alternation: one regex search per
    rule instead of one per pattern (same matches: ``search`` of ``a|b`` finds either)."""
    out = []
    for rule in rules:
        if len(rule.patterns) > 1:
            joined = "|".join(f"(?:{p.pattern})" for p in rule.patterns)
            rule = replace(rule, patterns=(re.compile(joined, re.IGNORECASE),))
        out.append(rule)
    return ReplyRules(out)


def _match_code(code: int | None, status: str | None, action: str | None) -> int | None:
    """The reply code rules see: the real one, else one implied by the status class or action."""
    if code is not None:
        return code
    if status and status[:1] in ("4", "5"):
        return 450 if status[0] == "4" else 550
    if action == "failed":
        return 550
    if action == "delayed":
        return 450
    return None


# Postfix's fixed prefix of every smtpd_recipient_restrictions refusal ("<addr>: Recipient address
# rejected: <reason>"): the refusal word belongs to the prefix, the reason is the text after it.
_RCPT_REJECTED = re.compile(r"recipient address rejected\b:?", re.IGNORECASE)
_SECURITY_STATUS = re.compile(r"^[45]\.7\.")
# a status whose subject names a cause: not X.0.x (undefined), X.4.x (routing: Exchange answers
# 5.4.1 "Access denied" for a recipient its directory lacks) nor X.7.x (security or policy)
_NAMED_STATUS = re.compile(r"^[45]\.[12356]\.\d{1,3}$")
# SMTP stages before MAIL FROM: what a server refuses there is the sending host (ours).
_PRE_TRANSACTION = frozenset({"CONN", "HELO"})
_TOP_LEVEL = ("rule", "late", "status")
# verdicts no rule decided ("refused": a pre-transaction refusal no rule named)
_FALLBACKS = frozenset({"fallback", "fallback-temporary", "refused"})


def _compile_file(path: Path) -> tuple[list[Rule], list[Rule], list[Rule]]:
    data = read_toml(path)
    unknown = sorted(set(data) - set(_TOP_LEVEL))
    if unknown:
        raise RulesError(f"{path}: unknown top-level key(s) {', '.join(unknown)} "
                         "(use [[rule]], [[late]] and [[status]] tables)")
    tiers = [compile_rules({"rule": data.get(key, [])}, str(path)) for key in _TOP_LEVEL]
    names = [r.name for tier in tiers for r in tier]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise RulesError(f"{path}: rule {sorted(dup)[0]!r} is defined twice")
    for rule in tiers[2]:
        if rule.patterns:
            raise RulesError(f"{path}: [[status]] rule {rule.name!r} may not have match (status codes only)")
    return tiers[0], tiers[1], tiers[2]


class BounceClassifier:
    def __init__(self, early: ReplyRules, reply_rules: ReplyRules, late: ReplyRules | None = None,
                 status: ReplyRules | None = None) -> None:
        self._early = _fused(early.rules)
        self._late = _fused(late.rules if late is not None else ())
        self._reply = reply_rules
        self._reply_text = _fused([r for r in reply_rules.rules if r.patterns])
        self._reply_codes = ReplyRules([*(status.rules if status is not None else ()),
                                        *(r for r in reply_rules.rules if not r.patterns)])

    @classmethod
    def load(cls, reply_rules: ReplyRules | None = None, paths: Sequence[Path] | None = None,
             site: Sequence[Rule] = ()) -> BounceClassifier:
        """Operator bounce-rules files ``paths`` (in order) before the packaged ``bounce_rules.toml``;
        ``site`` rules (``relay/rules/site.py``) before everything.

        An operator rule replaces the packaged rule of the same name. ``reply_rules`` defaults to the
        packaged reply rules; pass the running delivery's instance so operator reply rules apply too.
        """
        early: list[Rule] = []
        late: list[Rule] = []
        status: list[Rule] = []
        names: dict[str, str] = {}
        packaged = packaged_path(BOUNCE_RULES_FILE)
        for path in [*(paths or ()), packaged]:
            file_early, file_late, file_status = _compile_file(path)
            for target, rules in ((early, file_early), (late, file_late), (status, file_status)):
                for rule in rules:
                    if rule.name in names:
                        if path == packaged:
                            continue  # replaced by an operator rule
                        raise RulesError(f"{path}: rule {rule.name!r} is already defined in {names[rule.name]}")
                    names[rule.name] = str(path)
                    target.append(rule)
        return cls(ReplyRules([*site, *early]), reply_rules if reply_rules is not None else ReplyRules.load(),
                   ReplyRules(late), ReplyRules(status))

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule, in the order they are tried."""
        return self._early.rules + self._reply_text.rules + self._late.rules + self._reply_codes.rules

    def _text_match(self, text: str, code: int | None, status: str | None) -> Rule | None:
        if not text:
            return None
        return (self._early.match_text(text, code, status) or self._reply_text.match_text(text, code, status)
                or self._late.match_text(text, code, status))

    def _match(self, diagnostic: str, context: str, mcode: int | None, status: str | None) -> Rule | None:
        rule = self._text_match(diagnostic, mcode, status)
        if rule is None and context and context != diagnostic:
            rule = self._text_match(context, mcode, status)
        if rule is None and (status or mcode):
            rule = self._reply_codes.match_text("", mcode, status)
        return rule

    def classify(self, diagnostic: str, code: int | None = None, status: str | None = None,
                 action: str | None = None, command: str | None = None, context: str = "") -> Verdict:
        diagnostic = _mask_names(_unfold_reply(diagnostic[:MAX_DIAGNOSTIC]))
        context = _mask_names(context[:MAX_CONTEXT])
        mcode = _match_code(code, status, action)
        permanent = (mcode or 0) >= 500 or (status or "").startswith("5")
        rule = self._match(diagnostic, context, mcode, status)
        if command in _PRE_TRANSACTION and permanent and (rule is None or rule.category not in (
                Category.IP_REJECTION, Category.SERVER_ERROR)):
            return Verdict(Category.IP_REJECTION, f"{rule.name if rule else 'refused'}+{command.lower()}",
                           rule is None or not rule.patterns)
        if rule is not None and rule.role is Role.GENERIC and (
                _RCPT_REJECTED.search(diagnostic) or _RCPT_REJECTED.search(context)):
            # Postfix "Recipient address rejected: On hold": the generic word came from the prefix;
            # judge the reason after it (unknown wording then falls to the status code: 5.0.0 ->
            # others, Sisimai's "onhold" — no verdict could be made).
            rule = self._match(_RCPT_REJECTED.sub(" ", diagnostic), _RCPT_REJECTED.sub(" ", context),
                               mcode, status)
        if rule is not None and rule.role is Role.GENERIC and _NAMED_STATUS.match(status or ""):
            # A bare refusal word ("denied", "not allowed") next to a status that names the cause
            # (5.1.1 bad mailbox, 5.2.2 mailbox full, 5.3.4 too big ...): the status says more
            # than the word, so it decides (Sisimai likewise lets a status it can name win over
            # its weaker phrase families).
            rule = self._reply_codes.match_text("", mcode, status) or rule
        if (rule is not None and rule.role is Role.GENERIC and command != "MAIL"
                and _SECURITY_STATUS.match(status or "")):
            # RFC 3463 X.7.x is "security or policy status": with nothing but a generic "denied" /
            # "policy violation" it says no more than that, so no receiver verdict on the address
            # or content can be read (Sisimai: securityerror). Refused at MAIL FROM it is our
            # sender that was refused (rejected, Sisimai's rule for the MAIL command).
            return Verdict(Category.OTHERS, "bounce-security-unspecified")
        if rule is None:
            if (status or "").startswith("4") or action == "delayed" or (code is not None and 400 <= code < 500):
                return Verdict(Category.SERVER_ERROR, "fallback-temporary", True)
            return Verdict(Category.OTHERS, "fallback", True)
        if rule.category is Category.NOT_EXIST and _refused_not_missing(rule.role, status, command, code):
            return Verdict(Category.REJECTED, f"{rule.name}+{(command or 'status').lower()}", not rule.patterns)
        return Verdict(rule.category, rule.name, not rule.patterns)

    def is_fallback(self, name: str) -> bool:
        """Whether a verdict's rule name (as the send log shows it, e.g. ``status-mailbox+data``)
        decided without any phrase: the fallbacks and the rules by status or reply code alone."""
        base = name.split("+", 1)[0]
        if base in _FALLBACKS:
            return True
        rule = next((r for r in self.rules if r.name == base), None)
        return rule is not None and not rule.patterns


def _refused_not_missing(role: Role, status: str | None, command: str | None, code: int | None) -> bool:
    """Sisimai's rule: "user unknown" relayed from a remote server counts only when it answered
    RCPT TO (or gave an X.1.x address status). Said to MAIL FROM it is about our sender; said after
    DATA, with a policy/mailbox status, or with no telling at all, it may be a content filter's
    refusal — the address is not known to be gone (and must not enter the bounce list).
    A report by the recipient's own mail server (no remote reply code, status or command: Exchange,
    IMail, local delivery agents) is authoritative."""
    if command == "MAIL":
        return True
    if role in (Role.DOMAIN, Role.AUTHORITATIVE):
        return False
    if command == "RCPT" or (status is not None and status.split(".")[1:2] == ["1"]):
        return False
    return command is not None or status is not None or code is not None
