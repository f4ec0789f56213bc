"""Classification from structure first (issue #13 items 1 and 7): the SMTP stage of the reply,
the RFC 3463 enhanced code, the reply code — and the extraction fixes, each stated as behaviour.

The tests at the bottom pin behaviour that mutation testing showed unpinned (implied 450/550
codes, the authoritative role, fallback-temporary, ``code < 500``, EHLO before the transaction,
enhanced-code normalisation)."""

from __future__ import annotations

import json

import pytest

from relay.feedback import parse
from relay.feedback.classify import BounceClassifier, _match_code
from relay.feedback.scan import find_command, find_enhanced, find_reply_code
from relay.rules.reply import ReplyRules, Rule, default_scope
from relay.rules.types import AttemptResult, Category, Outcome, Scope, Stage


@pytest.fixture(scope="module")
def classifier() -> BounceClassifier:
    return BounceClassifier.load()


def _dsn(diag: str | None, human: str, status: str = "5.0.0", final: str = "rfc822; gone@example.com",
         original: str | None = None, extra_groups: str = "") -> bytes:
    groups = f"Final-Recipient: {final}\n" + (f"Original-Recipient: {original}\n" if original else "")
    groups += f"Action: failed\nStatus: {status}\n" + (f"Diagnostic-Code: smtp; {diag}\n" if diag else "")
    return ("From: MAILER-DAEMON@mx.example.org\nTo: b-x@fb.example.net\nSubject: Undelivered Mail\n"
            "MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n"
            f"--B\nContent-Type: text/plain\n\n{human}\n--B\nContent-Type: message/delivery-status\n\n"
            f"Reporting-MTA: dns; mx.example.org\n\n{groups}{extra_groups}--B--\n").encode()


# region the SMTP stage of the reply
@pytest.mark.parametrize("text", [
    "host mx.example.com said: 550 User unknown (in reply to RCPT TO command)",
    "host mx.example.com said: 550 User unknown (in reply to RCPT\n    TO command)",
    "host mx.example.com said: 550 User unknown (in reply\n to RCPT TO\n command)",
    "[RCPT_TO] 550 User unknown",
    "SMTP error from remote mail server after RCPT TO:<gone@example.com>: 550 User unknown",
])
def test_rcpt_stage_is_found_also_wrapped_or_bracketed(text: str) -> None:
    assert find_command(text) == "RCPT"


def test_the_stage_decides_user_unknown(classifier: BounceClassifier) -> None:
    # answered to RCPT TO: the mailbox is missing; after DATA: a content filter's refusal
    assert classifier.classify("550 User unknown", 550, "5.0.0", "failed", "RCPT").category is Category.NOT_EXIST
    assert classifier.classify("550 User unknown", 550, "5.0.0", "failed", "DATA").category is Category.REJECTED


def test_wrapped_rcpt_stage_in_a_postfix_dsn_keeps_the_address_missing() -> None:
    human = ("<gone@example.com>: host mx.example.com[192.0.2.1] said: 550 User unknown (in reply to RCPT\n"
             "    TO command)")
    [row] = parse(_dsn(None, human)).recipients
    assert row.command == "RCPT" and row.category is Category.NOT_EXIST


@pytest.mark.parametrize("command", ["CONN", "HELO"])
def test_refusal_before_mail_from_is_an_ip_rejection(classifier: BounceClassifier, command: str) -> None:
    """Before MAIL FROM no address was named: what the server refuses is the sending host."""
    for text, status in (("554 5.7.1 Access denied", "5.7.1"), ("550 User unknown", "5.0.0"),
                         ("554 Transaction failed", None)):
        verdict = classifier.classify(text, int(text[:3]), status, "failed", command)
        assert verdict.category is Category.IP_REJECTION, (text, verdict)
    # a temporary refusal there is no verdict on our IP
    assert classifier.classify("421 Service not available", 421, "4.0.0", "delayed", command).category \
        is Category.SERVER_ERROR


def test_helo_stage_from_a_postfix_notice() -> None:
    human = ("<gone@example.com>: host mx.example.com[192.0.2.1] said: 550 Transaction failed "
             "(in reply to EHLO command)")
    [row] = parse(_dsn(None, human)).recipients
    assert row.command == "HELO" and row.category is Category.IP_REJECTION
# endregion


