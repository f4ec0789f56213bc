"""Helpers shared by the subcommands: config and storage from --home, running coroutines."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from relay.config import CONFIG_NAME, Config, load_config
from storage.protocols import Storage
from storage.records import Account

T = TypeVar("T")


class CommandError(Exception):
    """A user-facing error: printed as `mailrelay: <message>`, exit status 1."""


def load_home_config(home: Path) -> Config:
    return load_config(home / CONFIG_NAME)


def with_storage(home: Path, fn: Callable[[Storage], Awaitable[T]], *, check_schema: bool = True) -> T:
    """Open the configured storage, run ``fn``, close it."""
    from relay.app import open_checked_storage, storage_url
    from storage import open_storage

    cfg = load_home_config(home)

    async def run() -> T:
        storage = await (open_checked_storage(cfg) if check_schema else open_storage(storage_url(cfg)))
        try:
            return await fn(storage)
        finally:
            await storage.close()

    return asyncio.run(run())


async def account_or_fail(storage: Storage, name: str, *, create: bool = False) -> Account:
    if create:
        return await storage.accounts.ensure_account(name)
    acct = await storage.accounts.get_account(name)
    if acct is None:
        raise CommandError(f"no such account: {name!r} (`mailrelay users add API_USER --account NAME` creates one)")
    return acct
