"""The log line formats: fields given at set-up (an intake worker names itself) are on every line."""

from __future__ import annotations

import json
import logging

from relay.logging_setup import JsonFormatter, TextFormatter


def _record() -> logging.LogRecord:
    rec = logging.LogRecord("mailrelay.test", logging.INFO, __file__, 1, "accepted", (), None)
    rec.event = "accepted"
    rec.email_id = "E1"
    return rec


def test_json_lines_carry_the_set_up_fields_and_the_records_own() -> None:
    line = json.loads(JsonFormatter({"process": "intake-worker", "pid": 4242}).format(_record()))
    assert line["process"] == "intake-worker" and line["pid"] == 4242
    assert line["event"] == "accepted" and line["email_id"] == "E1" and line["msg"] == "accepted"
    assert "process" not in json.loads(JsonFormatter().format(_record()))


def test_text_lines_start_with_the_set_up_fields() -> None:
    line = TextFormatter({"process": "intake-worker", "pid": 4242}).format(_record())
    assert line.startswith("[process=intake-worker] [pid=4242] info    mailrelay.test: accepted")
    assert "email_id=E1" in line
    assert TextFormatter().format(_record()).startswith("info    mailrelay.test: accepted")
