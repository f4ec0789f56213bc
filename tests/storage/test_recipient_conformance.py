"""Storage conformance for the recipient-facing features (both backends): account settings with
their defaults, per-API_USER overrides (None = inherit), and unsubscribe/open/click events appended
in one batch to recipients' send logs."""

from __future__ import annotations

from datetime import timedelta

from storage import SqlStorage
from storage.records import AccountSettings, ApiUserSettings, EventType, LogEntry, LogKind, RecipientEvent, StatusFilter
from tests.storage.test_conformance import T0, _message, _sub


async def test_account_settings_defaults_and_upsert(storage: SqlStorage) -> None:
    acme = await storage.accounts.ensure_account("acme")
    other = await storage.accounts.ensure_account("other")
    assert await storage.accounts.get_settings(acme.id) == AccountSettings(True, False, False)
    await storage.accounts.set_settings(acme.id, AccountSettings(False, True, False))
    assert await storage.accounts.get_settings(acme.id) == AccountSettings(False, True, False)
    await storage.accounts.set_settings(acme.id, AccountSettings(True, True, True))
    assert await storage.accounts.get_settings(acme.id) == AccountSettings(True, True, True)
    assert await storage.accounts.get_settings(other.id) == AccountSettings()  # untouched


async def test_api_user_settings_override_and_inherit(storage: SqlStorage) -> None:
    acme = await storage.accounts.ensure_account("acme")
    await storage.accounts.add_api_user("app1", acme.id, "h1")
    await storage.accounts.add_api_user("app2", acme.id, "h2")
    assert await storage.accounts.get_user_settings("app1") == ApiUserSettings(None, None, None)
    assert await storage.accounts.list_user_settings() == {}
    await storage.accounts.set_user_settings("app1", ApiUserSettings(None, False, True))
    assert await storage.accounts.get_user_settings("app1") == ApiUserSettings(None, False, True)
    await storage.accounts.set_user_settings("app1", ApiUserSettings(False, None, True))  # back to inherit
    assert await storage.accounts.get_user_settings("app1") == ApiUserSettings(False, None, True)
    assert await storage.accounts.get_user_settings("app2") == ApiUserSettings()  # untouched
    assert await storage.accounts.list_user_settings() == {"app1": ApiUserSettings(False, None, True)}
    # what applies: the override where set, else the account's value
    await storage.accounts.set_settings(acme.id, AccountSettings(True, True, False))
    st = (await storage.accounts.get_user_settings("app1")).over(await storage.accounts.get_settings(acme.id))
    assert st == AccountSettings(False, True, True)


async def test_events_are_batched_onto_send_logs(storage: SqlStorage) -> None:
    acct = (await storage.accounts.ensure_account("acme")).id
    await storage.statuses.record_submissions([_sub(_message("e1", acct), "a@x.com", "b@x.com")])
    t = T0 + timedelta(hours=1)
    click = RecipientEvent(EventType.CLICK, "198.51.100.7", "Mozilla/5.0 <x>", "https://shop.example/a?b=1")
    opened = RecipientEvent(EventType.OPEN, "17.58.1.2", "Mozilla/5.0", machine=True)
    unsub = RecipientEvent(EventType.UNSUBSCRIBE, "2001:db8::1", "curl/8", reason_type=2)
    await storage.statuses.append_logs([
        ("e1", "A@x.com", LogEntry(t, LogKind.FEEDBACK, "click", rule="click", event=click)),
        ("e1", "a@x.com", LogEntry(t + timedelta(seconds=1), LogKind.FEEDBACK, "open", rule="open", event=opened)),
        ("e1", "b@x.com", LogEntry(t, LogKind.FEEDBACK, "unsubscribe", rule="unsubscribe", event=unsub)),
        ("e1", "ghost@x.com", LogEntry(t, LogKind.FEEDBACK, "open", event=opened)),  # no such recipient: dropped
    ])
    await storage.statuses.append_logs([])
    a, b = await storage.statuses.get_message("e1", acct)
    assert [x.event for x in a.log] == [None, click, opened]
    assert [x.event for x in b.log] == [None, unsub]
    page = await storage.statuses.search(StatusFilter(account_id=acct), limit=10)
    assert {r.recipient: [x.event for x in r.log if x.event] for r in page.items} == {
        "a@x.com": [click, opened], "b@x.com": [unsub]}