# region RFC 3463 and multi-line replies
@pytest.mark.parametrize(("status", "category"), [
    ("5.1.1", Category.NOT_EXIST), ("5.1.2", Category.NOT_EXIST), ("5.1.10", Category.REJECTED),
    ("5.2.1", Category.REJECTED), ("5.2.2", Category.SERVER_ERROR), ("4.2.2", Category.SERVER_ERROR),
    ("5.3.4", Category.SERVER_ERROR), ("4.4.7", Category.SERVER_ERROR), ("5.5.2", Category.OTHERS),
    ("4.5.0", Category.SERVER_ERROR), ("5.6.0", Category.SPAM_REJECTED), ("5.0.0", Category.OTHERS),
    ("4.0.0", Category.SERVER_ERROR), ("5.1.3", Category.NOT_EXIST), ("5.1.8", Category.REJECTED),
    ("4.1.1", Category.SERVER_ERROR), ("5.1.4", Category.REJECTED), ("5.2.4", Category.REJECTED),
    ("5.3.2", Category.REJECTED), ("5.5.3", Category.SERVER_ERROR), ("5.7.13", Category.REJECTED),
    ("5.7.17", Category.NOT_EXIST), ("5.7.23", Category.REJECTED), ("5.7.25", Category.IP_REJECTION),
    ("5.7.27", Category.REJECTED), ("5.7.28", Category.SPAM_REJECTED),
])
def test_enhanced_code_alone(classifier: BounceClassifier, status: str, category: Category) -> None:
    assert classifier.classify("no wording any rule knows", None, status, "failed").category is category


def test_multiline_reply_is_read_without_its_inner_codes(classifier: BounceClassifier) -> None:
    text = ("550-5.7.1 The message was not delivered because it was detected as 550-5.7.1 spam "
            "by our filters 550 5.7.1 https://help.example")
    assert classifier.classify(text, 550, "5.7.1", "failed", "DATA").category is Category.SPAM_REJECTED
    # a one-line reply keeps a later "550" that belongs to its text
    assert classifier.classify("550 5.1.351 Remote server returned -> 550 : User unknown", 550, "5.1.351",
                               "failed").rule == "bounce-kddi-filtered"
# endregion


# region extraction
def test_a_250_line_is_not_the_reply() -> None:
    human = ("<gone@example.com>: transcript follows\n>>> RCPT TO:<gone@example.com>\n<<< 250 2.1.5 Ok\n"
             ">>> DATA\n<<< 554 5.7.1 Message refused")
    [row] = parse(_dsn(None, human, status="5.0.0")).recipients
    assert row.smtp_code == 554 and row.status == "5.7.1"
    assert find_reply_code("250 2.1.5 Ok\n550 5.1.1 no", strict=True, failure=True) == 550
    assert find_enhanced("250 2.1.5 Ok, 550 5.1.1 no", failure=True) == "5.1.1"


def test_another_recipients_line_does_not_decide_this_one() -> None:
    human = ("<gone@example.com>: host mx said: 550 5.1.1 User unknown\n"
             "<full@example.com>: host mx said: 552 5.2.2 Mailbox full")
    other = "Final-Recipient: rfc822; full@example.com\nAction: failed\nStatus: 5.0.0\n\n"
    rows = {r.recipient: r for r in parse(_dsn(None, human, extra_groups="\n" + other)).recipients}
    assert rows["gone@example.com"].category is Category.NOT_EXIST
    assert "Mailbox full" not in rows["gone@example.com"].diagnostic
    assert rows["full@example.com"].category is Category.SERVER_ERROR


def test_dsn_inside_a_message_rfc822_part_is_read() -> None:
    inner = _dsn("550 5.1.1 <gone@example.com>: User unknown", "delivery failed", status="5.1.1").decode()
    raw = ("From: postmaster@relay.example\nTo: b-x@fb.example.net\nSubject: Fwd: Undelivered Mail\n"
           "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"O\"\n\n"
           "--O\nContent-Type: text/plain\n\nThe bounce below came back to our relay.\n"
           f"--O\nContent-Type: message/rfc822\n\n{inner}\n--O--\n").encode()
    report = parse(raw)
    assert report.kind == "dsn" and report.recipients[0].recipient == "gone@example.com"
    assert report.recipients[0].category is Category.NOT_EXIST


def test_original_recipient_when_final_recipient_is_unusable() -> None:
    report = parse(_dsn("550 5.1.1 User unknown", "failed", status="5.1.1", final="rfc822; gone@localhost",
                        original="rfc822; gone@example.com"))
    assert report.recipients[0].recipient == "gone@example.com"


def test_ses_complaint_is_a_complaint_not_a_dsn() -> None:
    body = {"notificationType": "Complaint", "complaint": {
        "complainedRecipients": [{"emailAddress": "angry@example.com"}], "complaintFeedbackType": "abuse"},
        "mail": {"destination": ["angry@example.com"]}}
    raw = ("From: no-reply@sns.amazonaws.com\nTo: fbl@fb.example.net\nSubject: AWS Notification Message\n"
           "Content-Type: text/plain\n\nFinal-Recipient: rfc822; angry@example.com\n\n"
           + json.dumps(body)).encode()
    report = parse(raw)
    assert report.kind == "arf" and report.feedback_type == "abuse"
    assert report.recipients[0].recipient == "angry@example.com"
# endregion


# region behaviour that mutation testing found unpinned
def test_implied_reply_codes() -> None:
    """Without a reply code, the status class (or the action) implies 450 or 550 for the rules."""
    assert _match_code(None, "4.2.2", None) == 450
    assert _match_code(None, "5.1.1", None) == 550
    assert _match_code(None, None, "failed") == 550
    assert _match_code(None, None, "delayed") == 450
    assert _match_code(None, None, None) is None
    assert _match_code(421, "5.1.1", "failed") == 421  # a real code wins


