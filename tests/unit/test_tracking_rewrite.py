"""The HTML rewriting of open and click tracking, on every transfer encoding and a few charsets."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP, default

import pytest

from relay.delivery.tracking import Unrewritable, rewrite, rewrite_html


def click(url: str) -> str:
    return "https://t.example/c/" + str(len(url))


def html_of(content: bytes) -> str:
    msg = message_from_bytes(content, policy=default)
    assert isinstance(msg, EmailMessage)
    body = msg.get_body(("html",))
    assert body is not None
    return str(body.get_content())


@pytest.mark.parametrize("cte", ["7bit", "8bit", "quoted-printable", "base64"])
@pytest.mark.parametrize("charset", ["utf-8", "iso-8859-1"])
def test_single_part_html_each_encoding(cte: str, charset: str) -> None:
    msg = EmailMessage()
    msg["Subject"] = "x"
    text = "<p>Caf\u00e9 <a href=\"https://a.example/x?y=1&amp;z=2\">go</a></p>" if cte != "7bit" else \
        "<p>Cafe <a href=\"https://a.example/x?y=1&amp;z=2\">go</a></p>"
    msg.set_content(text, subtype="html", charset=charset, cte=cte)
    raw = msg.as_bytes(policy=SMTP)
    out = rewrite(raw, click, "https://t.example/o/P")
    got = html_of(out)
    assert 'href="https://t.example/c/27"' in got and '<img src="https://t.example/o/P"' in got
    assert got.startswith(text.split("<a")[0])
    assert message_from_bytes(out, policy=default).get_content_charset() == charset
    assert b"\r\n\r\n" in out and b"\n" not in out.replace(b"\r\n", b"")


def test_long_7bit_line_becomes_quoted_printable() -> None:
    body = "<p>" + "".join(f'<a href="https://a.example/{i}">{i}</a>' for i in range(20)) + "</p>"
    head = "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n"
    raw = (head + body + "\r\n").encode()
    out = rewrite(raw, lambda u: "https://t.example/c/" + "T" * 100, None)
    assert b"Content-Transfer-Encoding: quoted-printable" in out
    assert all(len(line) <= 998 for line in out.split(b"\r\n"))
    assert html_of(out).count("https://t.example/c/" + "T" * 100) == 20


def test_no_html_part_returns_the_same_bytes() -> None:
    raw = b"Subject: x\r\nContent-Type: text/plain\r\n\r\nsee https://a.example/\r\n"
    assert rewrite(raw, click, "https://t.example/o/P") is raw


def test_html_attachment_is_not_touched() -> None:
    msg = EmailMessage()
    msg.set_content("hi")
    msg.add_attachment("<a href='https://a.example/'>x</a>", subtype="html", filename="page.html")
    raw = msg.as_bytes(policy=SMTP)
    assert rewrite(raw, click, "https://t.example/o/P") is raw


def test_rewrite_html_is_bounded_and_leaves_other_links() -> None:
    page = ("<a href='mailto:x@y'>m</a><a href=\"#top\">t</a><a name=x>n</a><A HREF=https://a.example/u>u</A>"
            "<a href=\"javascript:alert(1)\">j</a>")
    out = rewrite_html(page, click, None)
    assert "mailto:x@y" in out and "#top" in out and "javascript:alert(1)" in out
    assert '<A HREF="https://t.example/c/19">u</A>' in out
    hostile = "<a " + "x" * 200_000  # no closing '>': linear time, left as it is
    assert rewrite_html(hostile, click, None) == hostile


def test_unknown_charset_and_sealed_content_are_refused() -> None:
    with pytest.raises(Unrewritable, match="unknown charset"):
        rewrite(b"Content-Type: text/html; charset=x-nope\r\n\r\n<a href='https://a.example/'>x</a>\r\n", click, None)
    with pytest.raises(Unrewritable, match="signed or encrypted"):
        rewrite(b'Content-Type: multipart/encrypted; boundary="b"\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n'
                b"<a href='https://a.example/'>x</a>\r\n--b--\r\n", click, None)
    with pytest.raises(Unrewritable, match="does not decode"):
        rewrite(b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xff\xfe<a>\r\n",
                click, None)
