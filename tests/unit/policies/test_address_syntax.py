"""parse_address: RFC 5321 §4.1.2 grammar, §4.5.3.1 size limits, RFC 6531 SMTPUTF8.

Each row: (rfc citation, raw path, smtputf8, expected). ``expected`` is the parsed ``.address`` for
a valid path, or ``FormatError(detail)`` for an invalid one; both are compared exactly.
"""

from __future__ import annotations

import pytest

from policies.address import Address, FormatError, parse_address

L63 = "a" * 63
# Domains of an exact octet length, every label within 63 octets.
D189 = f"{L63}.{'b' * 63}.{'c' * 61}"
D190 = f"{L63}.{'b' * 63}.{'c' * 62}"
D255 = f"{L63}.{L63}.{L63}.{L63}"
D256 = f"{L63}.{L63}.{L63}.{'a' * 62}.a"
assert (len(D189), len(D190), len(D255), len(D256)) == (189, 190, 255, 256)


def _han(n: int) -> str:
    """n scattered CJK ideographs: their A-label grows faster than their UTF-8 form."""
    return "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(n))


# 18 ideographs: A-label 62 octets (fits); 19: A-label 65 octets although only 57 octets of UTF-8.
assert (len("xn--" + _han(18).encode("punycode").decode()), len(_han(19).encode())) == (62, 57)

E = FormatError

VALID: list[tuple[str, str, bool, str]] = [
    ("5321 §4.1.2 Dot-string", "user@example.com", False, "user@example.com"),
    ("5321 §4.1.2 Dot-string", "first.last@example.com", False, "first.last@example.com"),
    ("5322 §3.2.3 atext", "!#$%&'*+-/=?^_`{|}~@example.com", False, "!#$%&'*+-/=?^_`{|}~@example.com"),
    ("5321 §4.1.2 Path strips <>", "<user@example.com>", False, "user@example.com"),
    ("5321 §2.4 domain is case-insensitive", "User@EXAMPLE.Com", False, "User@example.com"),
    ("5321 §4.1.2 single-label domain", "postmaster@localhost", False, "postmaster@localhost"),
    ("5321 §4.1.2 Let-dig digits", "u@3com.com", False, "u@3com.com"),
    ("5321 §4.1.2 Ldh-str inner hyphen", "u@my-host.example", False, "u@my-host.example"),
    ("5321 §4.1.2 Quoted-string", '"john doe"@example.com', False, '"john doe"@example.com'),
    ("5321 §4.1.2 quoted-pairSMTP", '"a\\"b"@example.com', False, '"a\\"b"@example.com'),
    ("5321 §4.1.2 quoted @", '"a@b"@example.com', False, '"a@b"@example.com'),
    ("5321 §4.1.3 IPv4 literal", "u@[192.0.2.1]", False, "u@[192.0.2.1]"),
    ("5321 §4.1.3 Snum 1*3DIGIT", "u@[192.0.2.001]", False, "u@[192.0.2.1]"),
    ("5321 §4.1.3 IPv6 literal", "u@[IPv6:2001:DB8::1]", False, "u@[ipv6:2001:db8::1]"),
    ("5321 §4.1.3 IPv6-full", "u@[IPv6:2001:db8:0:0:0:0:0:1]", False, "u@[ipv6:2001:db8::1]"),
    ("5321 §4.1.1.3 source route ignored", "<@a.example,@b.example:u@c.example>", False, "u@c.example"),
    ("5321 App. C route via literal", "@[IPv6:::1]:u@c.example", False, "u@c.example"),
    ("5890 A-label", "u@xn--bcher-kva.example", False, "u@xn--bcher-kva.example"),
    ("6531 §3.3 UTF-8 local part", "用户@example.com", True, "用户@example.com"),
    ("6531 §3.3 U-label domain", "用户@例子.广告", True, "用户@例子.广告"),
    ("6531 §3.3 U-label lower-cased", "u@BÜCHER.example", True, "u@bücher.example"),
    ("6531 §3.3 UTF-8 in quoted string", '"ü ü"@example.com', True, '"ü ü"@example.com'),
    # §4.5.3.1 boundaries, in octets
    ("5321 §4.5.3.1.1 local = 64", f"{'a' * 64}@example.com", False, f"{'a' * 64}@example.com"),
    ("5321 §4.5.3.1.1 local = 64 UTF-8", f"{'é' * 32}@example.com", True, f"{'é' * 32}@example.com"),
    ("1035 §2.3.4 label = 63", f"u@{L63}.example", False, f"u@{L63}.example"),
    ("5890 §2.3.2.1 A-label of U-label = 62", f"u@{_han(18)}.example", True, f"u@{_han(18)}.example"),
    ("5321 §4.5.3.1.3 path = 256", f"{'a' * 64}@{D189}", False, f"{'a' * 64}@{D189}"),
]