def test_implied_code_reaches_code_only_rules() -> None:
    temp = Rule(name="temp", category=Category.SERVER_ERROR, codes=("4xx",))
    perm = Rule(name="perm", category=Category.REJECTED, codes=("5xx",))
    c = BounceClassifier(ReplyRules([]), ReplyRules([temp, perm]))
    assert c.classify("nothing", None, "4.9.9").rule == "temp"
    assert c.classify("nothing", None, "5.9.9").rule == "perm"


def test_authoritative_role_keeps_user_unknown_whatever_the_stage(classifier: BounceClassifier) -> None:
    for text in ("mail.local: unknown user gone", "Your message wasn't delivered to gone@example.com because the "
                 "address couldn't be found, or is unable to receive mail."):
        v = classifier.classify(text, None, "5.0.0", "failed", "DATA")
        assert v.category is Category.NOT_EXIST, (text, v)


def test_fallback_temporary_is_a_server_error(classifier: BounceClassifier) -> None:
    empty = BounceClassifier(ReplyRules([]), ReplyRules([]))
    assert empty.classify("zzz", 451).category is Category.SERVER_ERROR
    assert empty.classify("zzz", 451).rule == "fallback-temporary"
    assert empty.classify("zzz", None, None, "delayed").rule == "fallback-temporary"
    assert empty.classify("zzz", None, "4.9.9").category is Category.SERVER_ERROR
    assert empty.classify("zzz", 499).category is Category.SERVER_ERROR
    assert (empty.classify("zzz", 500).category, empty.classify("zzz", 500).rule) == (Category.OTHERS, "fallback")
    assert classifier.classify("qwerty asdf", 451, None).category is Category.SERVER_ERROR


def test_reply_code_500_is_permanent() -> None:
    c = ReplyRules([]).classify(AttemptResult(Stage.RCPT, 500, None, "syntax error"))
    assert (c.outcome, c.category, c.rule) == (Outcome.PERMFAIL, Category.OTHERS, "default-5xx")
    c = ReplyRules([]).classify(AttemptResult(Stage.RCPT, 499, None, "later"))
    assert (c.outcome, c.category, c.rule) == (Outcome.TEMPFAIL, Category.SERVER_ERROR, "default-4xx")


@pytest.mark.parametrize("stage", [Stage.DNS, Stage.CONNECT, Stage.GREETING, Stage.EHLO, Stage.STARTTLS])
def test_pre_transaction_stages_concern_the_site(stage: Stage) -> None:
    assert default_scope(stage) is Scope.SITE
    c = ReplyRules([]).classify(AttemptResult(stage, 554, None, "go away"))
    assert c.scope is Scope.SITE


@pytest.mark.parametrize("stage", [Stage.MAIL, Stage.RCPT, Stage.DATA, Stage.DOT])
def test_transaction_stages_concern_the_recipient(stage: Stage) -> None:
    assert default_scope(stage) is Scope.RECIPIENT


def test_enhanced_codes_are_normalised_before_matching() -> None:
    rule = Rule(name="r", category=Category.NOT_EXIST, enhanced=("5.1.1",))
    assert rule.matches("x", 550, "5.01.001")
    assert rule.matches("x", 550, " 5.1.1 ")
    assert not rule.matches("x", 550, "5.1.10")
    assert not rule.matches("x", 550, "5.1")
# endregion


# region phrase families that name a cause (wording seen out of context before)
@pytest.mark.parametrize(("text", "code", "status", "category"), [
    ("550 Recipient address lookup failed in directory", 550, None, Category.NOT_EXIST),
    ("550 5.7.1 LDAP lookup: user not in directory", 550, "5.7.1", Category.NOT_EXIST),  # not a block list
    ("554 5.4.4 SMTPSEND.DNS.NonExistentDomain; nonexistent domain", 554, "5.4.4", Category.NOT_EXIST),
    ("550 5.1.2 Domain does not exist", 550, "5.1.2", Category.NOT_EXIST),  # not a system error
    ("554 Transaction failed: local error in processing", 554, None, Category.SERVER_ERROR),
    ("550 Server is too busy", 550, None, Category.SERVER_ERROR),
    ("451 Insufficient system storage", 451, None, Category.SERVER_ERROR),
    ("554 Not permitted", 554, None, Category.REJECTED),
    ("550 5.7.1 SPF check failed", 550, "5.7.1", Category.REJECTED),  # authentication, not spam
    ("550 5.7.26 Unauthenticated email is not accepted due to domain's DMARC policy", 550, "5.7.26",
     Category.REJECTED),
    ("554 Your IP 192.0.2.1 is listed on zen.spamhaus.org", 554, None, Category.IP_REJECTION),
    ("550 Message rejected due to spam content", 550, None, Category.SPAM_REJECTED),
])
def test_phrase_families(classifier: BounceClassifier, text: str, code: int, status: str | None,
                         category: Category) -> None:
    assert classifier.classify(text, code, status, "failed", "RCPT").category is category
# endregion
