"""Offline exports (our endpoint; EngageLab has none): status records as CSV.gz, without the 30-day cap.

- ``POST /v1/exports`` queues a task. The body is a JSON object with the filters of
  ``GET /v1/email_status`` (same names: ``send_date`` or ``start_date``/``end_date``, ``email``,
  ``email_ids``, ``api_user``, ``domain_name``, ``label_id``, ``email_type``, ``status``,
  ``sub_status``); list filters take a JSON array or a comma-separated string. No dates: all time.
  An empty body exports everything of the account. Operators name the account with ``account=``.
- ``GET /v1/exports`` lists the account's tasks (newest first, ``offset``/``limit``);
  ``GET /v1/exports/{id}`` shows one: type, status (queued, running, succeeded, failed), progress,
  start and end time, row count, download link and when the file expires.
- ``GET /v1/exports/{id}/download`` answers the file (``application/gzip``); 409 while it is not
  ready, 410 with a message once it was deleted (kept 7 days after the task finished).
- ``POST /v1/exports/{id}/retry`` queues a failed task again (409 for any other status).

Another account's task is a 404, exactly like a task that does not exist.
"""

from __future__ import annotations

from aiohttp import web

from relay.http.envelope import json_body, ok
from relay.service.access import SERVICES_KEY
from relay.service.exports import create_task, file_response, get_task, list_tasks, retry_task, task_file, task_json


async def create_export(request: web.Request) -> web.Response:
    body = await json_body(request) if request.can_read_body else {}
    task = await create_task(request, body)
    return ok(task_json(task, request.app[SERVICES_KEY].exports), status=201)


async def list_exports(request: web.Request) -> web.Response:
    return ok(await list_tasks(request, request.query))


async def show_export(request: web.Request) -> web.Response:
    return ok(task_json(await get_task(request), request.app[SERVICES_KEY].exports))


async def download_export(request: web.Request) -> web.StreamResponse:
    return file_response(*await task_file(request))


async def retry_export(request: web.Request) -> web.Response:
    return ok(await retry_task(request))
