"""The `mailrelay` command: argument parsing and dispatch.

Each subcommand is a small function in one of the ``relay.commands`` modules; they call the same
services the server uses. The data directory is ``--home``, else ``$MAILRELAY_HOME``, else
``./var``; its ``mailrelay.toml`` is the configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from relay.commands import accounts, db, dkim, exports, feedback, init, queues, status, suppression, users, webhooks
from relay.commands import rules as rules_cmd
from relay.commands.common import CommandError
from relay.config import ConfigError
from storage.errors import StorageError


def _home_default() -> str:
    return os.environ.get("MAILRELAY_HOME") or "./var"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailrelay", description="mailrelay: an ESP's sending engine")
    p.add_argument("--version", action="version", version=f"mailrelay {importlib.metadata.version('mailrelay')}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_home(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--home", default=None, help="data directory (default: $MAILRELAY_HOME or ./var)")
        return sp

    init.add_parser(with_home(sub.add_parser("init", help="write mailrelay.toml, a dev certificate, the database")))
    sp = with_home(sub.add_parser("serve", help="run the relay until SIGTERM"))
    sp.set_defaults(func=_serve)
    sp = with_home(sub.add_parser("config", help="configuration"))
    csub = sp.add_subparsers(dest="config_command", required=True)
    with_home(csub.add_parser("check", help="validate and print the effective configuration")).set_defaults(
        func=_config_check)
    db.add_parser(sub.add_parser("db", help="database schema"), with_home)
    accounts.add_parser(sub.add_parser("accounts", help="accounts' settings: List-Unsubscribe, tracking"),
                        with_home)
    users.add_parser(sub.add_parser("users", help="API users (SMTP AUTH / HTTP credentials)"), with_home)
    suppression.add_parser(sub.add_parser("suppression", help="the five suppression lists"), with_home)
    status.add_parser(sub.add_parser("status", help="per-recipient statuses"), with_home)
    exports.add_parser(sub.add_parser("exports", help="offline exports of status records (CSV.gz)"), with_home)
    queues.add_parser(sub.add_parser("queues", help="delivery queues of the running server"), with_home)
    feedback.add_parser(sub.add_parser("feedback", help="bounce and complaint mail: classify, ingest"), with_home)
    dkim.add_parser(sub.add_parser("dkim", help="DKIM signing keys"), with_home)
    webhooks.add_parser(sub.add_parser("webhooks", help="event webhooks of an account"), with_home)
    rules_cmd.add_parser(sub.add_parser("rules", help="classification review: unclassified replies, site rules"),
                         with_home)
    return p


def _serve(args: argparse.Namespace) -> int:
    from relay.app import App
    from relay.commands.common import load_home_config
    from relay.home_lock import HomeLocked, lock_home
    from relay.logging_setup import setup_logging

    cfg = load_home_config(args.home)
    try:  # before the spool, the database or a socket is touched
        lock = lock_home(cfg.home, shown_as=args.home)
    except HomeLocked as e:
        raise CommandError(str(e)) from None
    with lock:
        setup_logging(cfg.log.level, cfg.log.format)
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            asyncio.run(App(cfg).run())
        else:
            uvloop.run(App(cfg).run())
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from relay.commands.common import load_home_config
    from relay.config import iter_keys
    from relay.config_render import redact, toml_value

    cfg = load_home_config(args.home)
    for key, _default in iter_keys():
        section, name = key.split(".", 1)
        print(f"{key} = {toml_value(redact(key, getattr(getattr(cfg, section), name)))}")
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (e.g. captured by a test)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    if sys.stdout is None:  # started with stdout closed (`>&-`): the output goes nowhere, quietly
        sys.stdout = open(os.devnull, "w")
    args = build_parser().parse_args(argv)
    if getattr(args, "home", None) is None and hasattr(args, "home"):
        args.home = _home_default()
    if isinstance(getattr(args, "home", None), str):
        args.home = Path(args.home)
    try:
        rc: int = args.func(args)
        sys.stdout.flush()  # inside the try: a reader that went away is handled below, not at exit
    except BrokenPipeError:  # `mailrelay ... | head`: stop quietly, like a command killed by SIGPIPE
        _silence_stdout()
        return 141
    except (CommandError, ConfigError, StorageError, OSError) as e:
        print(f"mailrelay: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
