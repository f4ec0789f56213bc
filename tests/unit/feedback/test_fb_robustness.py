"""parse() never raises and stays bounded on hostile or broken input."""

from __future__ import annotations

import random
import time

import pytest
from fb_scoring import FIXTURES

from relay.feedback import parse
from relay.feedback.mime import MAX_BYTES

DSN = (
    b"From: MAILER-DAEMON@mx.example.org\r\nTo: b-x@fb.example.net\r\nSubject: Undelivered Mail Returned to Sender\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n"
    b"--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
    b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
    b"Final-Recipient: rfc822; gone@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown\r\n"
)


def _timed(raw: bytes, limit: float = 5.0):
    t = time.perf_counter()
    report = parse(raw)
    elapsed = time.perf_counter() - t
    assert elapsed < limit, f"parse took {elapsed:.2f}s"
    return report


def test_empty_and_whitespace() -> None:
    for raw in (b"", b"\r\n\r\n", b"   "):
        r = _timed(raw)
        assert r.kind == "unknown" and r.reason


def test_binary_junk() -> None:
    rng = random.Random(1)
    for size in (1, 100, 10_000, 1_000_000):
        r = _timed(bytes(rng.getrandbits(8) for _ in range(size)) if size < 100_000 else rng.randbytes(size))
        assert r.kind in ("unknown", "dsn", "arf")


def test_truncated_dsn_still_parsed() -> None:
    for cut in range(0, len(DSN), 7):
        _timed(DSN[:cut])
    r = _timed(DSN)
    assert r.kind == "dsn" and r.recipients[0].recipient == "gone@example.com"
    assert r.recipients[0].status == "5.1.1" and r.recipients[0].smtp_code == 550


def test_broken_boundary_and_headers() -> None:
    raw = DSN.replace(b'boundary="B"', b'boundary="NOPE"').replace(b"Subject:", b"Subject\x00: \xff\xfe")
    r = _timed(raw)
    assert r.kind == "dsn"
    assert r.recipients[0].recipient == "gone@example.com"


def test_unknown_and_bogus_charsets() -> None:
    for cs in (b"x-klingon", b"utf-8'evil", b"\xff\xfe", b"utf-7", b"iso-2022-jp"):
        raw = (b"From: MAILER-DAEMON@x\r\nSubject: =?" + cs + b"?B?////?=\r\n"
               b"Content-Type: text/plain; charset=\""
               + cs + b"\"\r\n\r\nThe following address(es) failed:\r\n\r\n  who@example.com\r\n"
               b"    \xff\xfe 550 no\r\n")
        r = _timed(raw)
        assert r.kind == "dsn"


def test_deep_nesting_200_levels() -> None:
    head = b"From: MAILER-DAEMON@x\r\nSubject: Returned mail\r\nMIME-Version: 1.0\r\n"
    body = b""
    parts = []
    for i in range(200):
        parts.append(b"Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n" % (i, i))
    raw = head + b"".join(parts) + b"Content-Type: text/plain\r\n\r\nhello\r\n" + body
    r = _timed(raw, 2.0)
    assert r.kind in ("unknown", "dsn")
    deeper = head + b"".join(b"Content-Type: message/rfc822\r\n\r\n" for _ in range(5000)) + b"x\r\n"
    _timed(deeper, 2.0)
    deepest = head + b"".join(parts * 30)
    _timed(deepest, 2.0)


def test_50mb_attachment_bounded() -> None:
    big = b"QUFB" * (50 * 1024 * 1024 // 4)
    raw = DSN + b"\r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" \
        + big + b"\r\n--B--\r\n"
    r = _timed(raw, 5.0)
    assert r.kind == "dsn" and r.recipients[0].recipient == "gone@example.com"
    assert MAX_BYTES < len(raw)


def test_huge_header_line_and_many_parts() -> None:
    raw = b"From: MAILER-DAEMON@x\r\nX-Long: " + b"a" * 3_000_000 + b"\r\n\r\nbody\r\n"
    _timed(raw)
    many = b"From: MAILER-DAEMON@x\r\nContent-Type: multipart/mixed; boundary=\"z\"\r\n\r\n" + \
        b"--z\r\nContent-Type: text/plain\r\n\r\nx@y.example failed\r\n" * 20_000 + b"--z--\r\n"
    _timed(many)


@pytest.mark.parametrize("seed", range(3))
def test_mutated_corpus_never_raises(seed: int) -> None:
    rng = random.Random(seed)
    files = sorted((FIXTURES / "emails").glob("*.eml"))
    for path in rng.sample(files, 40):
        data = bytearray(path.read_bytes())
        for _ in range(20):
            if not data:
                break
            pos = rng.randrange(len(data))
            op = rng.randrange(3)
            if op == 0:
                data[pos] = rng.getrandbits(8)
            elif op == 1:
                del data[pos:pos + rng.randrange(1, 200)]
            else:
                data[pos:pos] = rng.choice([b"\r\n--", b"=?utf-8?B?", b"boundary=\"q\"", b"\x00", b"Content-Type: "])
        _timed(bytes(data), 2.0)


def test_autoreply_is_not_a_bounce() -> None:
    raw = (b"From: Neko <neko@example.org>\r\nTo: b-x@fb.example.net\r\nSubject: Automatic reply: hello\r\n"
           b"Auto-Submitted: auto-replied\r\n\r\nI am out of the office until Monday.\r\n")
    r = parse(raw)
    assert r.kind == "unknown" and r.is_autoreply and r.feedback_class is None
    assert r.recipients[0].recipient == "neko@example.org" and r.recipients[0].category is None


def test_ordinary_mail_quoting_a_bounce_is_not_one() -> None:
    raw = (b"From: Person <p@example.org>\r\nSubject: look at this\r\n\r\n"
           b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
           b"<x@example.com>:\r\nSorry, I couldn't find any host named example.com. (#5.1.2)\r\n")
    r = parse(raw)
    assert r.kind == "unknown" and r.feedback_class is None
