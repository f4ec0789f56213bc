"""An account's recipient-facing settings, and an API_USER's overrides of them, as the CLI
(`mailrelay accounts`, `mailrelay users set|show`) and the HTTP API (``/v1/account/settings``,
``/v1/api_users/{name}/settings``) show and change them: one JSON shape for both."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from storage.records import AccountSettings, ApiUserSettings

#: The settings' names (JSON keys; the CLI's flags are the same with dashes).
FIELDS = ("list_unsubscribe", "track_opens", "track_clicks")


def settings_json(account: str, st: AccountSettings) -> dict[str, Any]:
    return {"account": account, **{f: getattr(st, f) for f in FIELDS}}


def changed(st: AccountSettings, changes: Mapping[str, bool | None]) -> AccountSettings:
    """``st`` with the given fields replaced (None: unchanged)."""
    return dataclasses.replace(st, **{k: v for k, v in changes.items() if k in FIELDS and v is not None})


def user_settings_json(api_user: str, account: str, own: ApiUserSettings,
                       account_st: AccountSettings) -> dict[str, Any]:
    """What applies to the API_USER's mail (top level, as for an account) and its own overrides
    (``overrides``: true/false, or null where it inherits the account's value)."""
    applied = own.over(account_st)
    return {"api_user": api_user, "account": account, **{f: getattr(applied, f) for f in FIELDS},
            "overrides": {f: getattr(own, f) for f in FIELDS}}


def user_changed(st: ApiUserSettings, changes: Mapping[str, bool | None]) -> ApiUserSettings:
    """``st`` with the fields present in ``changes`` replaced (None: inherit from the account)."""
    return dataclasses.replace(st, **{k: v for k, v in changes.items() if k in FIELDS})
