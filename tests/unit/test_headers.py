"""Label and email-type headers are read and removed; Subject is decoded; the body is untouched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from relay.headers import find_header_end, process_headers, received_header, with_protocol
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


AT = datetime(2026, 12, 3, 8, 17, 8, tzinfo=UTC)


def test_received_header_one_recipient() -> None:
    h = received_header(helo="client.example", peer_ip="192.0.2.7", api_user="app1", hostname="relay.example.com",
                        protocol="ESMTPSA", email_id="E123", recipients=["bob@example.org"], at=AT)
    assert h == (b"Received: from client.example ([192.0.2.7])\r\n"
                 b"\t(Authenticated sender: app1)\r\n"
                 b"\tby relay.example.com (mailrelay) with ESMTPSA id E123\r\n"
                 b"\tfor <bob@example.org>; Thu, 03 Dec 2026 08:17:08 +0000\r\n")


def test_received_header_dates_of_one_second_and_of_two_zones() -> None:
    """The date text is reused within a second (cached), never across zones or seconds."""
    def date(at: datetime) -> str:
        return received_header(helo="c", peer_ip="192.0.2.7", api_user=None, hostname="r", protocol="ESMTP",
                               email_id="E", recipients=["b@example.org"], at=at).decode().rsplit("; ", 1)[1]

    assert date(AT) == date(AT.replace(microsecond=999_999)) == "Thu, 03 Dec 2026 08:17:08 +0000\r\n"
    assert date(AT.astimezone(timezone(timedelta(hours=1)))) == "Thu, 03 Dec 2026 09:17:08 +0100\r\n"
    assert date(AT + timedelta(seconds=1)) == "Thu, 03 Dec 2026 08:17:09 +0000\r\n"


def test_received_header_several_recipients_ipv6_and_hostile_helo() -> None:
    h = received_header(helo="x)(\\evil;", peer_ip="2001:db8::1", api_user=None, hostname="relay.example.com",
                        protocol="ESMTP", email_id="E1", recipients=["a@x.org", "b@x.org"], at=AT).decode()
    assert h.startswith("Received: from xevil ([IPv6:2001:db8::1])\r\n\tby relay.example.com")
    assert "for <" not in h and "Authenticated" not in h
    assert h.endswith("id E1;\r\n\tThu, 03 Dec 2026 08:17:08 +0000\r\n")


def test_with_protocol_rfc3848() -> None:
    kinds = {(t, a): with_protocol(esmtp=True, tls=t, authenticated=a, smtputf8=False)
             for t in (False, True) for a in (False, True)}
    assert kinds == {(False, False): "ESMTP", (True, False): "ESMTPS", (False, True): "ESMTPA",
                     (True, True): "ESMTPSA"}
    assert with_protocol(esmtp=True, tls=True, authenticated=True, smtputf8=True) == "UTF8SMTPSA"
    assert with_protocol(esmtp=False, tls=False, authenticated=False, smtputf8=False) == "SMTP"
