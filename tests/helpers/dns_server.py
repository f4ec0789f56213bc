"""A tiny but real authoritative DNS server on loopback, for delivery tests (dnslib wire format).

It runs inside the test's event loop: UDP (an asyncio DatagramProtocol) and TCP (for answers that
do not fit a UDP datagram) on the same ephemeral port of 127.0.0.1. Point the resolver at it::

    dns = LoopbackDns()
    await dns.start()
    dns.add_mx("example.com", [(10, "mx1.example.com"), (20, "mx2.example.com")])
    dns.add_a("mx1.example.com", "127.0.0.2")
    resolver = MxResolver(nameservers=[dns.address], timeout=0.5)
    ...
    dns.stop()

The zone is a plain in-memory table that tests edit at any time:

- ``add_mx`` / ``add_a`` / ``add_aaaa`` / ``add_cname`` / ``add_txt`` add records (TTL: per call or ``default_ttl``);
- ``null_mx(domain)`` publishes ``MX 0 .`` (RFC 7505);
- ``nxdomain(domain)`` removes the name and answers NXDOMAIN for it;
- ``servfail(domain, qtype=None)`` answers SERVFAIL (for one type, or all);
- ``slow(domain, seconds, qtype=None)`` answers after a delay; ``seconds=None`` never answers;
- ``clear(domain)`` forgets everything about a name (records and misbehaviours).

A name that has records (or a descendant with records, or was declared with ``add_name``) answers
NOERROR with an empty answer (NODATA) for the types it lacks; any other name is NXDOMAIN.
Every query is counted per (name, type): ``count(name, qtype=None)`` — to test resolver caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, SOA, TXT, A, DNSError, DNSHeader, DNSRecord

__all__ = ["LoopbackDns"]

UDP_MAX = 512  # without EDNS; with EDNS the client's advertised payload size


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _qtype(qtype: str | int | None) -> int | None:
    if qtype is None or isinstance(qtype, int):
        return qtype
    return int(getattr(QTYPE, qtype.upper()))


@dataclass
class _Record:
    qtype: int
    rdata: Any
    ttl: int


@dataclass
class _Name:
    records: list[_Record] = field(default_factory=list)
    declared: bool = False  # exists even without records


class LoopbackDns:
    """An authoritative server for whatever names the test puts in its zone."""

    def __init__(self, host: str = "127.0.0.1", *, default_ttl: int = 300, negative_ttl: int = 60,
                 tcp: bool = True) -> None:
        self.host = host
        self.port = 0
        self.default_ttl = default_ttl
        self.negative_ttl = negative_ttl
        self.tcp = tcp
        self.queries: Counter[tuple[str, str]] = Counter()
        self._names: dict[str, _Name] = {}
        self._nxdomain: set[str] = set()
        self._servfail: dict[str, set[int | None]] = {}
        self._slow: dict[str, dict[int | None, float | None]] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._pending: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # region lifecycle
    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, the form ``MxResolver(nameservers=[...])`` takes."""
        return (self.host, self.port)

    async def start(self) -> LoopbackDns:
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for _ in range(20):  # find a port free for both UDP and TCP
            transport, _proto = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, 0))
            port = transport.get_extra_info("sockname")[1]
            if not self.tcp:
                self._udp, self.port = transport, port
                return self
            try:
                self._tcp_server = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError as e:
                transport.close()
                last = e
                continue
            self._udp, self.port = transport, port
            return self
        raise RuntimeError(f"no free UDP+TCP port on {self.host}: {last}")

    def stop(self) -> None:
        for h in self._pending:
            h.cancel()
        self._pending.clear()
        for t in self._tasks:
            t.cancel()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp_server is not None:
            self._tcp_server.close()
            self._tcp_server = None

    async def __aenter__(self) -> LoopbackDns:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    # endregion

    # region zone editing
    def _name(self, name: str) -> _Name:
        n = _norm(name)
        self._nxdomain.discard(n)
        return self._names.setdefault(n, _Name())

    def _add(self, name: str, qtype: int, rdata: Any, ttl: int | None) -> None:
        self._name(name).records.append(_Record(qtype, rdata, self.default_ttl if ttl is None else ttl))

    def add_name(self, name: str) -> None:
        """Make ``name`` exist without records (NODATA instead of NXDOMAIN)."""
        self._name(name).declared = True

    def add_mx(self, domain: str, mxs: list[tuple[int, str]], ttl: int | None = None) -> None:
        for pref, host in mxs:
            self._add(domain, QTYPE.MX, MX(host if host.endswith(".") else host + ".", pref), ttl)

    def null_mx(self, domain: str, ttl: int | None = None) -> None:
        """Replace the MX records of ``domain`` with the null MX ``0 .`` (RFC 7505)."""
        self.remove(domain, "MX")
        self._add(domain, QTYPE.MX, MX(".", 0), ttl)

    def add_a(self, host: str, ip: str, ttl: int | None = None) -> None:
        self._add(host, QTYPE.A, A(ip), ttl)

    def add_aaaa(self, host: str, ip: str, ttl: int | None = None) -> None:
        self._add(host, QTYPE.AAAA, AAAA(ip), ttl)

    def add_cname(self, name: str, target: str, ttl: int | None = None) -> None:
        self._add(name, QTYPE.CNAME, CNAME(target if target.endswith(".") else target + "."), ttl)

    def add_txt(self, name: str, text: str, ttl: int | None = None) -> None:
        """One TXT record; text longer than 255 bytes becomes several strings of one record (as DNS
        software publishes a DKIM key; verifiers join them)."""
        data = text.encode("utf-8")
        self._add(name, QTYPE.TXT, TXT([data[i:i + 255] for i in range(0, len(data), 255)] or [b""]), ttl)

    def set_ttl(self, name: str, ttl: int, qtype: str | None = None) -> None:
        """Change the TTL of the existing records of ``name`` (of one type, or all)."""
        want = _qtype(qtype)
        for r in self._names.get(_norm(name), _Name()).records:
            if want is None or r.qtype == want:
                r.ttl = ttl

    def remove(self, name: str, qtype: str | None = None) -> None:
        """Remove the records of ``name`` (of one type, or all); the name keeps existing if declared."""
        n = self._names.get(_norm(name))
        if n is None:
            return
        want = _qtype(qtype)
        n.records = [r for r in n.records if want is not None and r.qtype != want]

    def nxdomain(self, domain: str) -> None:
        """The name does not exist: NXDOMAIN for every type, whatever was there before."""
        n = _norm(domain)
        self._names.pop(n, None)
        self._nxdomain.add(n)

    def servfail(self, domain: str, qtype: str | None = None) -> None:
        self._servfail.setdefault(_norm(domain), set()).add(_qtype(qtype))

    def slow(self, domain: str, seconds: float | None, qtype: str | None = None) -> None:
        """Answer queries for ``domain`` after ``seconds``; ``None`` drops them (a dead server)."""
        self._slow.setdefault(_norm(domain), {})[_qtype(qtype)] = seconds

    def heal(self, domain: str) -> None:
        """Forget ``servfail``/``slow`` for ``domain`` (records stay)."""
        n = _norm(domain)
        self._servfail.pop(n, None)
        self._slow.pop(n, None)

    def clear(self, domain: str) -> None:
        n = _norm(domain)
        self._names.pop(n, None)
        self._nxdomain.discard(n)
        self.heal(n)

    def count(self, name: str, qtype: str | None = None) -> int:
        """How many queries arrived for ``name`` (of one type, or of any)."""
        n = _norm(name)
        if qtype is not None:
            return self.queries[(n, qtype.upper())]
        return sum(c for (qn, _t), c in self.queries.items() if qn == n)

    # endregion

    # region answering
    def _exists(self, n: str) -> bool:
        if n in self._nxdomain:
            return False
        if n in self._names and (self._names[n].records or self._names[n].declared):
            return True
        suffix = "." + n
        return any(k.endswith(suffix) and (v.records or v.declared) for k, v in self._names.items())

    def _delay(self, n: str, qtype: int) -> tuple[bool, float | None]:
        """(delayed?, seconds or None = never)."""
        rules = self._slow.get(n)
        if not rules:
            return False, 0.0
        for key in (qtype, None):
            if key in rules:
                return True, rules[key]
        return False, 0.0

    def _soa(self, zone: str) -> RR:
        return RR(zone + ".", QTYPE.SOA, ttl=self.negative_ttl,
                  rdata=SOA("ns.test.", "hostmaster.test.", (1, 3600, 600, 86400, self.negative_ttl)))

    def answer(self, request: DNSRecord) -> DNSRecord:
        """Build the reply to one parsed query (the zone logic, no I/O)."""
        reply = request.reply()  # QR, AA, RA set; id and question copied
        q = request.q
        n = _norm(str(q.qname))
        qtype = q.qtype
        fails = self._servfail.get(n)
        if fails is not None and (None in fails or qtype in fails):
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if not self._exists(n):
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self._soa(n.split(".", 1)[-1] or n))
            return reply
        seen: set[str] = set()
        while True:  # follow CNAMEs inside our zone, like an authoritative server does
            recs = self._names.get(n, _Name()).records
            cname = [r for r in recs if r.qtype == QTYPE.CNAME]
            if cname and qtype != QTYPE.CNAME and n not in seen:
                seen.add(n)
                r = cname[0]
                reply.add_answer(RR(n + ".", QTYPE.CNAME, rdata=r.rdata, ttl=r.ttl))
                n = _norm(str(r.rdata.label))
                continue
            for r in recs:
                if r.qtype == qtype or qtype == QTYPE.ANY:
                    reply.add_answer(RR(n + ".", r.qtype, rdata=r.rdata, ttl=r.ttl))
            break
        if not reply.rr:
            reply.add_auth(self._soa(n))
        return reply

    def _handle(self, data: bytes, max_size: int | None) -> tuple[bytes | None, float | None, bool]:
        """Wire query -> (reply bytes or None, delay seconds or None = never, delayed?)."""
        try:
            request = DNSRecord.parse(data)
        except (DNSError, struct.error, IndexError, ValueError):
            return None, 0.0, False
        if not request.questions:
            return None, 0.0, False
        q = request.q
        n = _norm(str(q.qname))
        self.queries[(n, QTYPE.get(q.qtype, str(q.qtype)))] += 1
        delayed, seconds = self._delay(n, q.qtype)
        reply = self.answer(request)
        wire = reply.pack()
        if max_size is not None:
            edns = [r for r in request.ar if r.rtype == QTYPE.OPT]
            limit = max(UDP_MAX, edns[0].rclass) if edns else UDP_MAX
            if len(wire) > limit:  # tell the client to retry over TCP
                short = DNSRecord(DNSHeader(id=request.header.id, qr=1, aa=1, ra=1, tc=1), q=q)
                wire = short.pack()
        return wire, seconds, delayed

    def _later(self, delay: float, fn: Any, *args: Any) -> None:
        loop = asyncio.get_running_loop()

        def run() -> None:
            self._pending.discard(handle)
            fn(*args)

        handle = loop.call_later(delay, run)
        self._pending.add(handle)

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        wire, seconds, delayed = self._handle(data, UDP_MAX)
        if wire is None:
            return
        if not delayed:
            self._send_udp(wire, addr)
        elif seconds is not None:
            self._later(seconds, self._send_udp, wire, addr)

    def _send_udp(self, wire: bytes, addr: tuple[str, int]) -> None:
        if self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(wire, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = await reader.readexactly(2)
                data = await reader.readexactly(struct.unpack("!H", head)[0])
                wire, seconds, delayed = self._handle(data, None)
                if wire is None:
                    continue
                if delayed:
                    if seconds is None:
                        await asyncio.Event().wait()  # never answers; cancelled by stop()
                    else:
                        await asyncio.sleep(seconds)
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # endregion


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: LoopbackDns) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server._datagram(data, addr)
