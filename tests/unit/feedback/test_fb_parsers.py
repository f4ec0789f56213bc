"""DSN / ARF / non-standard parsers, the bounce classifier and the `feedback classify` CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from fb_scoring import FIXTURES

from relay import verp
from relay.commands import feedback as cli
from relay.feedback import BounceClassifier, first, parse
from relay.feedback.classify import _refused_not_missing
from relay.rules import RulesError
from relay.rules.types import Category, Role
from storage.records import SubStatus

EMAILS = FIXTURES / "emails"
SECRET = b"k" * 32


def _dsn(rcpt: str, status: str, diag: str, to: str = "b@fb.example.net", extra: str = "") -> bytes:
    return (
        f"From: MAILER-DAEMON@mx.example.org\r\nTo: {to}\r\nSubject: Delivery Status Notification\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nOriginal-Recipient: rfc822;{rcpt}\r\nAction: failed\r\n"
        f"Status: {status}\r\nRemote-MTA: dns; mx.dest.example\r\nDiagnostic-Code: smtp; {diag}\r\n{extra}\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <orig-1@relay.example>\r\n"
        "From: shop@customer.example\r\nTo: " + rcpt + "\r\nReturn-Path: <" + to + ">\r\n\r\n--B--\r\n"
    ).encode()


def test_dsn_fields_and_matching_data() -> None:
    bounce_to = verp.encode("01J8Z5Q3N9XKQ4T7V2M6R8W0AB", "gone@example.com", "fb.example.net", SECRET)
    r = parse(_dsn("gone@example.com", "5.1.1", "550 5.1.1 <gone@example.com>: User unknown", to=bounce_to))
    assert r.kind == "dsn" and r.feedback_class == "soft_bounce" and r.format == "rfc3464"
    row = first(r)
    assert row is not None
    assert (row.recipient, row.original_recipient, row.action, row.status, row.smtp_code) == (
        "gone@example.com", "gone@example.com", "failed", "5.1.1", 550)
    assert row.remote_mta == "mx.dest.example" and row.category is Category.NOT_EXIST
    assert row.sub_status is SubStatus.SB_NOT_EXIST
    assert r.original_message_id == "<orig-1@relay.example>"
    assert r.original_header("from") == "shop@customer.example"
    assert r.bounce_to == bounce_to and r.reporting_mta == "mx.example.org"
    token = verp.decode(r.bounce_to, SECRET)
    assert token is not None and token.recipient_hash == verp.recipient_hash(row.recipient)


@pytest.mark.parametrize(("status", "diag", "category"), [
    ("5.2.2", "552 5.2.2 Mailbox full", Category.SERVER_ERROR),
    ("5.7.1", "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
     Category.IP_REJECTION),
    ("5.7.1", "550 5.7.1 Message rejected as spam by Content Filtering", Category.SPAM_REJECTED),
    ("5.7.1", "550 5.7.1 Relaying denied", Category.REJECTED),
    ("4.4.7", "Message expired: unable to deliver in 840 minutes", Category.SERVER_ERROR),
    ("5.7.26", "550 5.7.26 Unauthenticated email from x is not accepted due to domain's DMARC policy",
     Category.REJECTED),
    ("5.0.0", "550 Host unknown", Category.NOT_EXIST),
    ("5.3.0", "554 5.3.0 unknown mailer error 255", Category.SERVER_ERROR),
])
def test_dsn_categories(status: str, diag: str, category: Category) -> None:
    row = first(parse(_dsn("x@example.com", status, diag)))
    assert row is not None and row.category is category, row


def test_delivery_success_dsn_is_not_a_bounce() -> None:
    raw = _dsn("ok@example.com", "2.0.0", "250 2.0.0 OK").replace(b"Action: failed", b"Action: delivered")
    r = parse(raw)
    assert r.kind == "dsn" and r.is_delivery_success and r.feedback_class is None
    assert first(r) is not None and first(r).category is None  # type: ignore[union-attr]


def test_multi_recipient_dsn_keeps_each_row() -> None:
    r = parse((EMAILS / "lhost-postfix-02.eml").read_bytes())
    assert [x.recipient for x in r.recipients] == ["filtered@example.co.jp", "userunknown@example.co.jp"]
    assert all(x.category is Category.NOT_EXIST for x in r.recipients)


def test_arf_report() -> None:
    r = parse((EMAILS / "arf-02.eml").read_bytes())
    assert r.kind == "arf" and r.feedback_class == "complaint" and r.feedback_type == "abuse"
    assert first(r).recipient == "this-local-part-does-not-exist-on-yahoo@yahoo.com"  # type: ignore[union-attr]
    assert r.original_sender == "shironeko@example.com"
    assert first(r).category is None  # type: ignore[union-attr]


def test_arf_microsoft_jmrp() -> None:
    r = parse((EMAILS / "arf-23.eml").read_bytes())
    assert r.kind == "arf" and first(r).recipient == "kijitora@example.com"  # type: ignore[union-attr]


def test_nonstandard_exim_and_qmail() -> None:
    exim = parse((EMAILS / "lhost-exim-02.eml").read_bytes())
    assert exim.kind == "dsn" and [x.recipient for x in exim.recipients] == ["kijitora@example.jp",
                                                                          "sabatora@example.jp"]
    assert exim.recipients[0].command == "RCPT" and exim.recipients[0].smtp_code == 550
    qmail = parse((EMAILS / "lhost-qmail-13.eml").read_bytes())
    row = first(qmail)
    assert row is not None and row.recipient == "nekochan@cx.libsisimai.com" and row.status == "5.1.2"
    assert row.category is Category.NOT_EXIST


def test_amazon_ses_json() -> None:
    r = parse((EMAILS / "lhost-amazonses-09.eml").read_bytes())
    assert r.kind == "dsn" and first(r).recipient == "bounce@simulator.amazonses.com"  # type: ignore[union-attr]
    ok = parse((EMAILS / "lhost-amazonses-12.eml").read_bytes())
    assert ok.is_delivery_success and ok.feedback_class is None


def test_user_unknown_after_data_is_a_filter_not_a_missing_mailbox() -> None:
    assert _refused_not_missing(Role.NONE, "5.0.0", "DATA", 550)
    assert not _refused_not_missing(Role.NONE, "5.1.1", "DATA", 550)
    assert not _refused_not_missing(Role.NONE, None, "RCPT", 550)
    assert _refused_not_missing(Role.DOMAIN, None, "MAIL", 553)
    assert not _refused_not_missing(Role.DOMAIN, None, "DATA", 553)
    assert not _refused_not_missing(Role.AUTHORITATIVE, "5.0.0", "DATA", 550)
    assert not _refused_not_missing(Role.NONE, None, None, None)  # the mailbox server's own report


def test_rule_roles_are_toml_attributes() -> None:
    """The roles the classifier weighs come from the rules files, not from Python sets of names."""
    roles = {r.name: r.role for r in BounceClassifier.load().rules}
    assert roles["bounce-local-user-unknown"] is Role.AUTHORITATIVE
    assert roles["bounce-google-address-not-found"] is Role.AUTHORITATIVE
    assert roles["bounce-host-unknown"] is Role.DOMAIN and roles["bounce-has-moved"] is Role.DOMAIN
    assert {n for n, r in roles.items() if r is Role.GENERIC} == {"rejected-generic", "bounce-policy", "status-policy"}


def test_bounce_rules_validated(tmp_path: Path) -> None:
    classifier = BounceClassifier.load()
    assert len(classifier.rules) > 50
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "x"\nmatch = ["("]\ncategory = "others"\n')
    with pytest.raises(RulesError, match="bad regex"):
        BounceClassifier.load(paths=[bad])
    bad.write_text('[[rule]]\nname = "x"\nmatch = ["a"]\ncategory = "nope"\n')
    with pytest.raises(RulesError, match="category"):
        BounceClassifier.load(paths=[bad])
    bad.write_text('[[rules]]\nname = "x"\n')
    with pytest.raises(RulesError, match="unknown top-level"):
        BounceClassifier.load(paths=[bad])
    override = tmp_path / "ops.toml"
    override.write_text('[[rule]]\nname = "bounce-mailbox-full"\nmatch = ["mailbox full"]\ncategory = "others"\n')
    ops = BounceClassifier.load(paths=[override])
    assert ops.classify("552 5.2.2 Mailbox full", 552, "5.2.2").category is Category.OTHERS


def test_cli_json_in_order_and_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser, lambda p: p)
    files = [str(EMAILS / "lhost-exim-02.eml"), str(tmp_path / "missing.eml"), str(EMAILS / "arf-01.eml")]
    args = parser.parse_args(["classify", "--json", *files])
    assert args.func(args) == 1  # one file could not be read; the others are still reported
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"mailrelay: {files[1]}: cannot read it (FileNotFoundError: No such file or directory)"]
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["file"] for x in lines] == files
    assert lines[0]["kind"] == "dsn" and lines[0]["class"] == "soft_bounce" and lines[0]["sub_status"] == 506
    assert lines[0]["status"] == "5.1.1" and lines[0]["smtp_code"] == 550 and lines[0]["rule"]
    assert lines[1]["kind"] == "unknown" and "error" in lines[1] and lines[1]["class"] is None
    assert lines[2]["kind"] == "arf" and lines[2]["class"] == "complaint" and lines[2]["category"] is None
    args = parser.parse_args(["classify", *files])
    assert args.func(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "soft_bounce/not_exist (506)" in out[0] and "error" in out[1]


@pytest.mark.parametrize(("diag", "code", "status", "command", "category"), [
    # Postfix "Recipient address rejected:" prefix alone is no reason: the text after it decides
    ("550 5.0.0 <a@example.net>: Recipient address rejected: On hold", 550, "5.0.0", "RCPT", Category.OTHERS),
    ("550 5.1.1 <a@example.net>: Recipient address rejected: User unknown", 550, "5.1.1", "RCPT",
     Category.NOT_EXIST),
    # X.7.x with a generic refusal only: no verdict (Sisimai securityerror) unless said to MAIL FROM
    ("550 5.7.0 <a@example.net>: Recipient address rejected: Policy violation", 550, "5.7.0", "RCPT",
     Category.OTHERS),
    ("550 5.7.1 Access denied", 550, "5.7.1", "MAIL", Category.REJECTED),
    # KDDI au's filter answer vs a missing mailbox
    ("550 5.1.351 Remote server returned unknown recipient -> 550 : User unknown", 550, "5.1.351", None,
     Category.REJECTED),
    # a local delivery agent is authoritative even under Sendmail's "Service unavailable" summary
    ("mail.local: unknown user: neko 554 <neko@example.net>... Service unavailable", 554, "5.5.0", None,
     Category.NOT_EXIST),
])
def test_bounce_reason_rules(diag: str, code: int, status: str, command: str | None, category: Category) -> None:
    verdict = BounceClassifier.load().classify(diag, code, status, "failed", command)
    assert verdict.category is category, verdict