INVALID: list[tuple[str, str, bool, FormatError]] = [
    ("5321 §4.1.2 Mailbox needs @", "user.example.com", False, E("missing '@'")),
    ("5321 §4.1.2 Local-part non-empty", "@example.com", False, E("empty local part")),
    ("5321 §4.1.2 empty quoted (policy)", '""@example.com', False, E("empty local part")),
    ("5321 §4.1.2 Domain non-empty", "user@", False, E("empty domain")),
    ("5321 §4.1.2 null path is not a recipient", "<>", False, E("empty address")),
    ("5321 §4.1.2 Path brackets", "<user@example.com", False, E("unbalanced angle brackets")),
    ("5321 §4.1.2 Dot-string", ".user@example.com", False, E("leading dot in local part")),
    ("5321 §4.1.2 Dot-string", "user.@example.com", False, E("trailing dot in local part")),
    ("5321 §4.1.2 Dot-string", "us..er@example.com", False, E("consecutive dots in local part")),
    ("5321 §4.1.2 Domain", "user@.example.com", False, E("leading dot in domain")),
    ("5321 §4.1.2 Domain (no root dot)", "user@example.com.", False, E("trailing dot in domain")),
    ("5321 §4.1.2 Domain", "user@example..com", False, E("consecutive dots in domain")),
    ("5321 §4.1.2 Atom", "us er@example.com", False, E("space in local part")),
    ("5321 §4.1.2 Atom", "user@exa mple.com", False, E("space in domain")),
    ("5321 §4.1.2 Atom", "us,er@example.com", False, E("invalid character ',' in local part")),
    ("5321 §4.1.2 Atom", "a@b@example.com", False, E("invalid character '@' in local part")),
    ("5321 §4.1.2 Atom", 'us"er@example.com', False, E("misplaced quote in local part")),
    ("5321 §4.1.2 Quoted-string", '"user@example.com', False, E("unterminated quoted string")),
    ("5321 §4.1.2 Quoted-string", '"us"er@example.com', False, E("text after quoted local part")),
    ("5321 §4.1.2 Quoted-string then @", '"user"', False, E("missing '@'")),
    ("5321 §4.1.2 Let-dig", "user@-example.com", False, E("domain label starts or ends with a hyphen")),
    ("5321 §4.1.2 Let-dig", "user@example-.com", False, E("domain label starts or ends with a hyphen")),
    ("5321 §4.1.2 Ldh-str", "user@exa_mple.com", False, E("invalid character '_' in domain")),
    ("5890 §2.3.2.1 A-label", "user@xn--0.example", False, E("invalid A-label in domain")),
    ("5321 §4.1.3 IPv4 range", "u@[256.0.0.1]", False, E("invalid IPv4 address literal")),
    ("5321 §4.1.3 IPv4 form", "u@[192.0.2]", False, E("invalid address literal")),
    ("5321 §4.1.3 IPv6 form", "u@[IPv6:2001:db8::g]", False, E("invalid IPv6 address literal")),
    ("5321 §4.1.3 no zone id", "u@[IPv6:fe80::1%eth0]", False, E("invalid IPv6 address literal")),
    ("5321 §4.1.3 tag required for v6", "u@[2001:db8::1]", False, E("invalid address literal")),
    ("5321 §4.1.3 literal brackets", "u@[192.0.2.1", False, E("invalid address literal")),
    ("5321 §4.1.1.3 A-d-l", "@a.example,b.example:u@c.example", False, E("invalid source route")),
    (
        "5321 §4.1.1.3 A-d-l",
        "@a_b.example:u@c.example",
        False,
        E("invalid source route: invalid character '_' in domain"),
    ),
    ("5321 §4.1.2 qtextSMTP excludes NUL", '"a\x00b"@example.com', False, E("contains NUL")),
    ("5321 §2.3.8 CRLF only ends lines", "user\r\n@example.com", False, E("contains CR or LF")),
    ("5321 §2.3.8 bare LF", "user@exa\nmple.com", False, E("contains CR or LF")),
    ("5321 §4.1.2 qtextSMTP excludes TAB", '"a\tb"@example.com', False, E("contains a control character")),
    ("6531 §3.2 8-bit needs SMTPUTF8", "用户@example.com", False, E("non-ASCII characters require SMTPUTF8")),
    ("6531 §3.2 8-bit needs SMTPUTF8", "u@bücher.example", False, E("non-ASCII characters require SMTPUTF8")),
    ("6531 §3.2 8-bit needs SMTPUTF8", '"ü"@example.com', False, E("non-ASCII characters require SMTPUTF8")),
    ("3629 no lone surrogates", "u\udcff@example.com", True, E("invalid UTF-8")),
    ("6531 ideographic space", "us\u3000er@example.com", True, E("space in local part")),
    ("5891 §5.3 U-label NFC", "u@e\u0301.example", True, E("domain label is not in NFC form")),
    ("5891 §5.4 no leading mark", "u@\u0301e.example", True, E("domain label starts with a combining mark")),
    ("5891 §5.4 U-label symbols", "u@a\u2603.example", True, E("invalid character '☃' in domain")),
    # §4.5.3.1 boundaries, in octets
    ("5321 §4.5.3.1.1 local = 65", f"{'a' * 65}@example.com", False, E("local part longer than 64 octets")),
    (
        "5321 §4.5.3.1.1 local = 65 UTF-8",
        f"{'é' * 32}a@example.com",
        True,
        E("local part longer than 64 octets"),
    ),
    (
        "5321 §4.5.3.1.1 quotes count",
        f'"{"a" * 63}"@example.com',
        False,
        E("local part longer than 64 octets"),
    ),
    ("1035 §2.3.4 label = 64", f"u@{'a' * 64}.example", False, E("domain label longer than 63 octets")),
    (
        "5890 §2.3.2.1 A-label of U-label = 65",
        f"u@{_han(19)}.example",
        True,
        E("domain label longer than 63 octets"),
    ),
    ("5321 §4.5.3.1.2 domain = 256", f"u@{D256}", False, E("domain longer than 255 octets")),
    ("5321 §4.5.3.1.3 domain = 255 fits no path", f"u@{D255}", False, E("path longer than 256 octets")),
    ("5321 §4.5.3.1.3 path = 257", f"{'a' * 64}@{D190}", False, E("path longer than 256 octets")),
]


