"""Label and email-type headers are read and removed; Subject is decoded; the body is untouched."""

from __future__ import annotations

from relay.headers import find_header_end, process_headers
from storage.records import EmailType

LABELS = ("X-Label", "X-Label-Id")
TYPES = ("X-Email-Type",)


def test_label_and_type_removed_subject_decoded() -> None:
    block = (b"From: a@example.com\r\nX-Label: spring\r\n sale\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
             b"x-email-type: Marketing\r\nTo: b@example.com\r\n\r\n")
    out, facts = process_headers(block, LABELS, TYPES)
    assert out == b"From: a@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nTo: b@example.com\r\n\r\n"
    assert facts.label == "spring sale"
    assert facts.email_type is EmailType.MARKETING
    assert facts.subject == "Grüße"
    assert facts.type_error is None


def test_bad_type_is_reported() -> None:
    _, facts = process_headers(b"X-Email-Type: newsletter\r\n\r\n", LABELS, TYPES)
    assert facts.email_type is None and facts.type_error == "newsletter"


def test_header_end_detection() -> None:
    assert find_header_end(b"A: b\r\n\r\nbody") == 8
    assert find_header_end(b"\r\nbody") == 2
    assert find_header_end(b"A: b\r\nC: d\r\n") == -1


def test_no_headers_kept() -> None:
    out, facts = process_headers(b"X-Label: x\r\n\r\n", LABELS, TYPES)
    assert out == b"\r\n" and facts.label == "x"


def test_message_id_kept_or_added() -> None:
    out, facts = process_headers(b"Message-ID: <a@b>\r\nSubject: s\r\n\r\n", LABELS, TYPES, "<new@relay>")
    assert facts.message_id == "<a@b>" and b"<new@relay>" not in out
    out, facts = process_headers(b"Subject: s\r\n\r\n", LABELS, TYPES, "<new@relay>")
    assert facts.message_id == "<new@relay>" and out.startswith(b"Message-ID: <new@relay>\r\n")
