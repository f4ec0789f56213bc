"""The MIME the HTTP send API builds (relay/http/compose.py) and the checks before it
(relay/http/send_body.py), read back with the standard library's parser."""

from __future__ import annotations

import base64
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest

from relay.http.compose import build
from relay.http.envelope import ApiError
from relay.http.send_body import parse_send, parse_send_mime


def _req(**body: Any) -> dict[str, Any]:
    return {"from": "news@acme.example", "to": ["a@example.com"],
            "body": {"subject": "S", "content": {"html": "<p>x</p>"}, **body}}


def _parse(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_inline_image_goes_into_multipart_related_with_the_html() -> None:
    png = b"\x89PNG\r\n\x1a\n"
    req = parse_send(_req(content={"html": "<img src='cid:logo'>", "text": "t"},
                          attachments=[{"content": base64.b64encode(png).decode(), "filename": "logo.png",
                                        "disposition": "inline", "content_id": "logo"}]))
    msg = _parse(build(req, 0))
    assert msg.get_content_type() == "multipart/alternative"
    text, related = msg.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html, image = related.iter_parts()
    assert html.get_content_type() == "text/html" and image.get_content_type() == "image/png"
    assert image["Content-ID"] == "<logo>" and image.get_content() == png


def test_preheader_without_a_body_tag_leads_the_html_and_is_escaped() -> None:
    req = parse_send(_req(content={"html": "<p>x</p>", "preview_text": "<b>&</b>"}))
    html = _parse(build(req, 0)).get_content()
    assert html.startswith('<div style="display:none') and "&lt;b&gt;&amp;&lt;/b&gt;</div><p>x</p>" in html


def test_long_non_ascii_subject_is_folded_rfc2047_and_reads_back() -> None:
    subject = "Überweisung bestätigt — " * 10
    raw = build(parse_send(_req(subject=subject[:256])), 0)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    assert _parse(raw)["Subject"] == subject[:256]


@pytest.mark.parametrize(("body", "message"), [
    ({"from": "a@acme.example", "to": ["b@example.com"]}, "body: required"),
    (_req(content={}), "body.content: html or text is required"),
    (_req(content={"text": "t", "preview_text": "p"}), "preview_text: a hidden preheader"),
    (_req(attachments=[{"content": "AAAA", "filename": "x", "size": 3}]), "body.attachments[0].size: unknown"),
    (_req(attachments=[{"content": "AAAA", "filename": "x", "type": "no-slash"}]), "is not a MIME type"),
    (_req(reply_to=["a@x.example", "b@x.example", "c@x.example", "d@x.example"]), "4 addresses: at most 3"),
    (_req(settings={"send_mode": 2}), "body.settings.send_mode: 0"),
    ({**_req(), "custom_args": {"k": "v" * 2000}}, "custom_args: 2008 bytes of JSON: at most 1024"),
    ({**_req(), "request_id": "r" * 129}, "request_id: longer than 128"),
    # deliverlies documents dynamic_vars (dynamic templates): refused by name, never ignored
    (_req(dynamic_vars={"name": "Ann"}), "body.dynamic_vars: dynamic templates are not supported"),
    ({**_req(), "custom_args": {"n": float("nan")}}, "custom_args: numbers must be finite"),
    (_req(settings={"sandbox": True}), "body.settings.sandbox: not supported by this server"),
])
def test_bad_bodies_name_what_is_wrong(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError) as e:
        parse_send(body)
    assert e.value.status == 400 and message in e.value.message


def test_send_mime_normalises_line_ends_and_checks_size() -> None:
    req = parse_send_mime({"from": "a@acme.example", "to": ["b@example.com"], "mime": "Subject: s\n\nbody\n",
                           "mime_encoding": "text"}, 1000)
    assert req.mime == b"Subject: s\r\n\r\nbody\r\n"
    with pytest.raises(ApiError, match="over the message size limit"):
        parse_send_mime({"from": "a@acme.example", "to": ["b@example.com"],
                         "mime": base64.b64encode(b"Subject: s\r\n\r\n" + b"x" * 2000).decode()}, 1000)
