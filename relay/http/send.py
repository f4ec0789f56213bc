"""Sending over HTTP: ``POST /v1/mail/send`` (EngageLab's body, MIME built here) and
``POST /v1/mail/send_mime`` (a ready RFC 5322 message and its envelope), Basic auth as the API_USER.

Both take the path SMTP takes (``relay/accept.py``): the API_USER's rate limit (one token per
message), the free-space reserve, every recipient through the suppression chain (a refusal keeps
the chain's reason, byte for byte, and an INVALID status row), our ``Received:`` line naming HTTP
and the API_USER, a Message-ID from our host name when the message has none, label and email-type
headers read and removed, the size limit, the status rows, and the spool's fsync before the 200.

A request is checked whole before anything is stored: bad input is a 400 and nothing is sent.
Every message is then written to the spool before any is committed, so a request sends all of
its messages or none (only a storage failure between commits can split it: those recipients are
listed in ``refused`` with a retry reason). A request whose recipients are all refused is an
answer, not an error: 200 with the refusals.

``request_id``: the first request with an id claims it (``storage`` ``send_requests``); a retry
within ``HttpServices.send_request_keep`` answers the stored first answer without sending, or 409
while the first is still being processed. A request that fails before sending releases its claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from email.errors import HeaderParseError
from typing import Any, TypeVar

from aiohttp import web

from policies import RecipientContext
from relay.accept import Acceptor, Committed, Envelope, LookupFailed
from relay.headers import find_header_end
from relay.http.auth import SERVICES_KEY, principal
from relay.http.compose import build
from relay.http.envelope import ApiError, checked_body, ok
from relay.http.send_body import MimeRequest, SendRequest, parse_send, parse_send_mime
from relay.ids import new_email_id
from relay.spool import SpoolFull, SpoolWriter
from relay.status_json import RECIPIENT_ID_SEPARATOR
from storage.errors import StorageError
from storage.records import RecipientOutcome, Status, SubmissionRecord, utcnow

log = logging.getLogger("mailrelay.http.send")

PURGE_INTERVAL = 3600.0  # seconds between deletions of request_ids past their retention
STALE_CLAIM = timedelta(minutes=10)  # an unanswered request_id claim older than this was abandoned
JSON_OVERHEAD = 1024 * 1024  # the body beyond the message itself (base64 grows it by 4/3)
# Parsing and checking a request this small takes well under a millisecond, and building one small
# message a few: done in the loop (no thread hand-off); larger ones go to a thread.
INLINE_BYTES = 64 * 1024

Answer = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sender:
    acceptor: Acceptor
    account_id: int
    api_user: str
    client_ip: str
    protocol: str


@dataclass
class Staged:
    writer: SpoolWriter
    record: SubmissionRecord
    refused: int


def _sender(request: web.Request) -> Sender:
    acceptor = request.app[SERVICES_KEY].acceptor
    if acceptor is None:
        raise ApiError(503, "sending is not available on this node")
    p = principal(request)
    if p.api_user is None or p.account_id is None:
        raise ApiError(403, "sending needs an API_USER's credentials (HTTP Basic api_user:api_key)")
    return Sender(acceptor, p.account_id, p.api_user, request.remote or "unknown",
                  "HTTPS" if request.secure else "HTTP")


async def _run(inline: bool, fn: Callable[..., T], *args: Any) -> T:
    return fn(*args) if inline else await asyncio.to_thread(fn, *args)


async def _read_json(request: web.Request, limit: int) -> tuple[dict[str, Any], int]:
    """The JSON body, read up to ``limit`` bytes (more than the API's usual 1 MiB: attachments)."""
    if request.content_type != "application/json":
        raise ApiError(415, "the body must be JSON (Content-Type: application/json)")
    buf = bytearray()
    while chunk := await request.content.read(1 << 16):
        buf += chunk
        if len(buf) > limit:
            raise ApiError(413, f"the request is larger than {limit} bytes (limits.max_message_size)")
    try:
        body = await _run(len(buf) <= INLINE_BYTES, json.loads, bytes(buf))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    return checked_body(request, body), len(buf)


def _limit(acceptor: Acceptor) -> int:
    return acceptor.max_message_size * 4 // 3 + JSON_OVERHEAD if acceptor.max_message_size else 64 << 20


async def _label(request: web.Request, s: Sender, label_id: int | None, label_name: str | None,
                 prefix: str) -> str | None:
    if label_id is None:
        return label_name
    label = await request.app[SERVICES_KEY].storage.labels.get(s.account_id, label_id)
    if label is None:
        raise ApiError(400, f"{prefix}label_id: no label {label_id} in your account")
    if label_name is not None and label_name != label.name:
        raise ApiError(400, f"{prefix}label_name: {label_name!r} is not the name of label {label_id}")
    return label.name


_ACCOUNT_SETTING = {"opens": "track_opens", "clicks": "track_clicks", "list-unsubscribe": "list_unsubscribe"}
_FLAG = {"opens": "open_tracking", "clicks": "click_tracking", "list-unsubscribe": "unsubscribe_tracking"}


async def _opt_out(request: web.Request, s: Sender, tracking: dict[str, bool]) -> tuple[str, ...]:
    """settings' tracking flags: false turns the feature off for this mail (as the header
    X-Mailrelay-Track: off does); true needs the account to have it on (else a 400, not ignored)."""
    if any(tracking.values()):
        accounts = request.app[SERVICES_KEY].storage.accounts
        # what delivery applies: the account's settings under this API_USER's own overrides
        st = (await accounts.get_user_settings(s.api_user)).over(await accounts.get_settings(s.account_id))
        for feature, on in tracking.items():
            if on and not getattr(st, _ACCOUNT_SETTING[feature]):
                raise ApiError(400, f"body.settings.{_FLAG[feature]}: {_ACCOUNT_SETTING[feature]} is off for "
                                    f"API_USER {s.api_user} (turn it on with PUT /v1/account/settings or "
                                    f"PUT /v1/api_users/{s.api_user}/settings), or send false")
    return tuple(f for f, on in tracking.items() if not on)


async def _idempotent(request: web.Request, s: Sender, request_id: str | None,
                      work: Callable[[], Awaitable[Answer]]) -> web.Response:
    if request_id is None:
        return ok(await work())
    services = request.app[SERVICES_KEY]
    repo = services.storage.send_requests
    claim = await repo.claim(s.api_user, request_id, services.clock(), services.send_request_keep, STALE_CLAIM)
    if not claim.claimed:
        if claim.response is None:
            raise ApiError(409, "request_id: the first request with this id is still being processed; "
                                "retry shortly")
        return ok(json.loads(claim.response))
    try:
        answer = await work()
    except BaseException:
        try:
            await asyncio.shield(repo.release(s.api_user, request_id))
        except Exception:  # the claim goes stale by itself (STALE_CLAIM) and may then be retaken
            log.exception("could not release a request_id claim", extra={"event": "send_request_release_failed"})
        raise
    try:
        await repo.complete(s.api_user, request_id, json.dumps(answer, ensure_ascii=False))
    except Exception:  # the mail is sent: answer it; a retry within STALE_CLAIM still gets 409
        log.exception("could not store the answer of a request_id", extra={"event": "send_request_store_failed"})
    return ok(answer)


async def _check(s: Sender, email_id: str, sender: str, recipients: list[str],
                 now_refused: list[RecipientOutcome]) -> list[str]:
    """The accepted recipients (each once); refusals are appended to ``now_refused``."""
    accepted: list[str] = []
    keys: set[str] = set()
    for rcpt in recipients:
        ctx = RecipientContext(account_id=s.account_id, api_user=s.api_user, sender=sender, raw_recipient=rcpt,
                               smtputf8=False, now=utcnow())
        try:
            checked = await s.acceptor.check_recipient(ctx, email_id, s.client_ip)
        except LookupFailed:
            raise ApiError(503, "the suppression lists could not be read; try again shortly",
                           {"Retry-After": "5"}) from None
        if checked.refused is not None:
            now_refused.append(checked.refused)
        elif checked.key is not None and checked.key not in keys and checked.address is not None:
            keys.add(checked.key)
            accepted.append(checked.address)
    return accepted


async def _stage(s: Sender, env: Envelope, raw: bytes, label: str | None, custom_args: str | None,
                 opt_out: tuple[str, ...] = ()) -> Staged:
    """Our Received line and the header processing SMTP does, then the spool (not committed)."""
    a = s.acceptor
    end = find_header_end(raw)
    head, rest = (raw[:end], raw[end:]) if end >= 0 else (raw, b"")
    filtered, facts = a.process_headers(head, env.email_id)
    if facts.type_error is not None:
        raise ApiError(400, f"email type header: {facts.type_error[:40]!r} is neither transactional nor marketing")
    if facts.custom_args_error is not None:
        raise ApiError(400, f"X-Mailrelay-Custom-Args header: {facts.custom_args_error}")
    data = a.received(env, helo=None, protocol=s.protocol) + filtered + rest
    if a.max_message_size and len(data) > a.max_message_size:
        raise ApiError(400, f"the message is {len(data)} bytes: over the size limit of {a.max_message_size} bytes")
    writer = a.spool.new_writer(env.email_id)
    try:
        await writer.write(data)
    except SpoolFull:
        await writer.discard()
        raise ApiError(503, "not enough free space to accept mail now; try again later", {"Retry-After": "30"}) \
            from None
    record = a.record(env, subject=facts.subject, label=label or facts.label, email_type=facts.email_type,
                      opt_out=tuple(dict.fromkeys((*facts.opt_out, *opt_out))),
                      custom_args=custom_args or facts.custom_args,
                      size=writer.size, accepted=True, message_id=facts.message_id)
    return Staged(writer, record, len(env.refused))


def _rid(email_id: str, recipient: str) -> str:
    return f"{email_id}{RECIPIENT_ID_SEPARATOR}{recipient}"


async def _finish(s: Sender, staged: list[Staged], intercepted: list[SubmissionRecord],
                  request_id: str | None) -> Answer:
    """Commit every staged message (fsync), record the refusals; the answer."""
    a = s.acceptor
    results = await asyncio.gather(*(a.commit(x.writer, x.record, x.refused) for x in staged))
    email_ids: list[str] = []
    refused: list[dict[str, Any]] = []
    for x, result in zip(staged, results, strict=True):
        msg = x.record.message
        for o in x.record.recipients:
            if o.status is Status.SENDING and result is Committed.OK:
                email_ids.append(_rid(msg.email_id, o.recipient))
            elif o.status is Status.SENDING:
                refused.append({"email": o.recipient, "email_id": None, "sub_status": None,
                                "reason": "temporary: the message could not be stored; send it again"})
    records = [x.record for x, r in zip(staged, results, strict=True) if r is Committed.OK] + intercepted
    for record in records:
        refused += [{"email": o.recipient, "email_id": _rid(record.message.email_id, o.recipient),
                     "sub_status": int(o.sub_status) if o.sub_status is not None else None, "reason": o.reason}
                    for o in record.recipients if o.status is not Status.SENDING]
    for record in intercepted:
        try:
            await a.intake.record_intercepted(record)
        except Exception:
            log.exception("could not record refused recipients", extra={"event": "intercept_record_failed",
                                                                         "email_id": record.message.email_id})
    return {"email_ids": email_ids, "request_id": request_id, "refused": refused}


async def _send_all(s: Sender, sender: str, plans: list[tuple[list[str], Callable[[], bytes]]],
                    label: str | None, request_id: str | None, size_hint: int,
                    custom_args: str | None = None, opt_out: tuple[str, ...] = ()) -> Answer:
    """``plans``: per message, its envelope recipients and how to build its content."""
    a = s.acceptor
    if not await a.rate_limiter.acquire(s.api_user, len(plans)):
        raise ApiError(429, f"rate limit of API_USER {s.api_user}: {len(plans)} messages not accepted now; "
                            "try again shortly", {"Retry-After": "1"})
    if not await a.admits(size_hint * len(plans), sum(len(r) for r, _ in plans)):
        raise ApiError(503, "not enough free space to accept mail now; try again later", {"Retry-After": "30"})
    staged: list[Staged] = []
    intercepted: list[SubmissionRecord] = []
    now = utcnow()
    inline = len(plans) == 1 and size_hint <= INLINE_BYTES  # building costs ~2.5 ms a message
    try:
        for recipients, content in plans:
            email_id = new_email_id()
            refused: list[RecipientOutcome] = []
            accepted = await _check(s, email_id, sender, recipients, refused)
            env = Envelope(email_id, s.account_id, s.api_user, sender, now, s.client_ip, tuple(accepted),
                           tuple(refused))
            if not accepted:
                intercepted.append(a.record(env, subject="", label=label, email_type=None, size=0, accepted=False,
                                            custom_args=custom_args))
                continue
            staged.append(await _stage(s, env, await _run(inline, content), label, custom_args, opt_out))
    except BaseException:
        for x in staged:
            await x.writer.discard()
        raise
    return await _finish(s, staged, intercepted, request_id)


async def send(request: web.Request) -> web.Response:
    s = _sender(request)
    body, size = await _read_json(request, _limit(s.acceptor))
    req: SendRequest = await _run(size <= INLINE_BYTES, parse_send, body)
    label = await _label(request, s, req.label_id, req.label_name, "body.")
    opt_out = await _opt_out(request, s, req.tracking)
    if req.send_mode == 0:
        plans = [([m.address], _builder(req, i)) for i, m in enumerate(req.to)]
    else:
        plans = [([m.address for m in (*req.to, *req.cc, *req.bcc)], _builder(req, 0))]
    hint = sum(len(x.data) for x in req.attachments) + len(req.html or "") + len(req.text or "")
    return await _idempotent(request, s, req.request_id,
                             lambda: _send_all(s, req.sender.address, plans, label, req.request_id, hint,
                                               req.custom_args, opt_out))


def _builder(req: SendRequest, index: int) -> Callable[[], bytes]:
    def content() -> bytes:
        try:
            return build(req, index)
        except (ValueError, TypeError, HeaderParseError) as e:  # what the checks let through, the package refused
            raise ApiError(400, f"the message could not be built: {str(e)[:200]}") from None
    return content


async def send_mime(request: web.Request) -> web.Response:
    s = _sender(request)
    body, size = await _read_json(request, _limit(s.acceptor))
    req: MimeRequest = await _run(size <= INLINE_BYTES, parse_send_mime, body, s.acceptor.max_message_size)
    label = await _label(request, s, req.label_id, req.label_name, "")
    mime = req.mime
    return await _idempotent(request, s, req.request_id,
                             lambda: _send_all(s, req.sender, [(list(req.to), lambda: mime)], label,
                                               req.request_id, len(mime), req.custom_args))


async def purge_expired(app: web.Application) -> AsyncIterator[None]:
    """An aiohttp cleanup context: request_ids past their retention are deleted every hour while
    the API serves (any node may; a deletion is idempotent)."""
    services = app[SERVICES_KEY]

    async def loop() -> None:
        while True:
            try:
                await services.storage.send_requests.purge(services.clock() - services.send_request_keep)
            except StorageError as e:  # the database went away for a moment: the next round retries
                log.warning(f"request_id purge failed: {e}", extra={"event": "send_request_purge_error"})
            await asyncio.sleep(PURGE_INTERVAL)

    task = asyncio.create_task(loop(), name="send-requests-purge") if services.acceptor is not None else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
