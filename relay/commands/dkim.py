"""`mailrelay dkim add|list|remove`: DKIM signing keys.

A key lives in the database (so every node sharing it signs) and, for the operator, in
``DIR/dkim/DOMAIN/SELECTOR.key`` (mode 0600) on the node that made it. `add` prints the DNS record
to publish as its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

from relay import dkim
from relay.commands.common import CommandError, account_or_fail, with_storage
from storage.errors import Conflict
from storage.protocols import Storage
from storage.records import DkimAlgorithm, DkimKey, utcnow


def add_parser(p: argparse.ArgumentParser, with_home: Callable[[argparse.ArgumentParser],
               argparse.ArgumentParser]) -> None:
    sub = p.add_subparsers(dest="dkim_command", required=True)
    sp = with_home(sub.add_parser("add", help="make a signing key; prints the DNS record as the last line"))
    sp.add_argument("domain", help="the From domain to sign for (its subdomains are signed with it too)")
    sp.add_argument("--selector", help="DNS selector (default: mr + year and month, e.g. mr202612)")
    sp.add_argument("--account", help="sign only this account's mail with it (default: any account's)")
    sp.add_argument("--algorithm", choices=[a.value for a in DkimAlgorithm], default=DkimAlgorithm.RSA.value,
                    help="rsa (2048 bits, the default) or ed25519")
    sp.set_defaults(func=add)
    sp = with_home(sub.add_parser("list", help="list the signing keys"))
    sp.add_argument("--json", action="store_true", help="one JSON object per key")
    sp.set_defaults(func=list_keys)
    sp = with_home(sub.add_parser("remove", help="delete a signing key (mail stops being signed with it)"))
    sp.add_argument("domain")
    sp.add_argument("--selector", required=True)
    sp.set_defaults(func=remove)


def key_path(home: Path, domain: str, selector: str) -> Path:
    return home / "dkim" / domain / f"{selector}.key"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing .tmp may have had other bits
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def add(args: argparse.Namespace) -> int:
    try:
        domain = dkim.normalize_domain(args.domain)
        selector = dkim.check_selector(args.selector or dkim.default_selector(utcnow()))
    except dkim.DkimError as e:
        raise CommandError(str(e)) from None
    algorithm = DkimAlgorithm(args.algorithm)
    private, public = dkim.generate(algorithm)
    path = key_path(args.home, domain, selector)

    async def run(storage: Storage) -> DkimKey:
        account_id = (await account_or_fail(storage, args.account)).id if args.account else None
        key = DkimKey(domain, selector, algorithm, private, public, utcnow(), account_id=account_id)
        try:
            stored = await storage.dkim.add(key)
        except Conflict:
            raise CommandError(f"{domain} already has a key with selector {selector!r} "
                               "(rotate with a new --selector, or remove it first)") from None
        try:
            await asyncio.to_thread(_write_private, path, private)
        except OSError as e:
            await storage.dkim.remove(domain, selector)
            raise CommandError(f"cannot write {path}: {e}") from None
        return stored

    key = with_storage(args.home, run)
    scope = f"account {key.account_name}" if key.account_name else "any account"
    bits = f"rsa {dkim.RSA_BITS}" if algorithm is DkimAlgorithm.RSA else "ed25519"
    print(f"created DKIM key {selector} for {domain} ({bits}), signing mail of {scope} from {domain} "
          f"and its subdomains; private key: {path}")
    print(f"publish this TXT record, then check it with: dig +short TXT {dkim.dns_name(selector, domain)}")
    print(dkim.dns_record(selector, domain, algorithm, public))
    return 0


def _row(k: DkimKey) -> dict[str, object]:
    return {
        "domain": k.domain,
        "selector": k.selector,
        "algorithm": k.algorithm.value,
        "account": k.account_name,
        "created_at": k.created_at.isoformat(),
        "dns_name": dkim.dns_name(k.selector, k.domain),
        "dns_txt": dkim.txt_value(k.algorithm, k.public_key),
    }


def list_keys(args: argparse.Namespace) -> int:
    async def run(storage: Storage) -> list[DkimKey]:
        return await storage.dkim.list()

    keys = with_storage(args.home, run)
    if args.json:
        for k in keys:
            print(json.dumps(_row(k)))
        return 0
    print(f"{'DOMAIN':32} {'SELECTOR':16} {'ALGORITHM':9} {'ACCOUNT':16} CREATED")
    for k in keys:
        print(f"{k.domain:32} {k.selector:16} {k.algorithm.value:9} {k.account_name or '(any)':16} "
              f"{k.created_at:%Y-%m-%d %H:%M}")
    return 0


def remove(args: argparse.Namespace) -> int:
    try:
        domain = dkim.normalize_domain(args.domain)
        selector = dkim.check_selector(args.selector)
    except dkim.DkimError as e:
        raise CommandError(str(e)) from None

    async def run(storage: Storage) -> bool:
        return await storage.dkim.remove(domain, selector)

    if not with_storage(args.home, run):
        raise CommandError(f"no DKIM key {selector!r} for {domain}")
    key_path(args.home, domain, selector).unlink(missing_ok=True)
    print(f"removed DKIM key {selector} of {domain}; its DNS record {dkim.dns_name(selector, domain)} "
          "can go once mail signed with it is delivered")
    return 0
