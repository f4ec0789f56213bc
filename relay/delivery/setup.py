"""Build the delivery stage from the configuration (called by the composition root only)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from policies import PolicyChain
from relay import tokens, verp
from relay.config import Config, parse_duration, parse_hostport
from relay.delivery.client import ClientOptions
from relay.delivery.dispatcher import DispatchContext
from relay.delivery.mx import DnsPermFail, DnsTempFail, MxPlan, MxResolver, NullMx
from relay.delivery.outgoing import DkimKeys, Outgoing, Signer
from relay.delivery.recipient_links import RecipientLinks, SettingsCache
from relay.delivery.recorder import OutcomeRecorder
from relay.delivery.retry import RetryPolicy
from relay.delivery.routes import Routes, plan_for
from relay.delivery.scheduler import Scheduler, SchedulerDeps
from relay.delivery.site import SiteLimits
from relay.delivery.state import DeliveryItem
from relay.delivery.tracking import Tracker
from relay.metrics import Metrics
from relay.rules import load_tencent_rules
from relay.rules.review import ReviewRecorder
from relay.rules.site import load_reply_rules
from relay.spool import Spool
from storage.protocols import Storage


def routes_from(cfg: Config) -> Routes:
    d = cfg.delivery
    relayhost = parse_hostport(d.relayhost, "delivery.relayhost") if d.relayhost else None
    transport = {}
    for i, route in enumerate(d.transport):
        dom, _, target = route.partition("=")
        transport[dom.strip().lower()] = parse_hostport(target.strip(), f"delivery.transport[{i}]")
    return Routes(relayhost=relayhost, transport=transport)


def site_limits_from(cfg: Config) -> SiteLimits:
    s = cfg.sites
    return SiteLimits(
        max_connections=s.max_connections, messages_per_connection=s.messages_per_connection,
        max_rate=s.max_rate, min_rate=s.min_rate, rate_increase=s.rate_increase, rate_decrease=s.rate_decrease,
        pause_initial=parse_duration(s.pause_initial), pause_max=parse_duration(s.pause_max),
    )


#: How long account and API_USER settings (`mailrelay accounts set`, `users set`) are cached by delivery.
SETTINGS_TTL = 5.0


def outgoing_from(cfg: Config, storage: Storage) -> Outgoing:
    d = cfg.delivery
    outgoing = Outgoing(DkimKeys(storage.dkim, parse_duration(d.dkim_cache_ttl, "delivery.dkim_cache_ttl")),
                        Signer(d.dkim_processes), storage.accounts, feedback_id=d.feedback_id)
    if cfg.web.public_url:
        settings = SettingsCache(storage.accounts, SETTINGS_TTL)
        links = RecipientLinks(cfg.web.public_url, tokens.read_secrets(cfg.path(cfg.web.token_secret_file)),
                               cfg.feedback.domains[0] if cfg.feedback.domains else "", settings)
        outgoing.add_body_transform(Tracker(links, settings, cfg.web.public_url).transform)
        outgoing.add_recipient_headers(links.unsubscribe_headers)
    return outgoing


def build_scheduler(cfg: Config, storage: Storage, spool: Spool, chain: PolicyChain | None,
                    clock: Callable[[], float] = time.time, metrics: Metrics | None = None,
                    review: ReviewRecorder | None = None) -> Scheduler:
    d = cfg.delivery
    resolver = MxResolver(
        nameservers=[parse_hostport(ns, "delivery.dns") for ns in d.dns] or None,
        timeout=parse_duration(d.dns_timeout),
    )
    routes = routes_from(cfg)

    async def plan(domain: str) -> MxPlan | NullMx | DnsTempFail | DnsPermFail:
        return await plan_for(domain, resolver, routes, d.mx_port)

    return_domain = cfg.feedback.domains[0] if cfg.feedback.domains else ""
    secret = verp.read_verp_secret(cfg.path(d.verp_secret_file)) if return_domain else b""

    def return_path(item: DeliveryItem) -> str:
        if not return_domain:
            return item.sender
        return verp.encode(item.email_id, item.recipient, return_domain, secret)

    async def load_content(email_id: str) -> bytes:
        return await spool.read_content(email_id)

    ctx = DispatchContext(
        client=ClientOptions(
            ehlo_name=d.ehlo_name or socket.getfqdn(), source_ip=d.source_ip or None,
            connect_timeout=parse_duration(d.connect_timeout), command_timeout=parse_duration(d.command_timeout),
            data_timeout=parse_duration(d.data_timeout), starttls=d.starttls,
        ),
        rules=load_reply_rules(cfg.home),  # site rules first (relay/rules/site.py)
        chain=chain,
        load_content=load_content,
        outgoing=outgoing_from(cfg, storage),
        return_path=return_path,
        report=_unbound,
        stopping=lambda: False,
    )
    deps = SchedulerDeps(
        spool=spool,
        recorder=OutcomeRecorder(storage, load_tencent_rules(), review),
        plan_for=plan,
        retry=RetryPolicy(
            schedule=[parse_duration(x) for x in d.retry_schedule],
            then_every=parse_duration(d.retry_then_every), max_age=parse_duration(d.max_age),
        ),
        limits=site_limits_from(cfg),
        clock=clock,
        max_in_flight=d.max_in_flight,
        metrics=metrics or Metrics(),
    )
    return Scheduler(deps, ctx)


async def _unbound(*_args: object, **_kw: object) -> None:  # replaced by Scheduler.__init__
    raise RuntimeError("dispatch context not bound to a scheduler")
