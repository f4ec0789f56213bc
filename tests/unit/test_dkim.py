"""DKIM pieces without I/O: key generation and the DNS record, the signed header list (over-signing),
key choice, the From domain, dkimpy's verdict on what :func:`relay.dkim.sign` produces, and the
RSA step done by OpenSSL giving dkimpy's own bytes (``relay/dkim_openssl.py``)."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay import dkim, dkim_openssl
from relay.config import ConfigError, config_from_dict
from relay.delivery.outgoing import choose_key, from_domain
from storage.records import DkimAlgorithm, DkimKey

T0 = datetime(2026, 12, 1, tzinfo=UTC)
MSG = (b"From: App <app@acme.example>\r\nTo: someone@example.com\r\nSubject: hi\r\n"
       b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@acme.example>\r\n\r\nhello\r\n")
RECORD = re.compile(r'^(\S+)\. IN TXT "(v=DKIM1; k=(rsa|ed25519); p=[A-Za-z0-9+/]+=*)"$')


def _dns(records: dict[str, str]):  # type: ignore[no-untyped-def]
    def get_txt(name: bytes, timeout: int = 5) -> bytes | None:
        text = records.get(name.decode().rstrip("."))
        return None if text is None else text.encode()
    return get_txt


@pytest.mark.parametrize("algorithm", list(DkimAlgorithm))
def test_generated_key_signs_and_its_record_verifies(algorithm: DkimAlgorithm) -> None:
    private, public = dkim.generate(algorithm)
    line = dkim.dns_record("mr202612", "acme.example", algorithm, public)
    m = RECORD.match(line)
    assert m is not None and m.group(1) == "mr202612._domainkey.acme.example" and m.group(3) == algorithm.value
    if algorithm is DkimAlgorithm.RSA:
        assert private.startswith("-----BEGIN RSA PRIVATE KEY-----") and len(base64.b64decode(public)) > 256
    else:
        assert len(base64.b64decode(private)) == 32 and len(base64.b64decode(public)) == 32
    names = ["From", "To", "Subject", "Date", "Message-ID"]
    sig = dkim.sign(MSG, names, "acme.example", "mr202612", algorithm, private)
    assert sig.startswith(b"DKIM-Signature: ") and sig.endswith(b"\r\n")
    tags = dict(t.strip().split("=", 1) for t in re.sub(rb"\s+", b"", sig[16:]).decode().split(";") if t)
    assert tags["c"] == "relaxed/relaxed" and tags["d"] == "acme.example" and tags["s"] == "mr202612"
    assert tags["a"] == ("rsa-sha256" if algorithm is DkimAlgorithm.RSA else "ed25519-sha256")
    assert tags["h"] == "from:from:to:subject:subject:date:message-id"
    dns = _dns({"mr202612._domainkey.acme.example": m.group(2)})
    assert dkimpy.verify(sig + MSG, dnsfunc=dns)
    assert not dkimpy.verify(sig + MSG.replace(b"hello", b"hellO"), dnsfunc=dns)  # body changed
    # an added second Subject breaks it (over-signed), so does an added From
    assert not dkimpy.verify(sig + MSG.replace(b"Subject: hi\r\n", b"Subject: hi\r\nSubject: win\r\n"), dnsfunc=dns)
    assert not dkimpy.verify(sig + b"From: evil@x.example\r\n" + MSG, dnsfunc=dns)


def test_header_list_signs_present_fields_and_oversigns_from_and_subject() -> None:
    names = ["Received", "From", "To", "Cc", "Cc", "Content-Type", "X-Mailer", "List-Unsubscribe",
             "List-Unsubscribe-Post", "Feedback-ID"]
    assert dkim.header_list(names) == [
        b"from", b"from", b"to", b"cc", b"cc", b"subject", b"content-type", b"list-unsubscribe",
        b"list-unsubscribe-post", b"feedback-id"]


def test_domain_and_selector_checks() -> None:
    assert dkim.normalize_domain(" Acme.Example. ") == "acme.example"
    assert dkim.normalize_domain("bücher.example") == "xn--bcher-kva.example"
    for bad in ("localhost", "-a.example", "a..example", "a_b.example", "x" * 64 + ".example", ""):
        with pytest.raises(dkim.DkimError):
            dkim.normalize_domain(bad)
    assert dkim.check_selector("MR202612") == "mr202612" and dkim.check_selector("s1.eu") == "s1.eu"
    for bad in ("", "a b", "-x", "x;y", "a." , "s" * 64):
        with pytest.raises(dkim.DkimError):
            dkim.check_selector(bad)
    assert dkim.default_selector(T0) == "mr202612"


def _key(domain: str, selector: str, days: int = 0, account_id: int | None = None) -> DkimKey:
    return DkimKey(domain, selector, DkimAlgorithm.RSA, "k", "p", T0 + timedelta(days=days), account_id=account_id)


def test_key_choice() -> None:
    shared_old = _key("acme.example", "old")
    shared_new = _key("acme.example", "new", days=30)
    bound = _key("acme.example", "acct", days=1, account_id=7)
    sub = _key("mail.acme.example", "sub")
    keys = [shared_old, shared_new, bound, sub]
    assert choose_key(keys, "acme.example", 1) is shared_new  # newest of the keys any account may use
    assert choose_key(keys, "acme.example", 7) is bound  # the account's own key before a shared one
    assert choose_key(keys, "news.acme.example", 1) is shared_new  # a subdomain: the parent's key
    assert choose_key(keys, "mail.acme.example", 7) is sub  # the most specific domain first
    assert choose_key(keys, "notacme.example", 1) is None and choose_key(keys, "example", 1) is None
    assert choose_key([bound], "acme.example", 8) is None  # bound to another account


def test_from_domain() -> None:
    assert from_domain([b"App <App@Acme.Example>"]) == "acme.example"
    assert from_domain([b"=?utf-8?q?Caf=C3=A9?= <a@acme.example>, b@ACME.example"]) == "acme.example"
    assert from_domain([b"a@acme.example, b@other.example"]) is None  # two author domains
    assert from_domain([b"a@acme.example", b"b@acme.example"]) is None  # two From fields
    assert from_domain([]) is None and from_domain([b"undisclosed"]) is None
    assert from_domain([b"acme.example"]) is None and from_domain([b"a@acme.example, acme.example"]) is None
    assert from_domain(["a@bücher.example".encode()]) == "xn--bcher-kva.example"


@pytest.mark.parametrize(("delivery", "message"), [
    ({"dkim_cache_ttl": "soon"}, "delivery.dkim_cache_ttl"),
    ({"dkim_processes": -1}, "delivery.dkim_processes"),
    ({"dkim_processes": 1000}, "delivery.dkim_processes"),
    ({"feedback_id": "yes"}, "true or false"),
])
def test_dkim_settings_are_validated(delivery: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"delivery": delivery}, Path("."))


def _rsa_pem(bits: int, pkcs8: bool = False) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    fmt = serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _signed_both_ways(monkeypatch: pytest.MonkeyPatch, message: bytes, pem: bytes,
                      algorithm: bytes = b"rsa-sha256") -> tuple[bytes, bytes]:
    """dkimpy's whole DKIM-Signature field for ``message``, with its own pure-Python RSA step and
    with OpenSSL's (t= frozen so that only the RSA step can differ)."""
    monkeypatch.setattr(dkimpy, "time", SimpleNamespace(time=lambda: 1764748800))
    out = []
    for rsa_step in (dkim_openssl.pure_python_sign, dkim_openssl.rsa_sign):
        monkeypatch.setattr(dkimpy, "RSASSA_PKCS1_v1_5_sign", rsa_step)
        out.append(bytes(dkimpy.sign(message, b"s1", b"acme.example", pem, canonicalize=(b"relaxed", b"relaxed"),
                                     signature_algorithm=algorithm, include_headers=[b"from", b"to", b"subject"])))
    return out[0], out[1]


