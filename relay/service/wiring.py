"""What the HTTP API and the console are given by the composition root (``relay/app.py``).

``relay/http`` imports neither ``relay/smtp`` nor ``relay/delivery`` (B2): the SMTP authenticator
(same keys, same failure throttle) and the queue read model arrive as objects that satisfy the
small protocols below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from relay.accept import Acceptor
from storage.protocols import Storage
from storage.records import ApiUser, utcnow


class AuthOutcome(Protocol):
    @property
    def ok(self) -> bool: ...
    @property
    def reply(self) -> str: ...  # the SMTP reply it maps to: 235 ok, 535 bad, 421 throttled, 454 temporary
    @property
    def principal(self) -> ApiUser | None: ...


class Authenticator(Protocol):
    """``relay.smtp.auth.ApiUserAuthenticator`` satisfies this."""

    async def authenticate(self, peer_ip: str, failures_so_far: int, login: bytes,
                           password: bytes) -> AuthOutcome: ...
    def forget(self, api_user: str) -> None: ...


class QueueViewLike(Protocol):
    @property
    def api_user(self) -> str: ...
    def to_json(self) -> dict[str, Any]: ...


class RecoveredLike(Protocol):
    @property
    def released(self) -> int: ...
    def to_json(self) -> dict[str, Any]: ...


class QueueControl(Protocol):
    """``relay.delivery.admin.QueueAdmin`` satisfies this; a missing queue raises ``LookupError``."""

    def list(self, api_user: str | None = None) -> Sequence[QueueViewLike]: ...
    def show(self, api_user: str, domain: str, limit: int = 100) -> dict[str, Any]: ...
    def pause(self, api_user: str, domain: str) -> QueueViewLike: ...
    def resume(self, api_user: str, domain: str) -> QueueViewLike: ...
    def recover(self, api_user: str, domain: str) -> RecoveredLike: ...
    def set_rate(self, api_user: str, domain: str, rate: float | None) -> QueueViewLike: ...


class ExportFiles(Protocol):
    """``relay.exports.ExportWorker`` satisfies this: where this node keeps export files."""

    @property
    def node(self) -> str: ...
    @property
    def keep(self) -> timedelta: ...
    def path(self, task_id: str) -> Path: ...
    def wake(self) -> None: ...


class MetricsSource(Protocol):
    """``relay.metrics.Metrics`` satisfies this: the Prometheus exposition of this process."""

    @property
    def content_type(self) -> str: ...
    async def render(self) -> bytes: ...


@dataclass
class HttpServices:
    storage: Storage
    authenticator: Authenticator
    queues: QueueControl | None = None  # None when delivery is off on this node
    exports: ExportFiles | None = None  # None: no export worker on this node (exports answer 503)
    admin_token: str = ""  # empty: no operator access over HTTP
    search_per_minute: int = 60  # per account, on GET /v1/email_status
    exports_per_minute: int = 10  # per account, on POST /v1/exports
    handler_timeout: float = 60.0  # seconds per request
    clock: Callable[[], datetime] = field(default=utcnow)
    metrics: MetricsSource | None = None  # None: /metrics answers 404
    metrics_public: bool = False  # /metrics without authentication (else the admin token)
    readiness: Callable[[], Awaitable[list[str]]] | None = None  # /readyz: the problems, empty when ready
    acceptor: Acceptor | None = None  # the accept sequence SMTP uses: POST /v1/mail/send*; None: 503
    send_request_keep: timedelta = timedelta(hours=24)  # a request_id's retry answers the first answer
    webhook_allow_private: bool = False  # [webhooks] allow_private_addresses (relay/webhook_destination.py)


H = TypeVar("H")


def no_request_timeout(handler: H) -> H:
    """Mark a handler that bounds its own waits (a streamed upload): the HTTP listener's request
    timeout (``relay.http.envelope.error_middleware``, also around the console) skips it."""
    setattr(handler, "_no_request_timeout", True)  # noqa: B010 - a marker read by the middleware
    return handler
