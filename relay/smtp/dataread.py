"""DATA stream decoder: dot-unstuffing, end-of-data detection and bare CR/LF checks, chunk by chunk.

The decoder is fed the raw bytes that follow ``DATA\\r\\n`` in arbitrary chunks and yields the
message content exactly as RFC 5321 §4.5.2 defines it. It never holds more than two bytes across
calls, so a message of any size flows through in constant memory.

Rules (deliberately strict, to close the SMTP-smuggling family of attacks):

- A line starts only after a real CRLF (or at the very start of the data). ``"\\r\\n.\\r\\n"`` (or
  ``".\\r\\n"`` at the very start) is the ONLY end-of-data marker; ``\\n.\\n``, ``\\r.\\r``,
  ``\\n.\\r\\n``, ``\\r\\n.\\n``, ``\\r\\n.\\r`` and friends are content.
- A line that starts with ``"."`` loses that first dot (transparency); the rest of the line is
  content, so ``"..\\r\\n"`` yields ``".\\r\\n"``.
- A CR not followed by LF, or an LF not preceded by CR, is "bare". :attr:`DataDecoder.bare` is set
  when one is seen. With ``normalize=True`` each bare CR or LF is rewritten to CRLF in the output
  (after unstuffing, so normalisation can never create an end-of-data marker); otherwise the output
  is the raw content and the caller is expected to reject the message.

Speed: the work per chunk is three ``bytes.count`` passes (bare check) plus one ``bytes.find`` for
each line that starts with a dot. There is no Python-level loop per line or per byte.
"""

from __future__ import annotations

_CR = 0x0D
_DOT = 0x2E
_CRLF_DOT = b"\r\n."
_DOT_CRLF = b".\r\n"


class DataDecoder:
    """Incremental DATA decoder. Feed it chunks with :meth:`feed` until it returns a remainder."""

    __slots__ = ("_line_start", "_tail", "bare", "done", "normalize", "size")

    def __init__(self, normalize: bool = False) -> None:
        self.normalize = normalize
        self.bare = False        # a bare CR or bare LF was seen (before the end marker)
        self.done = False        # the end-of-data marker was seen
        self.size = 0            # bytes of content produced so far (after unstuffing/normalising)
        self._line_start = True  # the first byte of the next input sits at the start of a line
        self._tail = b""         # undecidable bytes held back from the previous chunk (<= 2)

    def feed(self, chunk: bytes) -> tuple[list[bytes], bytes | None]:
        """Decode the next chunk of raw DATA bytes.

        Returns ``(pieces, rest)``: ``pieces`` is content to append, in order; ``rest`` is None
        while the end marker has not been seen, else the bytes that followed it (the next
        pipelined commands, possibly ``b""``). Feeding after the end is an error.
        """
        if self.done:
            raise RuntimeError("DataDecoder.feed() after end of data")
        buf = self._tail + chunk if self._tail else chunk
        self._tail = b""
        n = len(buf)
        if n == 0:
            return [], None
        out: list[bytes] = []
        pos = 0        # start of the next piece of content
        end = n        # end of the decidable region (content scanned for bare CR/LF)
        rest: bytes | None = None

        if self._line_start and buf[0] == _DOT:
            if n < 3 and (n == 1 or buf[1] == _CR):
                # "." or ".\r" at a line start: could become the end marker; wait for more.
                self._tail = buf
                return [], None
            if buf.startswith(_DOT_CRLF):
                self.done = True
                return [], buf[3:]
            pos = 1  # stuffed dot at the first line of this chunk

        j = buf.find(_CRLF_DOT, pos)
        while j >= 0:
            dot = j + 2
            if buf.startswith(_DOT_CRLF, dot):
                out.append(buf[pos:dot])
                end = dot
                rest = buf[dot + 3:]
                self.done = True
                break
            if dot + 1 >= n or (dot + 2 >= n and buf[dot + 1] == _CR):
                # "\r\n." or "\r\n.\r" at the very end: hold back from the dot.
                out.append(buf[pos:dot])
                end = dot
                self._tail = buf[dot:]
                self._line_start = True
                break
            out.append(buf[pos:dot])  # the line starts with a stuffed dot: drop it
            pos = dot + 1
            j = buf.find(_CRLF_DOT, pos)
        else:
            if buf[n - 1] == _CR:
                # A trailing CR: whether it is bare depends on the next byte.
                end = n - 1
                self._tail = buf[end:]
                self._line_start = False  # irrelevant: the next input starts with this CR
            else:
                self._line_start = n >= 2 and buf[n - 2] == _CR and buf[n - 1] == 0x0A
            out.append(buf[pos:end])

        # Bare CR/LF check over the decidable region. No CRLF pair straddles the region's edges
        # (a trailing CR is always held back), and removing stuffed dots cannot change which
        # CRs/LFs are paired, so checking the raw region is exact.
        cr = buf.count(b"\r", 0, end)
        if cr != buf.count(b"\n", 0, end) or cr != buf.count(b"\r\n", 0, end):
            self.bare = True
            if self.normalize:
                out = [_normalize(p) for p in out]
        out = [p for p in out if p]
        for p in out:
            self.size += len(p)
        return out, rest


def _normalize(piece: bytes) -> bytes:
    """Rewrite every bare CR and bare LF in ``piece`` to CRLF."""
    return piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def decode_all(data: bytes, normalize: bool = False) -> tuple[bytes, bytes | None, bool]:
    """Decode a complete DATA stream in one go (tests and tools): ``(content, rest, bare)``."""
    dec = DataDecoder(normalize)
    pieces, rest = dec.feed(data)
    return b"".join(pieces), rest, dec.bare
