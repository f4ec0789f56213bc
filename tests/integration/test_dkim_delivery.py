"""DKIM signing at delivery, checked by a real verifier: the key's TXT record is published on the
loopback DNS server, the relay delivers to a scripted MX, and dkimpy verifies the message as the MX
received it, looking the key up over UDP with dnspython (both storage backends)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import dkim as dkimpy
import dns.exception
import dns.resolver
import pytest

from relay import dkim
from relay.delivery.outgoing import POOL_MIN_BYTES, Outgoing
from relay.delivery.state import DeliveryItem
from storage.errors import StorageError
from storage.protocols import Storage
from storage.records import DkimAlgorithm, DkimKey, Status, utcnow
from tests.helpers.dns_server import LoopbackDns
from tests.helpers.mx_sink import ScriptedMx
from tests.integration.delivery_harness import DeliveryHarness, make_harness


def dns_lookup(server: LoopbackDns) -> Callable[..., bytes | None]:
    """dkimpy's ``dnsfunc``: the TXT record of a name, asked of the loopback server over UDP."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port
    resolver.lifetime = 3.0

    def get_txt(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode("ascii"), "TXT")
        except dns.exception.DNSException:
            return None
        return b"".join(answer[0].strings)  # type: ignore[attr-defined]

    return get_txt


async def verify(server: LoopbackDns, content: bytes) -> bool:
    """dkimpy's verdict (in a thread: the DNS server answers from this event loop)."""
    lookup = dns_lookup(server)
    return await asyncio.to_thread(lambda: bool(dkimpy.verify(content, dnsfunc=lookup)))


def tamper(content: bytes, old: bytes, new: bytes) -> bytes:
    assert old in content, old
    return content.replace(old, new, 1)


def signature_tags(content: bytes) -> dict[str, str]:
    head = content.split(b"\r\n\r\n", 1)[0]
    m = re.search(rb"^DKIM-Signature:(.*?)\r\n(?![ \t])", head, re.S | re.M | re.I)
    assert m is not None, head
    text = re.sub(r"\s+", "", m.group(1).decode())
    return dict(t.split("=", 1) for t in text.split(";") if t)


def new_key(domain: str, selector: str = "s1", algorithm: DkimAlgorithm = DkimAlgorithm.RSA,
            account_id: int | None = None) -> DkimKey:
    private, public = dkim.generate(algorithm)
    return DkimKey(domain, selector, algorithm, private, public, utcnow(), account_id=account_id)


async def publish(storage: Storage, server: LoopbackDns, domain: str, selector: str = "s1",
                  algorithm: DkimAlgorithm = DkimAlgorithm.RSA, account_id: int | None = None,
                  key: DkimKey | None = None) -> DkimKey:
    """Store a key (a new one unless given) and publish its record as `mailrelay dkim add` prints it."""
    key = await storage.dkim.add(key or new_key(domain, selector, algorithm, account_id))
    line = dkim.dns_record(key.selector, key.domain, key.algorithm, key.public_key)
    m = re.match(r'^(\S+)\. IN TXT "(.*)"$', line)
    assert m is not None
    server.add_txt(m.group(1), m.group(2))
    return key


def message(kind: str, sender: str = "App <app@acme.example>") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "user@example.test"
    msg["Cc"] = "other@example.test"
    msg["Reply-To"] = "support@acme.example"
    msg["Subject"] = "Grüße, your order" if kind != "7bit" else "Your order"
    msg["Date"] = "Thu, 03 Dec 2026 09:00:00 +0000"
    msg["Message-ID"] = "<m1@acme.example>"
    text = "Hello,\n\nyour order ships today.\n.a line starting with a dot\nFrom the start of a line\n"
    if kind == "7bit":
        msg.set_content(text, cte="7bit")
    elif kind == "8bit":
        msg.set_content(text + "Grüße aus Köln – 8 bits on the wire\n", cte="8bit")
    elif kind == "quoted-printable":
        msg.set_content(text + "Grüße " + "long line " * 20 + "\n", cte="quoted-printable")
    elif kind == "base64":
        msg.set_content(text + "Grüße\n", cte="base64")
    else:  # multipart/alternative
        msg.set_content(text + "Grüße\n", cte="quoted-printable")
        msg.add_alternative("<html><body><p>Hello, <a href='https://acme.example/o/1'>your order</a> "
                            "ships today. Grüße</p></body></html>\n", subtype="html", cte="quoted-printable")
    return msg.as_bytes(policy=SMTP)


