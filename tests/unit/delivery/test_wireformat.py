"""Exact bytes on the wire after DATA (CRLF line ends, dot-stuffing, the final dot) and reply parsing."""

from __future__ import annotations

import pytest

from relay.delivery.wireformat import MalformedReply, data_payload, dot_stuff, parse_reply, take_reply, to_crlf


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),  # already CRLF: unchanged
        (b"a\nb\n", b"a\r\nb\r\n"),  # bare LF
        (b"a\rb\r", b"a\r\nb\r\n"),  # bare CR
        (b"a\r\nb\nc\rd", b"a\r\nb\r\nc\r\nd"),  # mixed, no trailing line end
        (b"a\n\r\nb", b"a\r\n\r\nb"),  # LF then CRLF: two line ends
        (b"a\r\rb", b"a\r\n\r\nb"),  # two bare CRs
        (b"a\n\rb", b"a\r\n\r\nb"),  # LF CR is two line ends, not one
        (b"", b""),
        (b"no line end", b"no line end"),
    ],
)
def test_to_crlf(content: bytes, expected: bytes) -> None:
    assert to_crlf(content) == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"plain\r\n", b"plain\r\n"),
        (b".\r\n", b"..\r\n"),  # a lone dot line is not the end of data
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n"),
        (b"..two\r\n", b"...two\r\n"),
        (b"a\r\n..x\r\n.\r\n.\r\n", b"a\r\n...x\r\n..\r\n..\r\n"),  # consecutive dot lines
        (b"a.b\r\nc .\r\n", b"a.b\r\nc .\r\n"),  # dots elsewhere untouched
    ],
)
def test_dot_stuff(content: bytes, expected: bytes) -> None:
    assert dot_stuff(content) == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"Subject: x\r\n\r\nbody\r\n", b"Subject: x\r\n\r\nbody\r\n.\r\n"),
        (b"Subject: x\n\nbody\n", b"Subject: x\r\n\r\nbody\r\n.\r\n"),
        (b"Subject: x\n\nbody", b"Subject: x\r\n\r\nbody\r\n.\r\n"),  # no trailing newline
        (b"Subject: x\n\n.\n", b"Subject: x\r\n\r\n..\r\n.\r\n"),  # lone "." line in the body
        (b"Subject: x\n\n.", b"Subject: x\r\n\r\n..\r\n.\r\n"),  # lone "." without a line end
        (b".starts\rwith dot\r", b"..starts\r\nwith dot\r\n.\r\n"),  # bare CR + dot at the start
        (b"x\n..\n...\n", b"x\r\n...\r\n....\r\n.\r\n"),
        (b"", b".\r\n"),
        (b"\n", b"\r\n.\r\n"),
        (b"caf\xc3\xa9\n", b"caf\xc3\xa9\r\n.\r\n"),  # 8-bit bytes pass through
    ],
)
def test_data_payload(content: bytes, expected: bytes) -> None:
    assert data_payload(content) == expected


def test_payload_never_ends_data_early() -> None:
    """Whatever the content, the only CRLF.CRLF is the terminator."""
    nasty = b".\r\n\r\n.\r\n\n.\n\r.\r" * 50
    wire = data_payload(nasty)
    assert wire.endswith(b"\r\n.\r\n")
    assert wire.count(b"\r\n.\r\n") == 1
    assert not wire.startswith(b".\r\n")
    # every CR is followed by LF and every LF preceded by CR
    assert wire.count(b"\r") == wire.count(b"\n") == wire.count(b"\r\n")


# -- replies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "lines", "enhanced", "text"),
    [
        (250, ["2.0.0 Ok"], "2.0.0", "Ok"),
        (250, [""], None, ""),
        (550, ["5.1.1"], "5.1.1", ""),
        (451, ["4.7.1 a", "4.7.1 b"], "4.7.1", "a / b"),
        (550, ["4.7.1 class mismatch"], None, "4.7.1 class mismatch"),  # RFC 2034: the class must match
        (550, ["5.1.10 bad"], "5.1.10", "bad"),
        (550, ["5.1.1000 not a code"], None, "5.1.1000 not a code"),
        (421, ["mx.example.com Service not available", "", "closing"], None,
         "mx.example.com Service not available / closing"),
    ],
)
def test_parse_reply(code: int, lines: list[str], enhanced: str | None, text: str) -> None:
    r = parse_reply(code, lines)
    assert (r.code, r.enhanced, r.text) == (code, enhanced, text)


def test_take_reply_multiline_and_partial() -> None:
    buf = bytearray(b"250-mx.example.com hi\r\n250-PIPELINING\r\n250 SIZE 1000")
    assert take_reply(buf) is None  # incomplete: buffer untouched
    buf += b"\r\n354 go\n"  # a bare LF ends a line too
    r = take_reply(buf)
    assert r is not None and r.code == 250 and r.lines == ("mx.example.com hi", "PIPELINING", "SIZE 1000")
    assert buf == bytearray(b"354 go\n")
    r2 = take_reply(buf)
    assert r2 is not None and (r2.code, r2.text) == (354, "go") and buf == bytearray()
    assert take_reply(buf) is None


def test_take_reply_bare_code() -> None:
    r = take_reply(bytearray(b"250\r\n"))
    assert r is not None and (r.code, r.enhanced, r.text) == (250, None, "")


@pytest.mark.parametrize("raw", [b"hello\r\n", b"25\r\n", b"250x\r\n", b"SSH-2.0-OpenSSH\r\n", b"x" * 70000])
def test_take_reply_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedReply):
        take_reply(bytearray(raw))
