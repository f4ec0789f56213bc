"""The webhook body and signature, and the README's verification snippet run against them."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relay.webhooks import payload
from storage.webhooks import OutboxEvent

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
EVENT = OutboxEvent(id=7, webhook_id=3, event="invalid", email_id="01ABC", recipient="u@example.com", status=4,
                    sub_status=406, reason="550 5.1.1 no such user", at=datetime(2026, 3, 1, tzinfo=UTC),
                    attempts=1, api_user="app1", sender="news@shop.example", subject="Hi", label="promo")


def _readme_verify() -> Any:
    section = README[README.index("## Webhooks"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    scope: dict[str, Any] = {}
    exec(code.group(1), scope)  # the README's own snippet, run as a user would
    return scope["verify"]


def test_body_is_engagelab_shaped() -> None:
    doc = json.loads(payload.body([EVENT], 1))
    assert doc["server"] == "email" and doc["message_id"] == "01ABC" and doc["to"] == "u@example.com"
    assert doc["itime"] == 1772323200000 and doc["custom_args"] == {} and doc["event_id"] == 7
    assert doc["status"]["message_status"] == "invalid"
    assert doc["status"]["status_data"] == {
        "email_id": "01ABC$u@example.com", "api_user": "app1", "message": "550 5.1.1 no such user", "status": 4,
        "status_desc": "Invalid email", "sub_status": 406, "sub_status_desc": "Invalid email: not exist",
        "label": "promo"}
    assert isinstance(json.loads(payload.body([EVENT, EVENT], 10)), list)


def test_list_events_have_no_message() -> None:
    report = OutboxEvent(id=8, webhook_id=3, event="report", email_id="", recipient="u@example.com", status=None,
                         sub_status=None, reason="abuse", at=datetime(2026, 3, 1, tzinfo=UTC), attempts=1)
    data = json.loads(payload.body([report], 1))["status"]["status_data"]
    assert data["email_id"] == "" and data["status"] is None and data["sub_status_desc"] is None


def test_the_readme_snippet_verifies_our_signature_and_refuses_tampering() -> None:
    verify = _readme_verify()
    raw = payload.body([EVENT], 1)
    ts = str(int(time.time()))
    headers = payload.headers("the-secret-0123456789", ts, raw, 3)
    assert headers["X-WebHook-AppKey"] == "email" and headers["X-WebHook-Id"] == "3"
    assert verify("the-secret-0123456789", headers, raw)
    assert not verify("another-secret-0123456", headers, raw)
    assert not verify("the-secret-0123456789", headers, raw.replace(b"invalid", b"delivered"))
    old = payload.headers("the-secret-0123456789", str(int(time.time()) - 3600), raw, 3)
    assert not verify("the-secret-0123456789", old, raw)  # a replay an hour later


def test_engagelab_signature_is_of_the_timestamp_only() -> None:
    """docs/email/webhook/webhook: "use the user app key as the encryption key to perform HmacSHA256
    operation on the timestamp ... hexadecimal characters" (a webhook added with signature engagelab)."""
    import hashlib
    import hmac

    raw = payload.body([EVENT], 1)
    headers = payload.headers("the-secret-0123456789", "1772323200", raw, 3, "engagelab")
    assert headers["X-WebHook-Signature"] == hmac.new(b"the-secret-0123456789", b"1772323200",
                                                      hashlib.sha256).hexdigest()
    assert headers["X-WebHook-Signature"] != payload.headers("the-secret-0123456789", "1772323200", raw, 3)[
        "X-WebHook-Signature"]


def test_custom_args_are_the_messages() -> None:
    from dataclasses import replace

    doc = json.loads(payload.body([replace(EVENT, custom_args='{"order":"1042","n":[1,2]}')], 1))
    assert doc["custom_args"] == {"order": "1042", "n": [1, 2]}
