"""DataDecoder: exact bytes for every split of tricky inputs, against a slow reference decoder."""

from __future__ import annotations

import itertools
import random

import pytest

from relay.smtp.dataread import DataDecoder, decode_all


def reference(data: bytes, normalize: bool) -> tuple[bytes, bytes | None, bool]:
    """Byte-at-a-time RFC 5321 §4.5.2 decoder with our strict rules (the spec of DataDecoder)."""
    out = bytearray()
    bare = False
    i, n = 0, len(data)
    line_start = True
    while i < n:
        if line_start and data.startswith(b".\r\n", i):
            return bytes(out), data[i + 3:], bare
        if line_start and data[i] == 0x2E:
            i += 1
            line_start = False
            continue
        line_start = False
        c = data[i]
        if c == 0x0D:
            if i + 1 < n and data[i + 1] == 0x0A:
                out += b"\r\n"
                i += 2
                line_start = True
                continue
            bare = True
            out += b"\r\n" if normalize else b"\r"
        elif c == 0x0A:
            bare = True
            out += b"\r\n" if normalize else b"\n"
        else:
            out.append(c)
        i += 1
    return bytes(out), None, bare


def run(chunks: list[bytes], normalize: bool) -> tuple[bytes, bytes | None, bool]:
    dec = DataDecoder(normalize)
    out: list[bytes] = []
    rest: bytes | None = None
    for k, c in enumerate(chunks):
        pieces, rest = dec.feed(c)
        out += pieces
        if rest is not None:
            rest += b"".join(chunks[k + 1:])  # what the engine keeps as the next commands
            break
    content = b"".join(out)
    assert dec.size == len(content)
    return content, rest, dec.bare


TRICKY = [
    b".\r\n",
    b".\r\nNEXT\r\n",
    b"..\r\n.\r\n",
    b"...\r\n.\r\n",
    b".a\r\n..b\r\n\r\n.\r\n",
    b"a\r\n.\r\n",
    b"a\r\n..\r\n.\r\nQUIT\r\n",
    b"line\r\n.x\r\n.\r\nMAIL FROM:<a@b>\r\n",
    b"smuggle\n.\nMAIL FROM:<x@y>\r\n\r\n.\r\n",
    b"smuggle\r.\rMAIL\r\n.\r\n",
    b"smuggle\n.\r\nMAIL\r\n.\r\n",
    b"smuggle\r\n.\nMAIL\r\n.\r\n",
    b"smuggle\r\n.\rMAIL\r\n.\r\n",
    b"smuggle\r\n.\r\r\nMAIL\r\n.\r\n",
    b"smuggle\r.\r\nMAIL\r\n.\r\n",
    b"a\r\r\nb\n\r\n.\r\n",
    b"\r\r\n.\r\n",
    b"\n.\r\n\r\n.\r\n",
    b"x\r\n.\r.\r\n\r\n.\r\nrest",
    b"\r\n\r\n.\r\n",
    b"end-with-cr\r",
    b"no end\r\n..",
    b"a\r\n.",
]


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("data", TRICKY)
def test_every_split_point_matches_reference(data: bytes, normalize: bool) -> None:
    want = reference(data, normalize)
    if want[1] is None:  # no end marker: compare only what a complete stream would give
        want = reference(data + b"\r\n.\r\n", normalize)
        data = data + b"\r\n.\r\n"
    n = len(data)
    assert run([data], normalize) == want
    for i in range(n + 1):
        assert run([data[:i], data[i:]], normalize) == want, i
    for i, j in itertools.combinations(range(n + 1), 2):
        assert run([data[:i], data[i:j], data[j:]], normalize) == want, (i, j)
    assert run([bytes([b]) for b in data], normalize) == want


def test_fuzz_against_reference() -> None:
    rng = random.Random(1234)
    alphabet = b"a..\r\n\r\n"
    for _ in range(3000):
        body = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) + b"\r\n.\r\nTAIL"
        normalize = rng.random() < 0.5
        cuts = sorted(rng.sample(range(len(body) + 1), k=min(len(body), rng.randint(0, 6))))
        chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        assert run(chunks, normalize) == reference(body, normalize), (body, cuts)


def test_exact_unstuffing() -> None:
    content, rest, bare = decode_all(b"..leading\r\n...\r\n.y\r\nplain\r\n\r\n.\r\nNOOP\r\n")
    assert content == b".leading\r\n..\r\ny\r\nplain\r\n\r\n"
    assert rest == b"NOOP\r\n"
    assert not bare


@pytest.mark.parametrize("variant", [
    b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n", b"\n.\r", b"\r\n.\r\r\n",
])
def test_smuggling_variants_do_not_end_data(variant: bytes) -> None:
    dec = DataDecoder()
    _pieces, rest = dec.feed(b"Subject: x\r\n\r\nhello" + variant + b"MAIL FROM:<evil@x>\r\n")
    assert rest is None
    assert dec.bare
    _pieces, rest = dec.feed(b"\r\n.\r\n")
    assert rest == b""


def test_normalize_converts_bare_line_ends() -> None:
    content, rest, bare = decode_all(b"a\nb\rc\r\n.\r\n", normalize=True)
    assert (content, rest, bare) == (b"a\r\nb\r\nc\r\n", b"", True)
    # a bare-LF "terminator" is content even when normalising (never an end marker)
    content, rest, bare = decode_all(b"a\n.\nb\r\n.\r\n", normalize=True)
    assert content == b"a\r\n.\r\nb\r\n"


def test_empty_message_and_feed_after_end() -> None:
    dec = DataDecoder()
    assert dec.feed(b".\r\nQUIT\r\n") == ([], b"QUIT\r\n")
    with pytest.raises(RuntimeError):
        dec.feed(b"x")


def test_large_input_constant_tail() -> None:
    dec = DataDecoder()
    line = b"x" * 998 + b"\r\n"
    total = 0
    for _ in range(200):
        pieces, rest = dec.feed(line * 60 + b"\r")  # trailing CR held back, never more than 2 bytes
        assert rest is None
        assert len(dec._tail) <= 2
        total += sum(map(len, pieces))
        pieces, rest = dec.feed(b"\n")
        total += sum(map(len, pieces))
    assert total == dec.size == 200 * (60 * 1000 + 2)
    assert not dec.bare
