"""Offline export tasks (status records as CSV.gz, without the 30-day cap), for the HTTP API's
``/v1/exports`` and the console's exports page: create, list, show, the file to download, retry.

Another account's task is a 404, exactly like a task that does not exist.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from relay.service.access import EXPORT_LIMITER_KEY, SERVICES_KEY, principal, scope_account
from relay.service.errors import ApiError
from relay.service.params import integer
from relay.service.status_query import status_filter
from relay.service.wiring import ExportFiles
from relay.status_json import recipient_email_id
from storage.records import EXPORT_EMAIL_STATUS, ExportStatus, ExportTask

MAX_LIMIT = 100
FILTER_FIELDS = frozenset({"send_date", "start_date", "end_date", "email", "email_ids", "api_user", "domain_name",
                           "label_id", "email_type", "status", "sub_status"})


def files_of(request: web.Request) -> ExportFiles:
    files = request.app[SERVICES_KEY].exports
    if files is None:
        raise ApiError(503, "exports are not enabled on this node")
    return files


def task_json(t: ExportTask, files: ExportFiles | None) -> dict[str, Any]:
    f = t.filter
    total = t.rows_total
    if t.status is ExportStatus.SUCCEEDED:
        progress = 100.0
    elif t.status is ExportStatus.RUNNING and total:
        progress = round(min(99.9, 100.0 * t.rows_done / total), 1)
    else:
        progress = 0.0
    expire = t.finished_at + files.keep if files and t.finished_at and t.status is ExportStatus.SUCCEEDED else None
    return {
        "id": t.id, "type": t.kind, "status": t.status.value, "progress": progress,
        "rows": t.rows_done, "total_rows": total,
        "create_time": t.created_at.isoformat(),
        "start_time": t.started_at.isoformat() if t.started_at else None,
        "end_time": t.finished_at.isoformat() if t.finished_at else None,
        "download_url": f"/v1/exports/{t.id}/download" if t.status is ExportStatus.SUCCEEDED else None,
        "expire_time": expire.isoformat() if expire else None,
        "expired": t.expired_at is not None,
        "file_size": t.file_size, "attempts": t.attempts, "error": t.error or None,
        "node": t.node or None,
        "filters": {
            "email": f.recipient,
            "email_ids": [*f.email_ids, *(recipient_email_id(e, r) for e, r in f.recipient_ids)],
            "api_user": f.api_user, "domain_name": f.domain,
            "label_id": f.label, "email_type": f.email_type.value if f.email_type else None,
            "status": [int(s) for s in f.statuses], "sub_status": [int(s) for s in f.sub_statuses],
            "start_time": f.start.isoformat() if f.start else None, "end_time": f.end.isoformat() if f.end else None,
        },
    }


def as_query(body: dict[str, Any]) -> dict[str, str]:
    """The body's filters in the query-string form ``status_filter`` validates."""
    out: dict[str, str] = {}
    for name, value in body.items():
        if name not in FILTER_FIELDS:
            raise ApiError(400, f"{name[:40]}: unknown filter (one of {', '.join(sorted(FILTER_FIELDS))})")
        if value is None:
            continue
        if isinstance(value, list):
            if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
                raise ApiError(400, f"{name}: expected an array of strings or integers")
            out[name] = ",".join(str(v) for v in value)
        elif isinstance(value, str | int) and not isinstance(value, bool):
            out[name] = str(value)
        else:
            raise ApiError(400, f"{name}: expected a string, an integer or an array")
    return out


async def get_task(request: web.Request) -> ExportTask:
    task_id = request.match_info["export_id"]
    if not 0 < len(task_id) <= 64:
        raise ApiError(400, "export_id: expected 1 to 64 characters")
    account_id = await scope_account(request, required=False)
    task = await request.app[SERVICES_KEY].storage.exports.get(task_id, account_id)
    if task is None:
        raise ApiError(404, f"no export {task_id!r}")
    return task


async def create_task(request: web.Request, body: dict[str, Any]) -> ExportTask:
    """Queue an export of the status filters in ``body`` (also the console's "Export these results")."""
    services = request.app[SERVICES_KEY]
    files = files_of(request)
    flt = await status_filter(request, as_query(body), max_days=None, account_required=True)
    assert flt.account_id is not None
    p = principal(request)
    request.app[EXPORT_LIMITER_KEY].check(f"account:{flt.account_id}" if not p.admin else "admin", "exports")
    task = await services.storage.exports.create(secrets.token_hex(12), flt.account_id, EXPORT_EMAIL_STATUS, flt,
                                                 services.clock())
    files.wake()
    return task



async def list_tasks(request: web.Request, q: Mapping[str, str]) -> dict[str, Any]:
    """A page of the account's tasks, newest first (the only order storage keeps): result, total."""
    offset = integer(q, "offset", 0, 0, 1_000_000)
    limit = integer(q, "limit", 10, 1, MAX_LIMIT)
    account_id = await scope_account(request, required=False)
    result = await request.app[SERVICES_KEY].storage.exports.list(account_id, offset=offset, limit=limit)
    files = request.app[SERVICES_KEY].exports
    return {"result": [task_json(t, files) for t in result.items], "count": len(result.items),
            "total": result.total}


async def task_file(request: web.Request) -> tuple[ExportTask, Path]:
    """The finished task's file on this node (409 not ready / another node, 410 expired or gone)."""
    files = files_of(request)
    task = await get_task(request)
    services = request.app[SERVICES_KEY]
    if task.status is not ExportStatus.SUCCEEDED:
        raise ApiError(409, f"export {task.id} is {task.status.value}; the file is there once it succeeded")
    assert task.finished_at is not None
    if task.expired_at is not None or task.finished_at + files.keep <= services.clock():
        raise ApiError(410, f"export {task.id} expired: its file was kept {files.keep.days} days after "
                            f"{task.finished_at:%Y-%m-%d %H:%M} UTC and has been deleted; create a new export")
    path = files.path(task.id)
    if task.node != files.node:
        raise ApiError(409, f"export {task.id} was written by node {task.node!r}; download it from that node")
    if not await asyncio.to_thread(path.is_file):
        raise ApiError(410, f"export {task.id}: the file is no longer on this node; create a new export")
    return task, path


def file_response(task: ExportTask, path: Path) -> web.FileResponse:
    return web.FileResponse(path, headers={
        "Content-Type": "application/gzip",
        "Content-Disposition": f'attachment; filename="export-{task.id}.csv.gz"'})


async def retry_task(request: web.Request) -> dict[str, Any]:
    """Queue a failed task again (409 for any other status); its JSON."""
    files = files_of(request)
    task = await get_task(request)
    if task.status is not ExportStatus.FAILED:
        raise ApiError(409, f"export {task.id} is {task.status.value}; only a failed export can be retried")
    storage = request.app[SERVICES_KEY].storage
    if not await storage.exports.retry(task.id):
        raise ApiError(409, f"export {task.id} changed meanwhile; look at it again")
    files.wake()
    again = await storage.exports.get(task.id)
    assert again is not None
    return task_json(again, files)
