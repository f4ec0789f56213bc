"""A real mailrelay (App) on loopback ephemeral ports, for integration tests.

``RelayUnderTest`` runs the same composition root as `mailrelay serve`, in the test's event loop,
with a fresh data directory and a fresh database (SQLite file, or a PostgreSQL database cloned
from the test template).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import ssl
import time
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib

from relay.app import App
from relay.config import Config, config_from_dict
from relay.config_render import render_config
from relay.keys import hash_key
from relay.tls import write_self_signed
from storage import open_storage
from storage.protocols import Storage


@dataclass
class RelayUnderTest:
    app: App
    cfg: Config
    home: Path
    storage: Storage  # the app's own storage object
    account_id: int
    api_user: str
    key: str
    port: int
    tls_port: int | None
    feedback_port: int | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def client_tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cfg.path(self.cfg.tls.cert_file)))
        ctx.check_hostname = False
        return ctx

    async def client(self, *, login: bool = True, starttls: bool = False, implicit_tls: bool = False,
                     user: str | None = None, key: str | None = None) -> aiosmtplib.SMTP:
        port = self.tls_port if implicit_tls else self.port
        assert port is not None
        c = aiosmtplib.SMTP(hostname=self.host, port=port, use_tls=implicit_tls, start_tls=False,
                            tls_context=self.client_tls_context() if (starttls or implicit_tls) else None,
                            timeout=20)
        await c.connect()
        await c.ehlo()
        if starttls:
            await c.starttls(tls_context=self.client_tls_context())
        if login:
            await c.login(user or self.api_user, key or self.key)
        return c

    async def add_user(self, name: str, key: str, account: str | None = None) -> int:
        acct = await self.storage.accounts.ensure_account(account or "acme")
        await self.storage.accounts.add_api_user(name, acct.id, hash_key(key, n=2**10))
        return acct.id


async def start_relay(home: Path, storage_url: str, *, overrides: dict[str, Any] | None = None,
                      implicit_tls: bool = True, allow_plain_auth: bool = True,
                      create_user: bool = True) -> RelayUnderTest:
    settings: dict[str, Any] = {
        "smtp.listen": "127.0.0.1:0",
        "smtp.allow_auth_without_tls": allow_plain_auth,
        "smtp.hostname": "relay.test",
        "storage.url": storage_url,
        "limits.auth_failure_delay": "0s",
        "log.format": "text",
        "delivery.enabled": False,  # tests never query the system resolver (network: loopback only)
        # Sessions in this process, so tests can look inside the App; the worker processes are
        # tested in test_intake_workers.py and by every test that runs `mailrelay serve`.
        "intake.workers": 0,
    }
    if implicit_tls:
        settings["submission_tls.listen"] = "127.0.0.1:0"
        settings["submission_tls.hostname"] = "relay.test"
    settings.update(overrides or {})
    home.mkdir(parents=True, exist_ok=True)
    (home / "mailrelay.toml").write_text(render_config(settings))
    cfg = config_from_dict(tomllib.loads((home / "mailrelay.toml").read_text()), home)
    write_self_signed(cfg.path(cfg.tls.cert_file), cfg.path(cfg.tls.key_file), "relay.test")
    cfg.path(cfg.delivery.verp_secret_file).write_text("ab" * 32 + "\n")
    cfg.path(cfg.web.token_secret_file).write_text("cd" * 32 + "\n")
    migrator = await open_storage(storage_url)
    await migrator.migrate()
    await migrator.close()
    app = App(cfg)
    await app.start()
    assert app.storage is not None
    acct = await app.storage.accounts.ensure_account("acme")
    key = "test-key-0123456789"
    if create_user:  # False: another node on the same database made it already
        await app.storage.accounts.add_api_user("app1", acct.id, hash_key(key, n=2**10))
    ports = {lst.options.name: lst.port for lst in app.listeners}
    ports.update({name: addresses[0][1] for name, addresses in app.bound.items()})
    port = ports["smtp"]
    tls_port = ports.get("submission_tls")
    return RelayUnderTest(app, cfg, home, app.storage, acct.id, "app1", key, port, tls_port, ports.get("feedback"))


async def wait_until(pred: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``pred`` (sync or async) until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def replace_cfg(cfg: Config, **sections: Any) -> Config:
    return dataclasses.replace(cfg, **sections)
