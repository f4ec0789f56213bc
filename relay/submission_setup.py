"""How the SMTP submission side is built from the configuration: the same in ``mailrelay serve``
(``relay/app.py``) and in an intake worker process (``relay/workers/worker.py``), so the two
cannot drift apart."""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

from policies import PolicyChain, default_chain
from relay.config import Config, ListenerConfig, is_loopback, parse_duration, parse_hostport
from relay.database import storage_url
from relay.diskspace import DiskGuard, Waiting
from relay.intake import Accepting
from relay.metrics import Metrics
from relay.rates import RateBudget
from relay.smtp.auth import ApiUserAuthenticator, Throttle
from relay.smtp.engine import ListenerOptions
from relay.smtp.submission import NodeConnections, SubmissionServices
from relay.spool import Spool
from relay.tls import server_context
from storage.protocols import Storage

log = logging.getLogger("mailrelay.app")


def smtp_listeners(cfg: Config) -> list[tuple[str, ListenerConfig, bool]]:
    """(name, settings, implicit TLS) of each submission listener that is on."""
    return [(name, lc, implicit) for name, lc, implicit in (
        ("smtp", cfg.smtp, False), ("submission_tls", cfg.submission_tls, True)) if lc.listen]


def listener_options(cfg: Config, name: str, lc: ListenerConfig, tls: ssl.SSLContext | None, implicit: bool,
                     *, warn: bool = True) -> ListenerOptions:
    lim = cfg.limits
    host, _ = parse_hostport(lc.listen, f"{name}.listen")
    allow_plain_auth = lc.allow_auth_without_tls
    if warn and allow_plain_auth and not is_loopback(host):
        log.warning("AUTH without TLS on a non-loopback listener",
                    extra={"event": "config_insecure_auth", "listener": name})
    return ListenerOptions(
        name=name,
        hostname=lc.hostname or socket.getfqdn(),
        tls_context=tls,
        implicit_tls=implicit,
        auth_enabled=True,
        auth_requires_tls=not allow_plain_auth,
        require_auth=True,
        max_message_size=lim.max_message_size,
        max_recipients=lim.max_recipients,
        max_protocol_errors=lim.max_protocol_errors,
        command_timeout=parse_duration(lim.command_timeout),
        data_timeout=parse_duration(lim.data_timeout),
        data_idle_timeout=parse_duration(lim.data_idle_timeout),
        normalize_bare_lf=lc.normalize_bare_lf,
        max_connections_per_ip=lc.max_connections_per_ip,
    )


def tls_context(cfg: Config) -> ssl.SSLContext | None:
    cert, key = cfg.path(cfg.tls.cert_file), cfg.path(cfg.tls.key_file)
    if cert.exists() and key.exists():
        return server_context(cert, key)
    log.warning("no TLS certificate; STARTTLS is off", extra={"event": "tls_missing", "cert": str(cert)})
    return None


def reload_tls(tls: ssl.SSLContext, cfg: Config) -> None:
    """Re-read the certificate into the listeners' context (new handshakes use it)."""
    cert, key = cfg.path(cfg.tls.cert_file), cfg.path(cfg.tls.key_file)
    try:
        tls.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        log.error(f"TLS certificate not reloaded, the previous one stays: {e}",
                  extra={"event": "tls_reload_failed", "cert": str(cert)})


def authenticator(cfg: Config, storage: Storage, throttle: Throttle | None = None) -> ApiUserAuthenticator:
    lim = cfg.limits
    return ApiUserAuthenticator(
        storage.accounts,
        per_connection=lim.auth_failures_per_connection,
        per_ip=lim.auth_failures_per_ip,
        per_user=lim.auth_failures_per_user,
        window=parse_duration(lim.auth_failure_window),
        failure_delay=parse_duration(lim.auth_failure_delay),
        throttle=throttle,
    )


def disk_guard(cfg: Config, spool: Spool, waiting: Waiting) -> DiskGuard:
    """The free-space reserve over the spool's file system and the SQLite database's (if any)."""
    paths = [spool.root]
    url = storage_url(cfg)
    if url.startswith("sqlite://"):
        paths.append(Path(url[len("sqlite://"):]).parent)
    return DiskGuard(paths, cfg.spool.min_free, waiting)


def submission_services(
    cfg: Config, storage: Storage, *, intake: Accepting, spool: Spool, rate_limiter: RateBudget,
    authenticator: ApiUserAuthenticator, metrics: Metrics, disk: DiskGuard,
    connections: NodeConnections | None = None, chain: PolicyChain | None = None,
) -> SubmissionServices:
    lim = cfg.limits
    return SubmissionServices(
        authenticator=authenticator,
        chain=chain if chain is not None else default_chain(storage.suppressions),
        intake=intake,
        spool=spool,
        rate_limiter=rate_limiter,
        options=cfg.submission,
        node=cfg.node_name,
        hostname=cfg.smtp.hostname or socket.getfqdn(),
        max_message_size=lim.max_message_size,
        metrics=metrics,
        disk=disk,
        connections=connections,
    )
