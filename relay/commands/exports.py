"""`mailrelay exports create|list|download|retry`: offline exports of status records (CSV.gz)."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from relay.commands.common import CommandError, account_or_fail, load_home_config, with_storage
from relay.commands.status import add_filter_arguments, filter_from_args
from relay.control import call
from relay.exports import KEEP, ExportWorker
from storage.protocols import Storage
from storage.records import EXPORT_EMAIL_STATUS, ExportStatus, ExportTask, utcnow

CREATE_HELP = """Queue an export of the account's status records (the filters of `status search`, with no
limit on the period; no --from/--to: all time). If a server (`mailrelay serve`) runs on this data
directory, it is told at once and runs the export in the background. If none answers on the control
socket, this command runs the export itself before it returns and writes DIR/exports/ID.csv.gz
(--queue-only: just queue it for the next server start). The export id is the last line printed."""


def add_parser(p: argparse.ArgumentParser, with_home: Callable[[argparse.ArgumentParser],
               argparse.ArgumentParser]) -> None:
    sub = p.add_subparsers(dest="exports_command", required=True)
    sp = with_home(sub.add_parser("create", help="export status records to CSV.gz", description=CREATE_HELP))
    add_filter_arguments(sp)
    sp.add_argument("--queue-only", action="store_true", help="only queue it, never run it in this process")
    sp.set_defaults(func=create)
    sp = with_home(sub.add_parser("list", help="export tasks, newest first"))
    sp.add_argument("--account", help="only this account")
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--json", action="store_true", help="one JSON object per task")
    sp.set_defaults(func=list_tasks)
    sp = with_home(sub.add_parser("download", help="copy a finished export's CSV.gz (files are kept 7 days)"))
    sp.add_argument("export_id", metavar="ID")
    sp.add_argument("-o", "--output", type=Path, help="output file (default: ./export-ID.csv.gz)")
    sp.set_defaults(func=download)
    sp = with_home(sub.add_parser("retry", help="queue a failed export again"))
    sp.add_argument("export_id", metavar="ID")
    sp.set_defaults(func=retry)


def _row(t: ExportTask) -> dict[str, object]:
    return {"id": t.id, "account_id": t.account_id, "type": t.kind, "status": t.status.value, "rows": t.rows_done,
            "total_rows": t.rows_total, "create_time": t.created_at.isoformat(),
            "start_time": t.started_at.isoformat() if t.started_at else None,
            "end_time": t.finished_at.isoformat() if t.finished_at else None,
            "expired": t.expired_at is not None, "node": t.node, "error": t.error or None}


def _worker(args: argparse.Namespace, storage: Storage) -> ExportWorker:
    cfg = load_home_config(args.home)
    return ExportWorker(storage, cfg.path("exports"), cfg.node_name)


async def _server_wakes(args: argparse.Namespace) -> bool:
    cfg = load_home_config(args.home)
    try:
        await call(cfg.path(cfg.node.control_socket), "exports.wake", timeout=5)
    except (RuntimeError, OSError, ValueError):
        return False
    return True


def create(args: argparse.Namespace) -> int:
    async def run(storage: Storage) -> tuple[ExportTask, str]:
        acct = await account_or_fail(storage, args.account)
        flt = filter_from_args(args, acct.id)
        task = await storage.exports.create(secrets.token_hex(12), acct.id, EXPORT_EMAIL_STATUS, flt, utcnow())
        how = "queued"
        if not args.queue_only:
            if await _server_wakes(args):
                how = "queued; the running server exports it (see `mailrelay exports list`)"
            else:
                worker = _worker(args, storage)
                await worker.run_pending()
                how = f"written by this command to {worker.path(task.id)}"
        got = await storage.exports.get(task.id)
        assert got is not None
        return got, how

    task, how = with_storage(args.home, run)
    print(f"export {task.id}: {task.status.value}, {task.rows_done} rows; {how}")
    print(task.id)
    if task.status is ExportStatus.FAILED:
        sys.stdout.flush()
        print(f"mailrelay: export {task.id} failed: {task.error}", file=sys.stderr)
    return 1 if task.status is ExportStatus.FAILED else 0


def list_tasks(args: argparse.Namespace) -> int:
    async def run(storage: Storage) -> list[ExportTask]:
        account_id = (await account_or_fail(storage, args.account)).id if args.account else None
        return (await storage.exports.list(account_id, limit=args.limit)).items

    for t in with_storage(args.home, run):
        if args.json:
            print(json.dumps(_row(t), ensure_ascii=False))
        else:
            end = f"{t.finished_at:%Y-%m-%d %H:%M}" if t.finished_at else "-"
            state = "expired" if t.expired_at else t.status.value
            print(f"{t.id}  {state:9} {t.rows_done:>10} rows  created {t.created_at:%Y-%m-%d %H:%M}  ended {end}"
                  f"{'  ' + t.error if t.error else ''}")
    return 0


def download(args: argparse.Namespace) -> int:
    out: Path = args.output or Path(f"export-{args.export_id}.csv.gz")

    async def run(storage: Storage) -> ExportTask:
        task = await storage.exports.get(args.export_id)
        if task is None:
            raise CommandError(f"no export {args.export_id!r}")
        if task.status is not ExportStatus.SUCCEEDED:
            raise CommandError(f"export {task.id} is {task.status.value}; nothing to download yet")
        assert task.finished_at is not None
        if task.expired_at is not None or task.finished_at + KEEP <= utcnow():
            raise CommandError(f"export {task.id} expired: files are kept {KEEP.days} days; create a new export")
        src = _worker(args, storage).path(task.id)
        if not src.is_file():
            raise CommandError(f"export {task.id}: {src} is not on this node (written by node {task.node!r})")
        try:
            await asyncio.to_thread(shutil.copyfile, src, out)
        except OSError as e:
            raise CommandError(f"cannot write {out}: {e.strerror or e}") from None
        return task

    task = with_storage(args.home, run)
    print(f"export {task.id}: {task.rows_done} rows written to {out}")
    return 0


def retry(args: argparse.Namespace) -> int:
    async def run(storage: Storage) -> None:
        if not await storage.exports.retry(args.export_id):
            task = await storage.exports.get(args.export_id)
            state = "does not exist" if task is None else f"is {task.status.value}"
            raise CommandError(f"export {args.export_id!r} {state}; only a failed export can be retried")
        await _server_wakes(args)

    with_storage(args.home, run)
    print(f"export {args.export_id} queued again")
    return 0