@pytest.fixture
async def h(tmp_path: Path, storage: Storage, dns: LoopbackDns, mx_port: int) -> AsyncIterator[DeliveryHarness]:
    harness = await make_harness(tmp_path, storage, dns, mx_port, {"delivery.dkim_processes": 1})
    yield harness
    await harness.close()


def outgoing(h: DeliveryHarness) -> Outgoing:
    assert h.scheduler.ctx.outgoing is not None
    return h.scheduler.ctx.outgoing


async def test_every_kind_of_mime_mail_is_signed_and_verifies(h: DeliveryHarness, mx: ScriptedMx,
                                                               dns: LoopbackDns) -> None:
    await publish(h.storage, dns, "acme.example", "mr202612")
    kinds = ["7bit", "8bit", "quoted-printable", "base64", "multipart/alternative"]
    for kind in kinds:
        await h.submit("user@example.test", body=message(kind))
    await h.step()
    assert len(mx.messages) == len(kinds)
    for kind, got in zip(kinds, mx.messages, strict=True):
        assert got.content.startswith(b"DKIM-Signature: "), kind  # the first field: added last
        tags = signature_tags(got.content)
        assert (tags["d"], tags["s"], tags["a"], tags["c"]) == (
            "acme.example", "mr202612", "rsa-sha256", "relaxed/relaxed"), kind
        signed = tags["h"].split(":")
        for name in ("from", "to", "cc", "reply-to", "subject", "date", "message-id", "mime-version",
                     "content-type", "feedback-id"):
            assert name in signed, (kind, name)
        # present at the top of a single part, absent from a multipart's (only present fields are signed)
        assert ("content-transfer-encoding" in signed) == (not kind.startswith("multipart")), kind
        assert signed.count("from") == 2 and signed.count("subject") == 2  # over-signed
        assert b"\r\nFeedback-ID: default:app1:acme:mailrelay\r\n" in got.content
        assert await verify(dns, got.content), kind
    eight = mx.messages[1].content
    assert "Grüße aus Köln".encode() in eight  # 8-bit body left as it is, still verifies
    # a tampered copy does not verify: body, a signed header, or an added From
    first = mx.messages[0].content
    assert not await verify(dns, tamper(first, b"ships today", b"ships tomorrow"))
    assert not await verify(dns, tamper(first, b"Reply-To: support@", b"Reply-To: evil@"))
    assert not await verify(dns, tamper(first, b"\r\nTo: ", b"\r\nFrom: x@evil.test\r\nTo: "))
    assert not await verify(dns, tamper(eight, "Köln".encode(), b"Bonn"))


async def test_ed25519_key_signs(h: DeliveryHarness, mx: ScriptedMx, dns: LoopbackDns) -> None:
    await publish(h.storage, dns, "acme.example", "ed1", DkimAlgorithm.ED25519)
    await h.submit("user@example.test", body=message("multipart/alternative"))
    await h.step()
    tags = signature_tags(mx.messages[0].content)
    assert (tags["a"], tags["s"]) == ("ed25519-sha256", "ed1")
    assert await verify(dns, mx.messages[0].content)
    assert not await verify(dns, tamper(mx.messages[0].content, b"ships today", b"ships later"))


@pytest.mark.parametrize("algorithm", list(DkimAlgorithm))
async def test_large_message_is_signed_in_a_worker_process_and_verifies(h: DeliveryHarness, mx: ScriptedMx,
                                                                       dns: LoopbackDns,
                                                                       algorithm: DkimAlgorithm) -> None:
    # from POOL_MIN_BYTES on, dkimpy's canonicalisation would hold the event loop: a worker signs
    await publish(h.storage, dns, "acme.example", "big", algorithm)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "App <app@acme.example>", "user@example.test", "Your invoice"
    msg.set_content("Your invoice is attached.\n")
    msg.add_attachment(bytes(range(256)) * 800, maintype="application", subtype="pdf", filename="invoice.pdf")
    body = msg.as_bytes(policy=SMTP)
    assert len(body) > POOL_MIN_BYTES
    await h.submit("user@example.test", body=body)
    await h.step()
    assert outgoing(h)._signer._pool is not None  # the pool signed it (started on first use)
    content = mx.messages[0].content
    assert signature_tags(content)["s"] == "big" and await verify(dns, content)
    assert not await verify(dns, tamper(content, b"invoice is attached", b"invoice is attacked"))


