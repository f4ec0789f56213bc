"""`mailrelay init`: write DIR/mailrelay.toml (every key documented), a dev certificate, the DB.

A home that has a configuration is never overwritten by accident: without ``--force`` init refuses
and changes nothing. With ``--force`` the previous file's values (admin token included) stay and
the flags given on this command line override them; the return-path key and the TLS files are
never replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import tomllib
from pathlib import Path
from typing import Any

from relay.app import storage_url
from relay.commands.common import CommandError
from relay.config import CONFIG_NAME, Config, ConfigError, config_from_dict, is_loopback, load_config, parse_hostport
from relay.config_render import render_config
from relay.keys import generate_key
from relay.tls import write_self_signed
from storage import open_storage

DEFAULT_SMTP = "127.0.0.1:2525"
_LISTENERS = ("smtp", "submission_tls")


def add_parser(p: argparse.ArgumentParser) -> None:
    # Flags default to None so that --force can tell "given now" (overrides) from "not given" (kept).
    p.add_argument("--smtp", default=None,
                   help=f"submission listener with STARTTLS (HOST:PORT; a new home gets {DEFAULT_SMTP})")
    p.add_argument("--submission-tls", default=None, help="implicit-TLS submission listener (HOST:PORT)")
    p.add_argument("--feedback", default=None, help="feedback (bounce/complaint) listener (HOST:PORT)")
    p.add_argument("--feedback-domain", action="append", default=[], help="feedback domain (repeatable)")
    p.add_argument("--http", default=None, help="HTTP API listener (HOST:PORT)")
    p.add_argument("--web", default=None, help="recipient-facing listener: unsubscribe, open, click (HOST:PORT)")
    p.add_argument("--public-url", default=None,
                   help="base URL of the links put in mail, e.g. https://links.example.com (reaches --web)")
    p.add_argument("--dns", action="append", default=[], help="nameserver HOST:PORT for MX lookups (repeatable)")
    p.add_argument("--mx-port", type=int, default=None, help="TCP port of MX hosts (default 25)")
    p.add_argument("--relayhost", default=None, help="send ALL mail to this HOST:PORT instead of the MX")
    p.add_argument("--no-delivery", action="store_true", help="accept and spool only (no delivery)")
    p.add_argument("--storage-url", default=None, help="postgresql://... (default: SQLite in the data directory)")
    p.add_argument("--hostname", default=None, help="greeting/EHLO name (default: this machine's FQDN)")
    p.add_argument("--node-name", default=None, help="this node's name, unique among the nodes sharing one "
                   "database (default: the host name; give one when two nodes run on one host)")
    p.add_argument("--allow-auth-without-tls", choices=["auto", "yes", "no"], default=None,
                   help="auto (default): allowed on loopback listeners only")
    p.add_argument("--force", action="store_true",
                   help="rewrite the configuration of an existing home: its values, admin token, keys and TLS "
                   "files stay, the flags given now override")
    p.set_defaults(func=run)


def _previous(cfg_path: Path) -> dict[str, Any]:
    """The keys the existing file sets, as dotted names (the file must be valid: its values are kept)."""
    try:
        load_config(cfg_path)
        data = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except (ConfigError, OSError) as e:
        raise CommandError(f"cannot keep the values of the existing configuration: {e}; fix it or move it "
                           "away first") from None
    return {f"{section}.{key}": value for section, table in data.items() for key, value in table.items()}


def _given(args: argparse.Namespace, fresh: bool) -> dict[str, Any]:
    """The keys the flags on this command line set."""
    out: dict[str, Any] = {}
    smtp = args.smtp if args.smtp is not None or not fresh else DEFAULT_SMTP
    for name, value, flag in (("smtp", smtp, "--smtp"), ("submission_tls", args.submission_tls, "--submission-tls"),
                              ("feedback", args.feedback, "--feedback"), ("http", args.http, "--http"),
                              ("web", args.web, "--web")):
        if value is None:
            continue
        if value:
            parse_hostport(value, flag)
        out[f"{name}.listen"] = value
    if args.public_url is not None:
        out["web.public_url"] = args.public_url.rstrip("/")
    if args.feedback_domain:
        out["feedback.domains"] = [d.lower() for d in args.feedback_domain]
    for i, ns in enumerate(args.dns):
        parse_hostport(ns, f"--dns[{i}]")
    if args.dns:
        out["delivery.dns"] = list(args.dns)
    if args.mx_port is not None:
        out["delivery.mx_port"] = args.mx_port
    if args.relayhost is not None:
        if args.relayhost:
            parse_hostport(args.relayhost, "--relayhost")
        out["delivery.relayhost"] = args.relayhost
    if args.no_delivery:
        out["delivery.enabled"] = False
    if args.storage_url is not None:
        out["storage.url"] = args.storage_url
    if args.node_name is not None:
        out["node.name"] = args.node_name
    return out


def _settings(args: argparse.Namespace, previous: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, str]]:
    given = _given(args, fresh=previous is None)
    settings = {**(previous or {}), **given}
    notes: dict[str, str] = {}
    for name in _LISTENERS:
        listen = settings.get(f"{name}.listen")
        if not listen:
            continue
        if args.hostname is not None:
            settings[f"{name}.hostname"] = args.hostname
        allow_key = f"{name}.allow_auth_without_tls"
        if f"{name}.listen" in given or args.allow_auth_without_tls is not None or allow_key not in settings:
            mode = args.allow_auth_without_tls or "auto"
            host, _ = parse_hostport(listen, f"{name}.listen")
            settings[allow_key] = is_loopback(host) if mode == "auto" else mode == "yes"
        notes[allow_key] = (
            "AUTH is allowed WITHOUT TLS on this listener (`mailrelay init` allows it on loopback "
            "listeners); set false to require STARTTLS first"
            if settings[allow_key] else "AUTH requires TLS (STARTTLS) on this listener"
        )
    if settings.get("feedback.listen") and not settings.get("feedback.domains"):
        raise CommandError("--feedback needs at least one --feedback-domain (the domains it accepts mail for)")
    if "http.listen" in given and given["http.listen"] and not settings.get("http.admin_token"):
        settings["http.admin_token"] = generate_key(24)
    if settings.get("http.admin_token"):
        notes["http.admin_token"] = "operators use it as 'Authorization: Bearer <token>' (keep this file private)"
    return settings, notes


def _write_config(cfg_path: Path, text: str) -> None:
    """Replace the file atomically; a rewritten file keeps the previous one's mode and owner.

    A home whose mailrelay.toml links elsewhere (deploy/install.sh keeps it in /etc/mailrelay)
    gets the link's target rewritten, so the link stays."""
    cfg_path = cfg_path.resolve() if cfg_path.is_symlink() else cfg_path
    old = cfg_path.stat() if cfg_path.exists() else None
    tmp = cfg_path.with_name(f".{cfg_path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the admin token
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    if old is not None:
        os.chmod(tmp, old.st_mode & 0o7777)
        try:
            os.chown(tmp, old.st_uid, old.st_gid)
        except PermissionError:  # not root: the file stays ours, as the previous one was
            pass
    os.replace(tmp, cfg_path)


def run(args: argparse.Namespace) -> int:
    home: Path = args.home
    cfg_path = home / CONFIG_NAME
    exists = cfg_path.exists()
    if exists and not args.force:
        raise CommandError(f"{home} is already initialised ({cfg_path} exists); nothing was changed. "
                           "`mailrelay init --force` rewrites it, keeping its values, the admin token and the keys")
    previous = _previous(cfg_path) if exists else None
    settings, notes = _settings(args, previous)
    text = render_config(settings, notes)
    try:  # validate before anything is written: a bad value must not replace a working file
        cfg: Config = config_from_dict(tomllib.loads(text), home.resolve())
    except ConfigError as e:
        raise CommandError(str(e)) from None
    home.mkdir(parents=True, exist_ok=True)
    if exists:
        bak = cfg_path.with_suffix(".toml.bak")
        shutil.copy2(cfg_path, bak)
        print(f"kept the previous configuration as {bak} ({len(previous or {})} values carried over)")
    _write_config(cfg_path, text)
    cert, key_file = cfg.path(cfg.tls.cert_file), cfg.path(cfg.tls.key_file)
    if not (cert.exists() and key_file.exists()):
        write_self_signed(cert, key_file, args.hostname or socket.getfqdn())
        print(f"wrote a self-signed development certificate: {cert}")
    cfg.path(cfg.node.spool_dir).mkdir(parents=True, exist_ok=True)
    for key_path in (cfg.path(cfg.delivery.verp_secret_file), cfg.path(cfg.web.token_secret_file)):
        if not key_path.exists():
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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
    if cfg.http.admin_token:
        print(f"HTTP admin token: http.admin_token in {cfg_path}")
    print(f"database ready ({'migrations ' + ', '.join(map(str, applied)) if applied else 'up to date'})")
    return 0
