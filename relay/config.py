"""mailrelay.toml → frozen dataclasses, with strict validation.

Every key has a default here, and ``deploy/mailrelay.toml.example`` (rendered by
:func:`relay.config_render.render_config`) documents each one. An unknown key or a value of the
wrong type is an error that names the key: a typo must never fall back to a default silently.
Durations are strings like ``"30s"``, ``"5m"``, ``"3d"``; sizes are integers (bytes).
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The configuration file in a data directory (``mailrelay init`` writes it).
CONFIG_NAME = "mailrelay.toml"


class ConfigError(ValueError):
    """The configuration file is invalid; the message names the key."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | int | float, key: str = "duration") -> float:
    """``"5m"`` → 300.0 seconds. Plain numbers are seconds."""
    if isinstance(text, bool):
        raise ConfigError(f"{key}: expected a duration like '30s', got {text!r}")
    if isinstance(text, int | float):
        return float(text)
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"{key}: expected a duration like '30s', '5m', '3d', got {text!r}")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def parse_hostport(text: str, key: str) -> tuple[str, int]:
    """``"127.0.0.1:2525"`` or ``"[::1]:2525"`` → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"{key}: expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    p = int(port)
    if not 0 <= p <= 65535:
        raise ConfigError(f"{key}: port out of range in {text!r}")
    return host, p


def is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


@dataclass(frozen=True)
class NodeConfig:
    name: str = ""  # this node's name in status records; empty = the host name
    spool_dir: str = "spool"  # accepted messages until delivered (relative to the data directory)
    control_socket: str = "control.sock"  # Unix socket the CLI uses to reach the running server (queues)


@dataclass(frozen=True)
class StorageConfig:
    url: str = ""  # empty = SQLite in the data dir; or postgresql://user@host/db ($MAILRELAY_DATABASE_URL wins)


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str = "tls/cert.pem"  # PEM certificate chain for STARTTLS and implicit TLS (relative to the data dir)
    key_file: str = "tls/key.pem"  # private key of cert_file (PEM)


@dataclass(frozen=True)
class ListenerConfig:
    listen: str = ""  # HOST:PORT; empty = this listener is off
    hostname: str = ""  # greeting/EHLO name; empty = the machine's FQDN
    allow_auth_without_tls: bool = False  # only sensible on loopback listeners
    normalize_bare_lf: bool = False  # DATA: convert bare CR/LF to CRLF instead of rejecting
    max_connections_per_ip: int = 50  # concurrent connections from one client IP; 421 above it


@dataclass(frozen=True)
class IntakeConfig:
    # The main process keeps the queue, the database writes and delivery (relay/workers).
    workers: int = -1  # processes running the SMTP sessions; -1 = one per CPU beyond the first (max 4); 0 = none


@dataclass(frozen=True)
class LimitsConfig:
    max_message_size: int = 31457280  # bytes (30 MiB); SIZE and 552 above it
    max_recipients: int = 1000  # per message; 452 above it (>= 100)
    messages_per_second: float = 1000.0  # per API_USER; 451 4.7.1 above it
    messages_burst: int = 2000  # token bucket depth for messages_per_second
    max_protocol_errors: int = 20  # then 421 and close
    command_timeout: str = "5m"  # idle time between commands
    data_timeout: str = "10m"  # whole DATA phase
    data_idle_timeout: str = "1m"  # no bytes inside DATA
    auth_failures_per_connection: int = 3  # then 421 and close
    auth_failures_per_ip: int = 20  # within auth_failure_window, then 421 at AUTH
    auth_failures_per_user: int = 50  # within auth_failure_window, across all IPs
    auth_failure_window: str = "15m"  # sliding window for the per-IP and per-user failure counts
    auth_failure_delay: str = "1s"  # pause before answering a failed AUTH


@dataclass(frozen=True)
class SubmissionConfig:
    label_headers: tuple[str, ...] = ("X-Label", "X-Label-Id", "X-Mailrelay-Label")  # the label; removed
    type_headers: tuple[str, ...] = ("X-Email-Type", "X-Mailrelay-Email-Type")  # transactional|marketing; removed
    max_header_bytes: int = 1048576  # header block scanned for label/type/subject


@dataclass(frozen=True)
class SpoolConfig:
    fsync: bool = True  # never turn off in production: 250 means durable
    group_commit_max: int = 256  # most messages made durable in one batch
    min_free: int = 67108864  # free bytes kept: this + 4 KiB/queued message + 1 KiB/recipient, else 452 4.3.1; 0 = off


@dataclass(frozen=True)
class DeliveryConfig:
    enabled: bool = True  # deliver accepted mail (false: accept and keep in the spool only)
    ehlo_name: str = ""  # our EHLO name towards MX hosts; empty = the machine's FQDN
    source_ip: str = ""  # local address to send from (the "send IP"); empty = the system's choice
    dns: tuple[str, ...] = ()  # nameservers as HOST:PORT; empty = the system resolver
    dns_timeout: str = "5s"  # one DNS lookup
    mx_port: int = 25  # TCP port used to reach MX hosts
    relayhost: str = ""  # HOST:PORT that receives ALL mail instead of the MX (Postfix relayhost)
    transport: tuple[str, ...] = ()  # per-domain routes "example.com=HOST:PORT" (".example.com" = subdomains)
    starttls: str = "opportunistic"  # opportunistic | never | required
    retry_schedule: tuple[str, ...] = ("1m", "5m", "15m", "30m", "1h", "2h")  # waits after the 1st, 2nd... failure
    retry_then_every: str = "2h"  # wait after the schedule is used up
    max_age: str = "3d"  # then the recipient is invalid with the last reason
    connect_timeout: str = "30s"  # TCP connect to an MX
    command_timeout: str = "2m"  # one SMTP reply from an MX
    data_timeout: str = "10m"  # reply after the final dot
    max_in_flight: int = 20000  # recipients held in memory ready for sites; the rest wait in the scheduler
    shutdown_grace: str = "20s"  # SIGTERM: attempts in flight may finish within this
    verp_secret_file: str = "verp.key"  # HMAC key of the signed return path (created by init)
    dkim_cache_ttl: str = "5s"  # DKIM keys are re-read from the database this often (`mailrelay dkim add` elsewhere)
    dkim_processes: int = 2  # processes that DKIM-sign messages of 64 KiB+ (smaller: a thread); 0 = all in a thread
    feedback_id: bool = True  # add "Feedback-ID: LABEL:API_USER:ACCOUNT:mailrelay" when the message has none


@dataclass(frozen=True)
class SitesConfig:
    max_connections: int = 10  # per destination site (MX host set)
    messages_per_connection: int = 100  # then the connection is closed and a new one opened
    max_rate: float = 0.0  # messages/s per site before any feedback; 0 = unlimited until the site pushes back
    min_rate: float = 0.2  # AIMD floor (messages/s)
    rate_increase: float = 1.0  # AIMD additive increase (messages/s per second of accepted sending)
    rate_decrease: float = 0.5  # AIMD multiplicative decrease on a rate/connection-limit reply
    pause_initial: str = "1m"  # first pause when a site refuses us; doubles per consecutive pause
    pause_max: str = "3d"  # longest pause


@dataclass(frozen=True)
class FeedbackConfig:
    listen: str = ""  # HOST:PORT of the bounce/complaint listener; empty = off
    hostname: str = ""  # greeting name; empty = the machine's FQDN
    domains: tuple[str, ...] = ()  # domains the feedback listener accepts; the first is the return-path domain
    mailboxes: tuple[str, ...] = ()  # FBL mailboxes accepted at RCPT: "fbl" (every feedback domain) or "fbl@DOMAIN"
    parse_budget: str = "30s"  # longest one received mail may be examined; beyond it the mail is quarantined


@dataclass(frozen=True)
class HttpConfig:
    listen: str = ""  # HOST:PORT of the HTTP API; empty = off
    admin_token: str = ""  # operators' bearer token (sees every account); empty = no admin access
    search_per_minute: int = 60  # status searches (GET /v1/email_status) per account per minute; 429 beyond
    exports_per_minute: int = 10  # exports created per account per minute; 429 beyond
    request_timeout: str = "60s"  # longest a request may take before it answers 503 (uploads included)
    metrics_auth: str = "auto"  # GET /metrics: auto (public on a loopback listen, else admin token) | none | token


@dataclass(frozen=True)
class WebConfig:
    listen: str = ""  # HOST:PORT of the recipient-facing listener (unsubscribe, open, click); empty = off
    public_url: str = ""  # base of every link put in mail, e.g. "https://links.example.com"; empty = no links
    token_secret_file: str = "web.key"  # HMAC keys of the link tokens, hex, one a line, newest first (init)
    token_max_age: str = "365d"  # a link older than this answers 404


@dataclass(frozen=True)
class WebhooksConfig:
    enabled: bool = True  # run the event webhook sender on this node (every node may)
    timeout: str = "5s"  # a POST not answered 2xx within this is a failure
    concurrency: int = 4  # POSTs in flight per endpoint (per node)
    retry_initial: str = "10s"  # first back-off after a failed POST; doubles per retry (with jitter)
    retry_max: str = "1h"  # longest back-off
    disable_after: str = "1d"  # an endpoint whose POSTs all failed for this long is disabled
    poll: str = "1s"  # how often an idle sender looks for new events
    # off: customers cannot point webhooks into the operator's network (relay/webhook_destination.py)
    allow_private_addresses: bool = False  # let webhooks POST to loopback, private, link-local, multicast addresses


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"  # debug, info, warning, error
    format: str = "json"  # json or text


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    smtp: ListenerConfig = field(default_factory=ListenerConfig)
    submission_tls: ListenerConfig = field(default_factory=ListenerConfig)
    intake: IntakeConfig = field(default_factory=IntakeConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    sites: SitesConfig = field(default_factory=SitesConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    web: WebConfig = field(default_factory=WebConfig)
    log: LogConfig = field(default_factory=LogConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    # Not a key: where relative paths resolve (the directory holding mailrelay.toml).
    home: Path = field(default=Path("."), metadata={"internal": True})

    def path(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.home / p

    @property
    def intake_workers(self) -> int:
        """``intake.workers`` resolved: how many intake worker processes to run."""
        if self.intake.workers >= 0:
            return self.intake.workers
        return min(4, max(0, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                 else (os.cpu_count() or 1)) - 1))

    @property
    def node_name(self) -> str:
        return self.node.name or socket.gethostname()


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner, _ellipsis) = typing.get_args(typ)
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(typ) and isinstance(typ, type):
        if not isinstance(value, dict):
            raise ConfigError(f"[{key}]: expected a table, got {value!r}")
        return _build(typ, value, key)
    raise ConfigError(f"{key}: unsupported type {typ!r}")  # pragma: no cover - programming error


def _build(cls: type, table: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            raise ConfigError(f"unknown key {full!r}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def _validate(cfg: Config) -> None:
    for name in ("smtp", "submission_tls"):
        lc: ListenerConfig = getattr(cfg, name)
        if lc.listen:
            parse_hostport(lc.listen, f"{name}.listen")
        if lc.max_connections_per_ip < 1:
            raise ConfigError(f"{name}.max_connections_per_ip: must be >= 1")
    if not -1 <= cfg.intake.workers <= 64:
        raise ConfigError("intake.workers: -1 (auto), 0 (none) or up to 64")
    if cfg.feedback.listen and not cfg.feedback.domains:
        raise ConfigError("feedback.listen is set but feedback.domains is empty (`init --feedback-domain D`)")
    if parse_duration(cfg.feedback.parse_budget, "feedback.parse_budget") <= 0:
        raise ConfigError("feedback.parse_budget: must be positive")
    for mailbox in cfg.feedback.mailboxes:
        local, at, domain = mailbox.lower().rpartition("@") if "@" in mailbox else (mailbox, "", "")
        if not local or len(local.encode()) > 64 or "%" in local or "!" in local or (
                at and domain not in {d.lower() for d in cfg.feedback.domains}):
            raise ConfigError(f"feedback.mailboxes: {mailbox!r} is not a local part (or local@feedback-domain)")
    for name, lst in (("feedback", cfg.feedback.listen), ("http", cfg.http.listen), ("web", cfg.web.listen)):
        if lst:
            parse_hostport(lst, f"{name}.listen")
    for key in ("search_per_minute", "exports_per_minute"):
        if not 1 <= getattr(cfg.http, key) <= 1_000_000:
            raise ConfigError(f"http.{key}: must be between 1 and 1000000")
    if cfg.http.metrics_auth not in ("auto", "none", "token"):
        raise ConfigError("http.metrics_auth: auto, none or token")
    if parse_duration(cfg.http.request_timeout, "http.request_timeout") <= 0:
        raise ConfigError("http.request_timeout: must be positive")
    _validate_web(cfg.web)
    lim = cfg.limits
    if lim.max_recipients < 100:
        raise ConfigError("limits.max_recipients: must be >= 100 (RFC 5321 §4.5.3.1.8)")
    if lim.max_message_size < 1024:
        raise ConfigError("limits.max_message_size: must be >= 1024")
    if lim.messages_per_second <= 0 or lim.messages_burst < 1:
        raise ConfigError("limits.messages_per_second and messages_burst must be positive")
    for key in ("command_timeout", "data_timeout", "data_idle_timeout", "auth_failure_window",
                "auth_failure_delay"):
        parse_duration(getattr(lim, key), f"limits.{key}")
    if cfg.log.level not in ("debug", "info", "warning", "error"):
        raise ConfigError("log.level: one of debug, info, warning, error")
    if cfg.log.format not in ("json", "text"):
        raise ConfigError("log.format: json or text")
    d = cfg.delivery
    for i, ns in enumerate(d.dns):
        parse_hostport(ns, f"delivery.dns[{i}]")
    if d.relayhost:
        parse_hostport(d.relayhost, "delivery.relayhost")
    for i, route in enumerate(d.transport):
        dom, eq, target = route.partition("=")
        if not eq or not dom.strip():
            raise ConfigError(f"delivery.transport[{i}]: expected 'domain=HOST:PORT', got {route!r}")
        parse_hostport(target.strip(), f"delivery.transport[{i}]")
    if d.starttls not in ("opportunistic", "never", "required"):
        raise ConfigError("delivery.starttls: opportunistic, never or required")
    if not 0 < d.mx_port < 65536:
        raise ConfigError("delivery.mx_port: 1-65535")
    for key in ("dns_timeout", "retry_then_every", "max_age", "connect_timeout", "command_timeout",
                "data_timeout", "shutdown_grace", "dkim_cache_ttl"):
        parse_duration(getattr(d, key), f"delivery.{key}")
    if not 0 <= d.dkim_processes <= 64:
        raise ConfigError("delivery.dkim_processes: 0 (sign in a thread) to 64")
    for i, step in enumerate(d.retry_schedule):
        parse_duration(step, f"delivery.retry_schedule[{i}]")
    st = cfg.sites
    if st.max_connections < 1 or st.messages_per_connection < 1:
        raise ConfigError("sites.max_connections and sites.messages_per_connection must be >= 1")
    if st.max_rate < 0 or st.min_rate <= 0 or not 0 < st.rate_decrease < 1:
        raise ConfigError("sites: max_rate >= 0, min_rate > 0, 0 < rate_decrease < 1")
    parse_duration(st.pause_initial, "sites.pause_initial")
    parse_duration(st.pause_max, "sites.pause_max")
    if cfg.spool.group_commit_max < 1:
        raise ConfigError("spool.group_commit_max: must be >= 1")
    wh = cfg.webhooks
    for key in ("timeout", "retry_initial", "retry_max", "disable_after", "poll"):
        if parse_duration(getattr(wh, key), f"webhooks.{key}") <= 0:
            raise ConfigError(f"webhooks.{key}: must be positive")
    if not 1 <= wh.concurrency <= 100:
        raise ConfigError("webhooks.concurrency: 1 to 100")


_PUBLIC_URL = re.compile(r"^https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,200})?$")


def _validate_web(web: WebConfig) -> None:
    if web.public_url and (not _PUBLIC_URL.match(web.public_url) or web.public_url.endswith("/")):
        raise ConfigError(f"web.public_url: expected http(s)://HOST[:PORT][/PATH] without a trailing slash, "
                          f"query or fragment, got {web.public_url!r}")
    if web.listen and not web.public_url:
        raise ConfigError("web.listen is set but web.public_url is empty (`init --public-url URL`)")
    if parse_duration(web.token_max_age, "web.token_max_age") <= 0:
        raise ConfigError("web.token_max_age: must be positive")


def load_config(path: Path) -> Config:
    """Read and validate ``path``; relative paths in it resolve against its directory."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run `mailrelay init --home DIR` first)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    return config_from_dict(data, home=path.parent.resolve())


def config_from_dict(data: dict[str, Any], home: Path) -> Config:
    cfg: Config = _build(Config, data, "")
    cfg = dataclasses.replace(cfg, home=home)
    _validate(cfg)
    return cfg


def iter_keys(cls: type = Config, prefix: str = "") -> typing.Iterator[tuple[str, Any]]:
    """Every documented key as (dotted name, default) — used by the example renderer and its test."""
    hints = typing.get_type_hints(cls)
    inst = cls()
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        typ = hints[f.name]
        full = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(typ) and isinstance(typ, type):
            yield from iter_keys(typ, full)
        else:
            yield full, getattr(inst, f.name)


__all__ = [
    "CONFIG_NAME",
    "Config",
    "ConfigError",
    "DeliveryConfig",
    "FeedbackConfig",
    "HttpConfig",
    "LimitsConfig",
    "ListenerConfig",
    "LogConfig",
    "NodeConfig",
    "SitesConfig",
    "SpoolConfig",
    "StorageConfig",
    "SubmissionConfig",
    "TlsConfig",
    "WebConfig",
    "is_loopback",
    "iter_keys",
    "load_config",
    "parse_duration",
    "parse_hostport",
]