async def test_unsigned_without_key_and_subdomain_signed_with_the_parent(h: DeliveryHarness, mx: ScriptedMx,
                                                                         dns: LoopbackDns) -> None:
    await publish(h.storage, dns, "acme.example")
    no_key = await h.submit("user@example.test", body=message("7bit", "app@other.example"))
    sub = await h.submit("user@example.test", body=message("7bit", "News <news@mail.acme.example>"))
    lookalike = await h.submit("user@example.test", body=message("7bit", "x@notacme.example"))
    await h.step()
    by_id = dict(zip([no_key, sub, lookalike], mx.messages, strict=True))
    assert b"DKIM-Signature" not in by_id[no_key].content
    assert b"DKIM-Signature" not in by_id[lookalike].content
    assert b"Feedback-ID: default:app1:acme:mailrelay" in by_id[no_key].content  # added to every message
    assert signature_tags(by_id[sub].content)["d"] == "acme.example"
    assert await verify(dns, by_id[sub].content)
    for email_id in (no_key, sub, lookalike):
        assert (await h.status(email_id, "user@example.test")).status == Status.DELIVERED


async def test_account_bound_key_signs_only_that_accounts_mail(h: DeliveryHarness, mx: ScriptedMx,
                                                               dns: LoopbackDns) -> None:
    beta = await h.storage.accounts.ensure_account("beta")
    await publish(h.storage, dns, "acme.example", "bound", account_id=h.account_id)
    h.account_id = beta.id
    await h.submit("user@example.test", body=message("7bit"))
    await h.step()
    assert b"DKIM-Signature" not in mx.messages[0].content  # beta may not sign as acme
    assert b"Feedback-ID: default:app1:beta:mailrelay" in mx.messages[0].content


async def test_existing_feedback_id_is_kept(h: DeliveryHarness, mx: ScriptedMx, dns: LoopbackDns) -> None:
    await publish(h.storage, dns, "acme.example")
    body = message("7bit").replace(b"Subject:", b"Feedback-ID: c1:cust9:promo:esp\r\nSubject:")
    await h.submit("user@example.test", body=body)
    await h.step()
    content = mx.messages[0].content
    assert content.count(b"Feedback-ID:") == 1 and b"Feedback-ID: c1:cust9:promo:esp" in content
    assert "feedback-id" in signature_tags(content)["h"].split(":")
    assert await verify(dns, content)


async def test_per_recipient_headers_are_signed_per_recipient(h: DeliveryHarness, mx: ScriptedMx,
                                                              dns: LoopbackDns) -> None:
    await publish(h.storage, dns, "acme.example")

    async def unsubscribe(item: DeliveryItem) -> Sequence[tuple[str, str]]:
        token = item.recipient.split("@")[0]
        return [("List-Unsubscribe", f"<https://links.acme.example/u/{token}>"),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]

    outgoing(h).add_recipient_headers(unsubscribe)
    await h.submit("ann@example.test", "bob@example.test", body=message("multipart/alternative"))
    await h.step()
    got = {m.rcpt: m.content for m in mx.messages}
    assert set(got) == {"ann@example.test", "bob@example.test"}
    for rcpt, content in got.items():
        assert f"List-Unsubscribe: <https://links.acme.example/u/{rcpt.split('@')[0]}>".encode() in content
        signed = signature_tags(content)["h"].split(":")
        assert "list-unsubscribe" in signed and "list-unsubscribe-post" in signed
        assert content.startswith(b"DKIM-Signature: ")
        assert await verify(dns, content)
    assert signature_tags(got["ann@example.test"])["b"] != signature_tags(got["bob@example.test"])["b"]
    swapped = tamper(got["ann@example.test"], b"/u/ann>", b"/u/bob>")
    assert not await verify(dns, swapped)  # one recipient's link cannot be moved to another's mail


async def test_one_signature_per_message_without_per_recipient_headers(h: DeliveryHarness, mx: ScriptedMx,
                                                                       dns: LoopbackDns) -> None:
    await publish(h.storage, dns, "acme.example")
    calls = 0
    signer = outgoing(h)._signer
    real = signer.sign

    async def counting(content: bytes, names: list[str], key: DkimKey) -> bytes:
        nonlocal calls
        calls += 1
        return await real(content, names, key)

    signer.sign = counting  # type: ignore[method-assign]
    await h.submit("a@example.test", "b@example.test", "c@example.test", body=message("base64"))
    await h.step()
    assert len(mx.messages) == 3 and calls == 1
    assert len({signature_tags(m.content)["b"] for m in mx.messages}) == 1
    for m in mx.messages:
        assert await verify(dns, m.content)


