"""`mailrelay queues list|show|pause|resume|recover|rate`: the running server's delivery queues.

Talks to `mailrelay serve` over its control socket (queue state lives in the server's memory).
A queue is named by ``--api-user`` and ``--domain`` (the receiving domain).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from relay.commands.common import CommandError, account_or_fail, load_home_config, with_storage
from relay.control import call
from storage.protocols import Storage


def add_parser(p: argparse.ArgumentParser, with_home: Callable[[argparse.ArgumentParser],
               argparse.ArgumentParser]) -> None:
    sub = p.add_subparsers(dest="queues_command", required=True)
    sp = with_home(sub.add_parser("list", help="every queue with its status, pending count and rates"))
    sp.add_argument("--api-user", help="only this API_USER's queues")
    sp.add_argument("--account", help="only the queues of this account's API users")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=list_queues)
    for name, help_text in (("show", "one queue: status, rates, the messages waiting with their next attempt"),
                            ("pause", "pause a queue (mail waits until resume)"),
                            ("resume", "undo an operator's pause"),
                            ("recover", "send now: resume (also from a pause the receiving site caused) and make every "
                             "waiting recipient due at once, retry timers included"),
                            ("rate", "set the queue's maximum rate in messages/s (0 or none: no cap)")):
        sp = with_home(sub.add_parser(name, help=help_text))
        sp.add_argument("--api-user", required=True)
        sp.add_argument("--domain", required=True, help="receiving domain")
        sp.add_argument("--json", action="store_true")
        if name == "rate":
            sp.add_argument("rate", help="messages per second, or 'none'")
        if name == "show":
            sp.add_argument("--limit", type=int, default=100)
        sp.set_defaults(func=_control(name))


def _api_users(args: argparse.Namespace) -> set[str] | None:
    """The API_USERs the command names (--api-user, or every one of --account); CommandError
    if that API_USER or account does not exist. None: no filter."""
    api_user: str | None = args.api_user
    account: str | None = getattr(args, "account", None)
    if api_user is None and account is None:
        return None

    async def run(storage: Storage) -> set[str]:
        names: set[str] | None = None
        if api_user is not None:
            if await storage.accounts.get_api_user(api_user) is None:
                raise CommandError(f"no such API_USER: {api_user!r}")
            names = {api_user}
        if account is not None:
            acct = await account_or_fail(storage, account)
            own = {u.name for u in await storage.accounts.list_api_users(acct.id)}
            names = own if names is None else names & own
        return names or set()

    return with_storage(args.home, run)


def _call(args: argparse.Namespace, cmd: str, payload: dict[str, Any]) -> Any:
    cfg = load_home_config(args.home)
    try:
        return asyncio.run(call(cfg.path(cfg.node.control_socket), cmd, payload))
    except RuntimeError as e:
        raise CommandError(str(e)) from None


def _line(v: dict[str, Any]) -> str:
    pause = f" paused: {v['pause_reason']} until {v['next_send_time'] or '-'} ({v['pause_reply']})" \
        if v["status"] == "paused" else ""
    r = v["in_rate"]["5s"], v["try_rate"]["5s"], v["out_rate"]["5s"]
    return (f"{v['api_user']:20} {v['domain']:28} {v['status']:7} pending={v['pending']:<7} "
            f"in/try/out(5s)={r[0]}/{r[1]}/{r[2]}{pause}")


def list_queues(args: argparse.Namespace) -> int:
    names = _api_users(args)
    views = _call(args, "queues.list", {"api_user": args.api_user} if args.api_user else {})
    for v in views:
        if names is not None and v["api_user"] not in names:
            continue
        print(json.dumps(v) if args.json else _line(v))
    return 0


def _control(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        _api_users(args)
        payload: dict[str, Any] = {"api_user": args.api_user, "domain": args.domain.lower()}
        if name == "rate":
            payload["rate"] = None if args.rate.lower() in ("none", "0") else args.rate
        if name == "show":
            payload["limit"] = args.limit
        result = _call(args, f"queues.{name}", payload)
        if args.json:
            print(json.dumps(result))
        elif name == "recover":
            print(f"recovered {args.api_user}/{args.domain.lower()}: released {result['released']} recipients")
            print(_line(result))
        elif name == "show":
            print(_line(result["queue"]))
            for m in result["messages"]:
                print(f"  {m['email_id']} {m['recipient']:36} attempts={m['attempts']} next={m['next_attempt']} "
                      f"{m['last_reason']}")
        else:
            print(_line(result))
        return 0

    return run
