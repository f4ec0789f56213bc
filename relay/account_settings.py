"""An account's recipient-facing settings as the CLI (`mailrelay accounts`) and the HTTP API
(``/v1/account/settings``) show and change them: one JSON shape for both."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from storage.records import AccountSettings

#: The settings' names (JSON keys; the CLI's flags are the same with dashes).
FIELDS = ("list_unsubscribe", "track_opens", "track_clicks")


def settings_json(account: str, st: AccountSettings) -> dict[str, Any]:
    return {"account": account, **{f: getattr(st, f) for f in FIELDS}}


def changed(st: AccountSettings, changes: Mapping[str, bool | None]) -> AccountSettings:
    """``st`` with the given fields replaced (None: unchanged)."""
    return dataclasses.replace(st, **{k: v for k, v in changes.items() if k in FIELDS and v is not None})