@pytest.mark.parametrize(("rfc", "raw", "smtputf8", "expected"), VALID, ids=[row[0] for row in VALID])
def test_valid(rfc: str, raw: str, smtputf8: bool, expected: str) -> None:
    parsed = parse_address(raw, smtputf8)
    assert isinstance(parsed, Address), parsed
    assert parsed.address == expected


@pytest.mark.parametrize(("rfc", "raw", "smtputf8", "expected"), INVALID, ids=[row[0] for row in INVALID])
def test_invalid(rfc: str, raw: str, smtputf8: bool, expected: FormatError) -> None:
    assert parse_address(raw, smtputf8) == expected


@pytest.mark.parametrize(
    ("raw", "smtputf8", "key"),
    [
        ("User.Name@Example.COM", False, "user.name@example.com"),
        ('"John"@example.com', False, "john@example.com"),  # needless quotes do not split the list
        ('"J\\ohn"@example.com', False, "john@example.com"),
        ('"John Doe"@example.com', False, '"john doe"@example.com'),
        ('"a\\"b"@example.com', False, '"a\\"b"@example.com'),
        ('"a..b"@example.com', False, '"a..b"@example.com'),
        ("ÜSER@BÜCHER.example", True, "üser@bücher.example"),
    ],
)
def test_lookup_key_is_canonical_and_lower_case(raw: str, smtputf8: bool, key: str) -> None:
    parsed = parse_address(raw, smtputf8)
    assert isinstance(parsed, Address), parsed
    assert parsed.key == key


def test_local_part_is_kept_as_given_and_domain_lowered() -> None:
    parsed = parse_address("Mixed.Case@Example.COM", False)
    assert parsed == Address("Mixed.Case", "example.com")
    assert Address("X", "EXAMPLE.org").domain == "example.org"


def test_parser_never_raises_on_garbage() -> None:
    for raw in ["", "<", ">", "@", "@:", "@[:", '"', '"\\', "[", "a@[", "a@]", "a@[]", "@@", "<<>>", ":@"]:
        for smtputf8 in (False, True):
            assert isinstance(parse_address(raw, smtputf8), (Address, FormatError))