@pytest.mark.parametrize(("bits", "pkcs8", "algorithm"), [
    (2048, False, b"rsa-sha256"), (1024, False, b"rsa-sha256"), (3072, True, b"rsa-sha256"),
    (2048, False, b"rsa-sha1"),
])
def test_openssl_rsa_step_gives_dkimpys_bytes(monkeypatch: pytest.MonkeyPatch, bits: int, pkcs8: bool,
                                             algorithm: bytes) -> None:
    pem = _rsa_pem(bits, pkcs8)
    bodies = [MSG, MSG.replace(b"hello", "Grüße aus Köln".encode() * 300),
              MSG.replace(b"Subject: hi", b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\tfolded")]
    for message in bodies:
        pure, openssl = _signed_both_ways(monkeypatch, message, pem, algorithm)
        assert pure == openssl and b"b=" in pure
        # and a verifier agrees (the record from the same key)
        public = serialization.load_pem_private_key(pem, None).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        dns = _dns({"s1._domainkey.acme.example": "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()})
        assert dkimpy.verify(openssl + message, dnsfunc=dns)


def test_relay_signs_with_openssl_and_gives_dkimpys_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    # relay.dkim installed the OpenSSL step on import; the field is what dkimpy alone would make
    assert dkimpy.RSASSA_PKCS1_v1_5_sign is dkim_openssl.rsa_sign
    private, _ = dkim.generate(DkimAlgorithm.RSA)
    monkeypatch.setattr(dkimpy, "time", SimpleNamespace(time=lambda: 1764748800))
    ours = dkim.sign(MSG, ["From", "To", "Subject"], "acme.example", "s1", DkimAlgorithm.RSA, private)
    monkeypatch.setattr(dkimpy, "RSASSA_PKCS1_v1_5_sign", dkim_openssl.pure_python_sign)
    monkeypatch.setattr(dkimpy, "parse_pem_private_key", dkimpy.crypto.parse_pem_private_key)
    assert dkim.sign(MSG, ["From", "To", "Subject"], "acme.example", "s1", DkimAlgorithm.RSA, private) == ours


def test_a_key_openssl_refuses_is_signed_by_dkimpy(monkeypatch: pytest.MonkeyPatch) -> None:
    pem = _rsa_pem(2048)
    pure, _ = _signed_both_ways(monkeypatch, MSG, pem)

    def refuse(*numbers: int) -> None:
        raise ValueError("not a key OpenSSL takes")

    monkeypatch.setattr(dkim_openssl, "_openssl_key", refuse)
    assert _signed_both_ways(monkeypatch, MSG, pem) == (pure, pure)
    with pytest.raises(dkim.DkimError):  # a broken key is still dkimpy's KeyFormatError
        dkim.sign(MSG, ["From"], "acme.example", "s1", DkimAlgorithm.RSA, "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n--")
