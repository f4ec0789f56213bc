"""What an operator watches, over a real relay: the JSON log (one line per event of a message's
life, found with a grep of its email_id), ``GET /metrics`` parsed as Prometheus text, and
``/healthz`` / ``/readyz``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.app import metrics_public
from relay.config import ConfigError, HttpConfig, config_from_dict
from relay.delivery.admin import QueueAdmin
from relay.logging_setup import JsonFormatter
from storage.records import ListKind, Status, SuppressionEntry
from tests.helpers.mx_sink import ScriptedMx
from tests.helpers.tcp_proxy import TcpProxy
from tests.integration.conftest import PG_DSN, RelayFactory, _create_pg_database, _drop_pg_database
from tests.integration.relay_fixture import RelayUnderTest, start_relay, wait_until
from tests.integration.test_feedback_loop import FB, _dsn, _send
from tests.integration.test_http_api import ADMIN, ADMIN_TOKEN, basic

SENDER = "app@acme.example"


class _Lines(logging.Handler):
    """The relay's log as `serve` writes it: one JSON object per line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def grep(self, needle: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines if needle in line]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in map(json.loads, self.lines) if e.get("event") == name]


@pytest.fixture
def log_lines() -> Iterator[_Lines]:
    root = logging.getLogger()
    handler, level = _Lines(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


async def _start(factory: RelayFactory, sink: ScriptedMx, **extra: Any) -> RelayUnderTest:
    return await factory({"delivery.enabled": True, "delivery.relayhost": f"127.0.0.2:{sink.port}",
                          "delivery.ehlo_name": "relay.test", "delivery.retry_schedule": ["1s"],
                          "feedback.listen": "127.0.0.1:0", "feedback.domains": [FB],
                          "http.listen": "127.0.0.1:0", "http.admin_token": ADMIN_TOKEN, **extra})


def _base(relay: RelayUnderTest) -> str:
    assert relay.app.http is not None
    host, port = relay.app.http.addresses[0][:2]
    return f"http://{host}:{port}"


async def _get(relay: RelayUnderTest, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as s, s.get(_base(relay) + path, headers=headers) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(relay: RelayUnderTest) -> Samples:
    status, ctype, text = await _get(relay, "/metrics")
    assert status == 200 and ctype.startswith("text/plain"), (status, ctype, text)
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _v(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _status(relay: RelayUnderTest, email_id: str, rcpt: str) -> Status | None:
    rows = await relay.storage.statuses.get_message(email_id)
    return next((r.status for r in rows if r.recipient == rcpt), None)


async def test_a_grep_of_the_email_id_shows_the_message_life_and_metrics_count_it(
        relay_factory: RelayFactory, sink: ScriptedMx, log_lines: _Lines) -> None:
    relay = await _start(relay_factory, sink)
    await relay.storage.suppressions.add([SuppressionEntry(relay.account_id, ListKind.BLOCK, "blocked@example.com")])
    deferrals = {"slow@example.com": 1}

    def script(stage: str, arg: str) -> str | None:
        if stage == "RCPT" and "nobody@" in arg:
            return "550 5.1.1 <nobody@example.com>: user unknown"
        if stage == "RCPT" and "slow@" in arg and deferrals["slow@example.com"] > 0:
            deferrals["slow@example.com"] -= 1
            return "451 4.2.0 <slow@example.com>: mailbox busy"
        return None

    sink.set(hook=script)
    before = await _scrape(relay)
    c = await relay.client()
    refused, reply = await c.sendmail(SENDER, ["ok@example.com", "slow@example.com", "nobody@example.com",
                                               "blocked@example.com"], "Subject: life\r\n\r\nhello\r\n")
    await c.quit()
    assert set(refused) == {"blocked@example.com"}
    email_id = reply.rsplit(" ", 1)[1]

    async def settled() -> bool:
        return (await _status(relay, email_id, "ok@example.com") == Status.DELIVERED
                and await _status(relay, email_id, "slow@example.com") == Status.DELIVERED
                and await _status(relay, email_id, "nobody@example.com") == Status.INVALID)

    await wait_until(settled, timeout=20)
    return_path = next(m.mail_from for m in sink.messages if m.rcpt == "ok@example.com")
    await asyncio.to_thread(_send, relay, return_path, _dsn(return_path, "ok@example.com"))
    await wait_until(lambda: bool(log_lines.events("feedback")))
    admin = QueueAdmin(relay.app.scheduler)  # type: ignore[arg-type]
    admin.pause("app1", "example.com")
    admin.resume("app1", "example.com")
    after = await _scrape(relay)

    life = log_lines.grep(email_id)  # what `grep EMAIL_ID` shows a Postfix user
    assert all(e["email_id"] == email_id for e in life)
    events = [(e["event"], e.get("recipient")) for e in life
              if e["event"] in ("refused", "accepted", "delivered", "deferred", "failed", "feedback")]
    assert events[:2] == [("refused", "blocked@example.com"), ("accepted", None)]
    assert events[-1] == ("feedback", "ok@example.com")
    assert sorted(events[2:-1]) == [("deferred", "slow@example.com"), ("delivered", "ok@example.com"),
                                    ("delivered", "slow@example.com"), ("failed", "nobody@example.com")]
    assert events.index(("deferred", "slow@example.com")) < events.index(("delivered", "slow@example.com"))
    by = {(e["event"], e.get("recipient")): e for e in life}
    acc = by[("accepted", None)]
    assert (acc["api_user"], acc["sender"], acc["recipients"], acc["refused"], acc["client_ip"]) == (
        "app1", SENDER, 3, 1, "127.0.0.1")
    assert acc["size"] > 0 and acc["level"] == "info" and acc["logger"] == "mailrelay.submission"
    ref = by[("refused", "blocked@example.com")]
    assert (ref["policy"], ref["api_user"], ref["client_ip"]) == ("block", "app1", "127.0.0.1")
    assert ref["reason"].startswith("Blacklist")
    ok, slow1, slow2, gone = (by[("delivered", "ok@example.com")], by[("deferred", "slow@example.com")],
                              by[("delivered", "slow@example.com")], by[("failed", "nobody@example.com")])
    for e in (ok, slow1, slow2, gone):
        assert e["mx_host"] == "127.0.0.2" and e["mx_ip"] == "127.0.0.2" and e["api_user"] == "app1"
        assert isinstance(e["delay"], float) and 0 <= e["delay"] < 30
    assert ok["reply"].startswith("250") and ok["attempt"] == 1
    assert slow1["reply"] == "451 4.2.0 <slow@example.com>: mailbox busy" and slow1["attempt"] == 1
    assert 0 < slow1["retry_in"] <= 1.5
    assert slow2["attempt"] == 2 and slow2["delay"] >= slow1["delay"] + 0.5
    assert gone["reply"] == "550 5.1.1 <nobody@example.com>: user unknown" and gone["attempt"] == 1
    fb = by[("feedback", "ok@example.com")]
    assert (fb["kind"], fb["category"], fb["outcome"]) == ("dsn", "not_exist", "applied")
    assert "5.1.1" in fb["reason"]
    paused, resumed = log_lines.events("paused")[-1], log_lines.events("resumed")[-1]
    assert (paused["api_user"], paused["domain"], paused["reason"]) == ("app1", "example.com", "admin")
    assert (resumed["api_user"], resumed["domain"], resumed["reason"]) == ("app1", "example.com", "admin")

    def moved(name: str, **labels: str) -> float:
        return _v(after, name, **labels) - _v(before, name, **labels)

    assert moved("mailrelay_messages_accepted_total", api_user="app1") == 1
    assert moved("mailrelay_rcpt_refused_total", reason="block") == 1
    assert moved("mailrelay_rcpt_refused_total", reason="bounce") == 0
    assert moved("mailrelay_delivery_total", outcome="delivered") == 2
    assert moved("mailrelay_delivery_total", outcome="deferred") == 1
    assert moved("mailrelay_delivery_total", outcome="failed") == 1
    assert moved("mailrelay_feedback_total", kind="dsn", category="not_exist") == 1
    assert moved("mailrelay_smtp_transaction_seconds_count") == 1
    assert moved("mailrelay_storage_seconds_count", op="write_batch") >= 2
    assert moved("mailrelay_storage_seconds_count", op="fetch") >= 1
    assert _v(after, "mailrelay_spool_messages") == 0  # every recipient has its outcome: the spool is empty


async def test_pending_per_site_and_spool_gauges(relay_factory: RelayFactory, sink: ScriptedMx) -> None:
    # 451 4.3.2 is a site's push-back: its rate falls to sites.min_rate (0.2/s by default, one
    # attempt per 5 s); a higher floor lets the four deferrals happen at once
    relay = await _start(relay_factory, sink, **{"delivery.retry_schedule": ["1h"], "sites.min_rate": 20.0})
    sink.set(rcpt="451 4.3.2 try later")
    c = await relay.client()
    for i in range(2):
        await c.sendmail(SENDER, [f"a{i}@example.com", f"b{i}@example.org"], "Subject: wait\r\n\r\nx\r\n")
    await c.quit()
    site = f"127.0.0.2:{sink.port}"

    async def waiting() -> bool:
        return _v(await _scrape(relay), "mailrelay_delivery_total", outcome="deferred") == 4

    await wait_until(waiting, timeout=20)
    samples = await _scrape(relay)
    assert _v(samples, "mailrelay_queue_pending", site=site) == 4  # two queues, one site
    assert _v(samples, "mailrelay_spool_messages") == 2


def test_pending_sites_are_capped_with_the_rest_as_other() -> None:
    from relay.metrics import Metrics

    m = Metrics(max_sites=2)
    m.watch(pending=lambda: [("a", 1), ("b", 5), ("c", 3), ("b", 1), ("d", 2)])
    assert m.pending_by_site() == [("b", 6), ("c", 3), ("other", 3)]


async def test_metrics_need_the_admin_token_when_so_configured(relay_factory: RelayFactory,
                                                               sink: ScriptedMx) -> None:
    relay = await _start(relay_factory, sink, **{"http.metrics_auth": "token"})
    status, _, body = await _get(relay, "/metrics")
    assert status == 401 and "Authentication failed" in body
    status, _, body = await _get(relay, "/metrics", basic(relay.api_user, relay.key))
    assert status == 403 and "operators" in body
    status, ctype, body = await _get(relay, "/metrics", ADMIN)
    assert status == 200 and ctype.startswith("text/plain") and "mailrelay_spool_messages 0.0" in body
    assert (await _get(relay, "/healthz"))[::2] == (200, "ok\n")  # the probes stay open


def test_metrics_auth_takes_only_its_three_values(tmp_path: Path) -> None:
    assert config_from_dict({"http": {"metrics_auth": "token"}}, tmp_path).http.metrics_auth == "token"
    with pytest.raises(ConfigError, match=r"http\.metrics_auth: auto, none or token"):
        config_from_dict({"http": {"metrics_auth": "open"}}, tmp_path)


def test_metrics_auth_auto_is_public_only_on_loopback() -> None:
    assert metrics_public(HttpConfig(listen="127.0.0.1:8025"))
    assert metrics_public(HttpConfig(listen="[::1]:8025"))
    assert not metrics_public(HttpConfig(listen="10.0.0.1:8025"))
    assert not metrics_public(HttpConfig(listen="0.0.0.0:8025"))
    assert metrics_public(HttpConfig(listen="10.0.0.1:8025", metrics_auth="none"))
    assert not metrics_public(HttpConfig(listen="127.0.0.1:8025", metrics_auth="token"))


async def test_readyz_names_a_spool_that_takes_no_file(relay_factory: RelayFactory, sink: ScriptedMx) -> None:
    relay = await _start(relay_factory, sink)
    assert await _get(relay, "/readyz") == (200, "text/plain; charset=utf-8", "ready\n")
    spool = relay.cfg.path(relay.cfg.node.spool_dir)
    moved = spool.with_name("spool.moved")
    spool.rename(moved)
    spool.write_text("not a directory\n")  # root ignores permissions: a file where the directory was
    try:
        status, _, body = await _get(relay, "/readyz")
        assert status == 503 and body.startswith("not ready\n")
        assert f"spool: {spool}/tmp is not writable" in body and "database" not in body
        assert (await _get(relay, "/healthz"))[::2] == (200, "ok\n")  # alive, just not ready
    finally:
        spool.unlink()
        moved.rename(spool)
    assert (await _get(relay, "/readyz"))[0] == 200
    assert not list((spool / "tmp").iterdir())  # the probe leaves nothing behind


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_readyz_names_a_database_that_does_not_answer(relay_factory: RelayFactory, backend: str) -> None:
    relay = await relay_factory({"http.listen": "127.0.0.1:0"}, backend=backend)
    assert (await _get(relay, "/readyz"))[0] == 200
    await relay.storage.close()
    status, _, body = await _get(relay, "/readyz")
    assert status == 503 and body.startswith("not ready\ndatabase: ") and "spool" not in body


async def test_readyz_follows_a_postgresql_that_becomes_unreachable_and_returns(tmp_path: Path) -> None:
    name, url = await _create_pg_database()
    pg = urlsplit(PG_DSN)
    proxy = TcpProxy((pg.hostname or "127.0.0.1", pg.port or 5432))
    await proxy.start()
    relay = None
    try:
        relay = await start_relay(tmp_path / "home", url.replace(f":{pg.port or 5432}/", f":{proxy.port}/"),
                                  overrides={"http.listen": "127.0.0.1:0"})
        assert (await _get(relay, "/readyz"))[0] == 200
        await proxy.cut()  # the database is gone for this node: connections reset, new ones refused
        status, _, body = await _get(relay, "/readyz")
        assert status == 503 and body.startswith("not ready\ndatabase: "), body
        await proxy.start()  # back on the same port: the pool reconnects, no restart needed

        live = relay

        async def ready() -> bool:
            return (await _get(live, "/readyz"))[0] == 200

        await wait_until(ready, timeout=15)
    finally:
        if relay is not None:
            await relay.app.stop(grace=2)
        await proxy.cut()
        await _drop_pg_database(name)


TSS04 = "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to user complaints"


@pytest.mark.parametrize(("pause", "reason"), [("1s", "pause ended"), ("1h", "recover")])
async def test_a_site_pause_and_its_end_are_logged(relay_factory: RelayFactory, sink: ScriptedMx, log_lines: _Lines,
                                                   pause: str, reason: str) -> None:
    relay = await _start(relay_factory, sink, **{"sites.pause_initial": pause})
    sink.set(rcpt=TSS04)
    c = await relay.client()
    _, reply = await c.sendmail(SENDER, ["a@example.com"], "Subject: p\r\n\r\nx\r\n")
    await c.quit()
    await wait_until(lambda: bool(log_lines.events("paused")))
    sink.set(rcpt=None)
    if reason == "recover":
        QueueAdmin(relay.app.scheduler).recover("app1", "example.com")  # type: ignore[arg-type]
    await wait_until(lambda: bool(log_lines.events("resumed")), timeout=15)
    site = f"127.0.0.2:{sink.port}"
    [paused], [resumed] = log_lines.events("paused"), log_lines.events("resumed")
    assert (paused["site"], paused["reason"], paused["reply"]) == (site, "domain_limit", TSS04)
    assert paused["until"] > 0 and "api_user" not in paused  # the site's pause: every queue sending there
    assert (resumed["site"], resumed["reason"]) == (site, reason)
    if reason == "pause ended":  # the recipient's own retry time is the pause's end: it goes now
        await wait_until(lambda: bool(log_lines.events("delivered")), timeout=15)
        assert [e["event"] for e in log_lines.grep(reply.rsplit(" ", 1)[1])] == ["accepted", "deferred", "delivered"]