async def test_key_added_on_another_node_applies_after_the_cache_ttl(tmp_path: Path, storage: Storage,
                                                                     dns: LoopbackDns, mx: ScriptedMx,
                                                                     mx_port: int) -> None:
    h = await make_harness(tmp_path, storage, dns, mx_port,
                           {"delivery.dkim_processes": 0, "delivery.dkim_cache_ttl": "1500ms"})
    key = new_key("acme.example")  # made beforehand: generating it may take longer than the TTL
    try:
        await h.submit("user@example.test", body=message("7bit"))
        await h.step()
        assert b"DKIM-Signature" not in mx.messages[0].content  # no key yet (the empty table is cached)
        await publish(storage, dns, "acme.example", key=key)  # as `mailrelay dkim add` on any node does
        await h.submit("user@example.test", body=message("7bit"))
        await h.step()
        assert b"DKIM-Signature" not in mx.messages[1].content  # still the cached snapshot
        await asyncio.sleep(1.6)
        await h.submit("user@example.test", body=message("7bit"))
        await h.step()
        assert await verify(dns, mx.messages[2].content)
        await storage.dkim.remove("acme.example", "s1")
        await asyncio.sleep(1.6)
        await h.submit("user@example.test", body=message("7bit"))
        await h.step()
        assert b"DKIM-Signature" not in mx.messages[3].content
    finally:
        await h.close()


async def test_unreadable_keys_delay_the_mail_instead_of_sending_it_unsigned(
        h: DeliveryHarness, mx: ScriptedMx, dns: LoopbackDns, monkeypatch: pytest.MonkeyPatch) -> None:
    await publish(h.storage, dns, "acme.example")
    real = h.storage.dkim.list

    async def down(domain: str | None = None) -> list[DkimKey]:
        raise StorageError("connection refused")

    monkeypatch.setattr(h.storage.dkim, "list", down)
    email_id = await h.submit("user@example.test", body=message("7bit"))
    await h.step()
    assert mx.messages == []
    row = await h.status(email_id, "user@example.test")
    assert row.status == Status.SENDING and "DKIM keys not readable" in row.log[-1].text
    monkeypatch.setattr(h.storage.dkim, "list", real)
    await h.step(advance=60)  # the first retry
    assert len(mx.messages) == 1 and await verify(dns, mx.messages[0].content)
    assert (await h.status(email_id, "user@example.test")).status == Status.DELIVERED


async def test_keys_already_loaded_keep_signing_while_the_database_is_down(
        tmp_path: Path, storage: Storage, dns: LoopbackDns, mx: ScriptedMx, mx_port: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    h = await make_harness(tmp_path, storage, dns, mx_port, {"delivery.dkim_processes": 0,
                                                             "delivery.dkim_cache_ttl": "0s"})
    try:
        await publish(storage, dns, "acme.example")
        await h.submit("user@example.test", body=message("7bit"))
        await h.step()

        async def down(domain: str | None = None) -> list[DkimKey]:
            raise StorageError("connection refused")

        monkeypatch.setattr(storage.dkim, "list", down)
        await h.submit("user@example.test", body=message("base64"))
        await h.step()
        assert len(mx.messages) == 2
        for m in mx.messages:
            assert await verify(dns, m.content)
    finally:
        await h.close()


async def test_broken_key_delays_and_unparsable_header_is_sent_unsigned(
        h: DeliveryHarness, mx: ScriptedMx, dns: LoopbackDns) -> None:
    await publish(h.storage, dns, "acme.example")
    # a key whose private part is damaged (edited in the database)
    good = new_key("broken.example", "bad")
    await h.storage.dkim.add(DkimKey("broken.example", "bad", DkimAlgorithm.RSA, "not a key", good.public_key,
                                     utcnow()))
    # a header line dkimpy cannot parse: the message still goes out (unsigned), never held forever
    odd = await h.submit("user@example.test",
                         body=b"From: app@acme.example\r\nnot a header line\r\nSubject: x\r\n\r\nbody\r\n")
    waiting = await h.submit("user@example.test", body=message("7bit", "app@broken.example"))
    await h.step()
    assert len(mx.messages) == 1 and b"DKIM-Signature" not in mx.messages[0].content
    assert (await h.status(odd, "user@example.test")).status == Status.DELIVERED
    # the broken key: the mail waits (retried), with the reason in its log
    row = await h.status(waiting, "user@example.test")
    assert row.status == Status.SENDING and "cannot sign with bad._domainkey.broken.example" in row.log[-1].text
