"""`mailrelay webhooks add|list|show|remove|enable`: an account's event webhooks (README "Webhooks").

Everything is in the database: a running server's sender picks a new webhook up with the next
event, and stops sending to a removed one at once (its pending events are deleted with it)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from relay.commands.common import CommandError, account_or_fail, load_home_config, with_storage
from relay.webhook_json import (
    EVENT_NAMES,
    WebhookInputError,
    attempt_json,
    check_batch,
    check_signature,
    check_url,
    new_secret,
    parse_events,
    state,
    webhook_json,
)
from storage.protocols import Storage
from storage.records import utcnow
from storage.webhooks import Webhook, WebhookAttempt

ADD_HELP = f"""Add a webhook to an account: every event it wants is POSTed to URL as JSON (EngageLab's
shape), signed with the webhook's secret. Prints the webhook's id and, on the last line, its secret
(shown only here). Events: {EVENT_NAMES} (default: all)."""


def add_parser(p: argparse.ArgumentParser, with_home: Callable[[argparse.ArgumentParser],
               argparse.ArgumentParser]) -> None:
    sub = p.add_subparsers(dest="webhooks_command", required=True)
    sp = with_home(sub.add_parser("add", help="add a webhook; prints its id and secret", description=ADD_HELP))
    sp.add_argument("url", metavar="URL")
    sp.add_argument("--account", required=True, help="account name")
    sp.add_argument("--events", help=f"comma-separated events (default: all but target): {EVENT_NAMES}")
    sp.add_argument("--batch", type=int, default=1,
                    help="events per POST: 1 (default) one JSON object as EngageLab sends; N > 1 a JSON array")
    sp.add_argument("--secret", help="use this secret (at least 16 characters) instead of a generated one")
    sp.add_argument("--signature", choices=("body", "engagelab"), default="body",
                    help="what X-WebHook-Signature signs: body (HMAC-SHA256 of the timestamp and the body, the "
                         "default) or engagelab (of the timestamp only, as EngageLab's documentation says)")
    sp.set_defaults(func=add)
    sp = with_home(sub.add_parser("list", help="webhooks with their state"))
    sp.add_argument("--account", help="only this account")
    sp.add_argument("--json", action="store_true", help="one JSON object per webhook")
    sp.set_defaults(func=list_hooks)
    sp = with_home(sub.add_parser("show", help="one webhook: state, last error, disabled reason, last attempts"))
    sp.add_argument("webhook_id", metavar="ID", type=int)
    sp.add_argument("--attempts", type=int, default=20, help="how many of the last attempts (default 20)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=show)
    sp = with_home(sub.add_parser("remove", help="remove a webhook and its pending events"))
    sp.add_argument("webhook_id", metavar="ID", type=int)
    sp.set_defaults(func=remove)
    sp = with_home(sub.add_parser("enable", help="enable a disabled webhook again (its kept events are sent)"))
    sp.add_argument("webhook_id", metavar="ID", type=int)
    sp.set_defaults(func=enable)


def add(args: argparse.Namespace) -> int:
    try:
        allow_private = load_home_config(args.home).webhooks.allow_private_addresses
        url, events = check_url(args.url, allow_private), parse_events(args.events)
        batch, secret = check_batch(args.batch), new_secret(args.secret)
        signature = check_signature(args.signature)
    except WebhookInputError as e:
        raise CommandError(str(e)) from None

    async def run(storage: Storage) -> Webhook:
        acct = await account_or_fail(storage, args.account)
        return await storage.webhooks.add(acct.id, url, events, secret, batch, utcnow(), signature)

    hook = with_storage(args.home, run)
    print(f"added webhook {hook.id} for account {hook.account_name}: {hook.url} "
          f"(events: {','.join(e.value for e in hook.events)}; batch {hook.batch})")
    print(f"id: {hook.id}")
    print(f"secret: {secret}")
    return 0


def list_hooks(args: argparse.Namespace) -> int:
    async def run(storage: Storage) -> list[Webhook]:
        acct_id = (await account_or_fail(storage, args.account)).id if args.account else None
        return await storage.webhooks.list(acct_id)

    hooks = with_storage(args.home, run)
    now = utcnow()
    if args.json:
        for h in hooks:
            print(json.dumps(webhook_json(h, now)))
        return 0
    print(f"{'ID':>6} {'ACCOUNT':20} {'STATE':12} {'PENDING':>8} {'SENT':>10} URL")
    for h in hooks:
        print(f"{h.id:>6} {h.account_name:20} {state(h, now):12} {h.pending:>8} {h.sent:>10} {h.url}")
    return 0


def show(args: argparse.Namespace) -> int:
    if not 1 <= args.attempts <= 100:
        raise CommandError("--attempts: 1 to 100")

    async def run(storage: Storage) -> tuple[Webhook | None, list[WebhookAttempt]]:
        if not 0 < args.webhook_id < 2**62:
            return None, []
        hook = await storage.webhooks.get(args.webhook_id)
        return hook, (await storage.webhooks.attempts(hook.id, args.attempts) if hook else [])

    hook, attempts = with_storage(args.home, run)
    if hook is None:
        raise CommandError(f"no webhook {args.webhook_id}")
    doc = {**webhook_json(hook, utcnow()), "attempts": [attempt_json(a) for a in attempts]}
    if args.json:
        print(json.dumps(doc))
        return 0
    for key, value in doc.items():
        if key == "attempts":
            continue
        shown = ",".join(value) if isinstance(value, list) else ("-" if value is None else value)
        print(f"{key + ':':19} {shown}")
    print(f"attempts (last {len(attempts)}, newest first):")
    for a in attempts:
        outcome = f"HTTP {a.http_status}" if a.http_status is not None else "-"
        print(f"  {a.at:%Y-%m-%d %H:%M:%S} {a.events:>4} event(s) {outcome:9} {a.duration_ms:>6} ms"
              f"  {a.error or 'ok'}")
    return 0


def _by_id(args: argparse.Namespace, change: str, done: str) -> int:
    """Run ``storage.webhooks.<change>(ID)``; a webhook that does not exist is an error."""

    async def run(storage: Storage) -> bool:
        if not 0 < args.webhook_id < 2**62:
            return False
        result: bool = await getattr(storage.webhooks, change)(args.webhook_id)
        return result

    if not with_storage(args.home, run):
        raise CommandError(f"no webhook {args.webhook_id}")
    print(f"{done} webhook {args.webhook_id}")
    return 0


def remove(args: argparse.Namespace) -> int:
    return _by_id(args, "remove", "removed")


def enable(args: argparse.Namespace) -> int:
    return _by_id(args, "enable", "enabled")
