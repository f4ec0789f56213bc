"""`mailrelay init`: write DIR/mailrelay.toml (every key documented), a dev certificate, the DB."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from relay.app import storage_url
from relay.commands.common import CONFIG_NAME, CommandError
from relay.config import is_loopback, load_config, parse_hostport
from relay.config_render import render_config
from relay.tls import write_self_signed
from storage import open_storage


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smtp", default="127.0.0.1:2525", help="submission listener with STARTTLS (HOST:PORT)")
    p.add_argument("--submission-tls", default="", help="implicit-TLS submission listener (HOST:PORT)")
    p.add_argument("--feedback", default="", help="feedback (bounce/complaint) listener (HOST:PORT)")
    p.add_argument("--feedback-domain", action="append", default=[], help="feedback domain (repeatable)")
    p.add_argument("--http", default="", help="HTTP API listener (HOST:PORT)")
    p.add_argument("--dns", action="append", default=[], help="nameserver HOST:PORT for MX lookups (repeatable)")
    p.add_argument("--mx-port", type=int, default=None, help="TCP port of MX hosts (default 25)")
    p.add_argument("--relayhost", default="", help="send ALL mail to this HOST:PORT instead of the MX")
    p.add_argument("--no-delivery", action="store_true", help="accept and spool only (no delivery)")
    p.add_argument("--storage-url", default="", help="postgresql://... (default: SQLite in the data directory)")
    p.add_argument("--hostname", default="", help="greeting/EHLO name (default: this machine's FQDN)")
    p.add_argument("--allow-auth-without-tls", choices=["auto", "yes", "no"], default="auto",
                   help="auto: allowed on loopback listeners only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    home: Path = args.home
    home.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for key, value in (("smtp", args.smtp), ("submission_tls", args.submission_tls)):
        if not value:
            continue
        host, _ = parse_hostport(value, f"--{key.replace('_', '-')}")
        settings[f"{key}.listen"] = value
        if args.hostname:
            settings[f"{key}.hostname"] = args.hostname
        plain = is_loopback(host) if args.allow_auth_without_tls == "auto" else args.allow_auth_without_tls == "yes"
        settings[f"{key}.allow_auth_without_tls"] = plain
        notes[f"{key}.allow_auth_without_tls"] = (
            "AUTH is allowed WITHOUT TLS on this listener (chosen by `mailrelay init` because it "
            "listens on loopback); set false to require STARTTLS first"
            if plain else "AUTH requires TLS (STARTTLS) on this listener"
        )
    if args.feedback:
        parse_hostport(args.feedback, "--feedback")
        if not args.feedback_domain:
            raise CommandError("--feedback needs at least one --feedback-domain (the domains it accepts mail for)")
        settings["feedback.listen"] = args.feedback
    if args.feedback_domain:
        settings["feedback.domains"] = [d.lower() for d in args.feedback_domain]
    if args.http:
        parse_hostport(args.http, "--http")
        settings["http.listen"] = args.http
    for i, ns in enumerate(args.dns):
        parse_hostport(ns, f"--dns[{i}]")
    if args.dns:
        settings["delivery.dns"] = list(args.dns)
    if args.mx_port is not None:
        settings["delivery.mx_port"] = args.mx_port
    if args.relayhost:
        parse_hostport(args.relayhost, "--relayhost")
        settings["delivery.relayhost"] = args.relayhost
    if args.no_delivery:
        settings["delivery.enabled"] = False
    if args.storage_url:
        settings["storage.url"] = args.storage_url
    cfg_path = home / CONFIG_NAME
    if cfg_path.exists():
        cfg_path.replace(cfg_path.with_suffix(".toml.bak"))
        print(f"kept the previous configuration as {cfg_path.with_suffix('.toml.bak')}")
    cfg_path.write_text(render_config(settings, notes), encoding="utf-8")
    cfg = load_config(cfg_path)  # validates what we wrote
    cert, key_file = cfg.path(cfg.tls.cert_file), cfg.path(cfg.tls.key_file)
    if not (cert.exists() and key_file.exists()):
        write_self_signed(cert, key_file, args.hostname or socket.getfqdn())
        print(f"wrote a self-signed development certificate: {cert}")
    cfg.path(cfg.node.spool_dir).mkdir(parents=True, exist_ok=True)
    verp_key = cfg.path(cfg.delivery.verp_secret_file)
    if not verp_key.exists():
        fd = os.open(verp_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    url = storage_url(cfg)

    async def migrate() -> list[int]:
        storage = await open_storage(url)
        try:
            return await storage.migrate()
        finally:
            await storage.close()

    try:
        applied = asyncio.run(migrate())
    except OSError as e:
        raise CommandError(f"cannot prepare the database at {url}: {e}") from e
    print(f"wrote {cfg_path}")
    print(f"database ready ({'migrations ' + ', '.join(map(str, applied)) if applied else 'up to date'})")
    return 0
