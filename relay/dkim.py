"""DKIM (RFC 6376) keys and signatures, through dkimpy: no crypto or canonicalisation of our own.

- :func:`generate` makes a key pair with ``cryptography`` (RSA 2048, or ed25519 per RFC 8463) in the
  forms dkimpy and DNS want: the private key as PKCS#1 PEM (RSA) or the base64 32-byte seed
  (ed25519, as dkimpy's ``dknewkey`` writes it), the public key as the base64 ``p=`` value.
- :func:`dns_record` is the TXT record to publish, as one line.
- :func:`sign` returns the ``DKIM-Signature`` header field for a message: relaxed/relaxed, the
  headers of :data:`SIGNED_HEADERS` that are present (each instance), and From and Subject listed
  once more than present (over-signing: nobody can add another one without breaking the signature).

dkimpy does the canonicalisation, the header hash and the field; its RSA step (pure Python, 10-20 ms
per RSA 2048 signature) is done by OpenSSL instead (``relay/dkim_openssl.py``, installed on import:
the same bytes). Everything here is synchronous and CPU-bound: callers run :func:`sign` off the
event loop (``relay/delivery/outgoing.py``).
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from datetime import datetime

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relay import dkim_openssl
from storage.records import DkimAlgorithm

dkim_openssl.install()

RSA_BITS = 2048

#: Header fields signed when present (RFC 6376 §5.4.1's list, plus RFC 8058's List-Unsubscribe-Post
#: and Gmail's Feedback-ID). Lower case.
SIGNED_HEADERS = (
    "from", "to", "cc", "subject", "date", "message-id", "reply-to", "sender", "in-reply-to", "references",
    "mime-version", "content-type", "content-transfer-encoding", "list-id", "list-unsubscribe",
    "list-unsubscribe-post", "feedback-id",
)
#: Listed once more than they occur, so a second one added in transit breaks the signature.
OVERSIGNED = ("from", "subject")

_SIG_ALGORITHM = {DkimAlgorithm.RSA: b"rsa-sha256", DkimAlgorithm.ED25519: b"ed25519-sha256"}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9](?:[a-z0-9_-]{0,62}))*$")


class DkimError(ValueError):
    """A domain, selector or key that cannot be used."""


class DkimMessageError(DkimError):
    """dkimpy cannot sign this message (e.g. a header block it cannot parse); the key is fine."""


def normalize_domain(text: str) -> str:
    """A signing domain as DNS names it: lower case, A-labels (IDN converted), no trailing dot."""
    name = text.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise DkimError(f"not a domain name: {text!r}") from None
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise DkimError(f"not a domain name: {text!r} (want e.g. example.com)")
    return name


def check_selector(text: str) -> str:
    sel = text.strip().lower()
    if len(sel) > 63 or not _SELECTOR.match(sel):
        raise DkimError(f"not a DKIM selector: {text!r} (letters, digits, '-', '_', dots between parts)")
    return sel


def default_selector(now: datetime) -> str:
    """``mr`` + year and month (``mr202612``): a new selector per rotation month, and readable age."""
    return f"mr{now:%Y%m}"


def generate(algorithm: DkimAlgorithm) -> tuple[str, str]:
    """A new key pair: (private key as dkimpy reads it, base64 public key for ``p=``)."""
    if algorithm is DkimAlgorithm.ED25519:
        ek = ed25519.Ed25519PrivateKey.generate()
        seed = ek.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        pub = ek.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(seed).decode("ascii"), base64.b64encode(pub).decode("ascii")
    rk = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    pem = rk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                           serialization.NoEncryption())
    der = rk.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii"), base64.b64encode(der).decode("ascii")


def dns_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def txt_value(algorithm: DkimAlgorithm, public_key: str) -> str:
    return f"v=DKIM1; k={algorithm.value}; p={public_key}"


def dns_record(selector: str, domain: str, algorithm: DkimAlgorithm, public_key: str) -> str:
    """The record as a zone-file line, the TXT data as ONE string (split it into strings of at most
    255 characters where the DNS software requires; verifiers join them)."""
    return f'{dns_name(selector, domain)}. IN TXT "{txt_value(algorithm, public_key)}"'


def header_list(names: list[str]) -> list[bytes]:
    """The ``h=`` list for a header block whose field names (any case, in order) are ``names``."""
    present = Counter(n.lower() for n in names)
    out: list[bytes] = []
    for name in SIGNED_HEADERS:
        n = present[name] + (1 if name in OVERSIGNED else 0)
        out.extend([name.encode("ascii")] * n)
    return out


def sign(content: bytes, header_names: list[str], domain: str, selector: str, algorithm: DkimAlgorithm,
         private_key: str) -> bytes:
    """The ``DKIM-Signature: ...`` field (folded, ending in CRLF) for ``content`` (CRLF line ends,
    exactly the bytes that will be sent after it). Raises :class:`DkimError` for a broken key,
    :class:`DkimMessageError` for a message dkimpy cannot parse."""
    try:
        return bytes(dkim.sign(
            content, selector.encode("ascii"), domain.encode("ascii"), private_key.encode("ascii"),
            canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=_SIG_ALGORITHM[algorithm],
            include_headers=header_list(header_names), linesep=b"\r\n",
        ))
    except (dkim.KeyFormatError, dkim.NaClNotFoundError) as e:
        raise DkimError(f"cannot sign with {selector}._domainkey.{domain}: {e}") from e
    except dkim.DKIMException as e:
        raise DkimMessageError(f"cannot sign this message: {e}") from e
