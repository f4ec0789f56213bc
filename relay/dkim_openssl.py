"""dkimpy's RSA step done by OpenSSL (through ``cryptography``); everything else stays dkimpy's.

dkimpy computes RSASSA-PKCS1-v1_5 with Python integers (two 1024-bit modular exponentiations per
RSA 2048 signature, 10-20 ms on the test VM); OpenSSL does the same in well under a millisecond.
The seam is the one function dkimpy's signer calls for that step: ``DomainSigner.gen_header``
calls the module global ``dkim.RSASSA_PKCS1_v1_5_sign(hash, private_key)`` with the finished
header hash (canonicalisation, header selection and the DKIM-Signature field are dkimpy's) and the
key as dkimpy parsed it. :func:`install` rebinds that global to :func:`rsa_sign`, which rebuilds
the key in OpenSSL from dkimpy's numbers (cached per key) and signs the prehashed digest.

PKCS#1 v1.5 is deterministic, so the bytes are the same as dkimpy's (``tests/unit/test_dkim.py``
checks it); anything OpenSSL will not take (a key too small for the digest, a hash other than
SHA-1/SHA-256) goes to dkimpy's own function, errors included. Verification is untouched.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import dkim
import dkim.crypto
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

#: dkimpy's own RSASSA-PKCS1-v1_5 signing function (pure Python), the fallback and the reference.
pure_python_sign = dkim.crypto.RSASSA_PKCS1_v1_5_sign

#: dkimpy signs rsa-sha256 and, when asked, the obsolete rsa-sha1; both are prehashed here.
_HASHES: dict[str, hashes.HashAlgorithm] = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}
_KEY_CACHE = 64  # distinct signing keys per process (one per domain and selector in use)


class _Digest(Protocol):
    name: str

    def digest(self) -> bytes: ...


@functools.lru_cache(maxsize=_KEY_CACHE)
def _openssl_key(n: int, e: int, d: int, p: int, q: int, dmp1: int, dmq1: int, iqmp: int) -> rsa.RSAPrivateKey:
    # Validated once per key and process (the check costs a few ms; the cache makes it once).
    return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, rsa.RSAPublicNumbers(e, n)).private_key()


def rsa_sign(hash: _Digest, private_key: dict[str, Any]) -> bytes:
    """Drop-in for ``dkim.crypto.RSASSA_PKCS1_v1_5_sign``: the same bytes, computed by OpenSSL."""
    algorithm = _HASHES.get(hash.name.lower())
    if algorithm is None:
        return bytes(pure_python_sign(hash, private_key))
    try:
        key = _openssl_key(private_key["modulus"], private_key["publicExponent"],
                           private_key["privateExponent"], private_key["prime1"], private_key["prime2"],
                           private_key["exponent1"], private_key["exponent2"], private_key["coefficient"])
        return key.sign(hash.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))
    except (ValueError, UnsupportedAlgorithm):
        # A key OpenSSL refuses (e.g. too small for the digest): dkimpy's answer, or its error.
        return bytes(pure_python_sign(hash, private_key))


#: dkimpy parses the PEM with its pure-Python ASN.1 reader on every signature (~0.2 ms, a fifth of
#: what is left); the parsed numbers of a key never change, so they are kept (nobody mutates them).
parse_pem_private_key = functools.lru_cache(maxsize=_KEY_CACHE)(dkim.crypto.parse_pem_private_key)


def install() -> None:
    """Make dkimpy's signer use :func:`rsa_sign` and the cached key parser (idempotent; affects
    this process only: every signing worker process imports this module)."""
    dkim.RSASSA_PKCS1_v1_5_sign = rsa_sign
    dkim.parse_pem_private_key = parse_pem_private_key
