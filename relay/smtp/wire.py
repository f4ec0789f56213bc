"""SmtpWire: the transport plumbing under :class:`relay.smtp.engine.HardenedSMTP`.

aiosmtpd's ``SMTP`` is an ``asyncio.StreamReaderProtocol`` whose StreamReader has a 1001-byte limit
(the transport is paused/resumed constantly on bulk input, long lines raise LimitOverrunError) and
which ``await drain()``s after every reply. This layer replaces that I/O model while keeping the
class hierarchy (``SmtpWire`` subclasses ``aiosmtpd.smtp.SMTP``):

- ``data_received`` appends to one ``bytearray``; reading is paused only above 256 KiB buffered and
  resumed when the consumer has taken it below 64 KiB.
- Lines are framed on LF by :meth:`_read_line` with our own length limit; an over-long line is
  dropped as it arrives (``data_received`` discards until the next LF), so a 1 MB line without LF
  costs at most the limit plus one socket read of memory.
- Replies are queued by :meth:`_reply` and written in one ``transport.write`` by :meth:`_flush`,
  which runs before every wait for input. That is exactly RFC 2920 PIPELINING: all replies to a
  pipelined group leave in one segment. We wait for the peer to read only when the transport's
  write buffer is over its high-water mark.
- Waits carry a deadline (a timer handle on the waiter, no ``wait_for`` task) and can be woken by a
  shutdown request while the session is idle.
- STARTTLS uses ``loop.start_tls`` (works with uvloop too); the plaintext input buffered after the
  STARTTLS line is discarded first (CVE-2011-0411 style command injection).

``SMTP.__init__`` is deliberately NOT called: it builds a StreamReader we do not use and introspects
the handler and ``self`` with ``inspect.getmembers`` on every connection (costly at high accept
rates). Everything we inherit and use (``_getaddr``, ``_strip_command_keyword``, class constants)
needs no instance state set by it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiosmtpd.smtp import SMTP

log = logging.getLogger("relay.smtp.wire")

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
AUTH_LINE_LIMIT = 12288  # RFC 4954 §4: AUTH lines and SASL responses may be this long

_W_DATA, _W_EOF, _W_TIMEOUT, _W_STOP = range(4)


class SessionEnd(Exception):
    """Base of the control-flow exceptions that end a session (never reach the handler)."""


class Disconnected(SessionEnd):
    """The peer went away (EOF, reset, TLS failure); nothing more can be written."""


class IdleTimeout(SessionEnd):
    """A read deadline passed."""


class StopRequested(SessionEnd):
    """The listener is shutting down and the session is between commands."""


class SmtpWire(SMTP):
    """Buffered, deadline-aware transport I/O for one SMTP connection (see module docstring)."""

    def __init__(self, *, write_timeout: float) -> None:
        # SMTP.__init__ is skipped on purpose (see the module docstring).
        self.loop = asyncio.get_running_loop()
        self._write_timeout = write_timeout
        self._tr: asyncio.Transport | None = None
        self._raw_tr: asyncio.Transport | None = None  # the TCP transport under STARTTLS
        self._inbuf = bytearray()
        self._out: list[bytes] = []
        self._waiter: asyncio.Future[int] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._discarding = False  # dropping the rest of an over-long line
        self._read_paused = False
        self._write_paused = False
        self._tls = False  # the transport is TLS (implicit or after STARTTLS)
        self._eof = False
        self._lost = False
        self._shut = False  # we closed (or aborted) the transport
        self._stopping = False
        self._idle = False  # waiting for a command (may be interrupted by a shutdown request)

    # region asyncio.Protocol callbacks
    def data_received(self, data: bytes) -> None:
        if self._shut:
            return
        if self._discarding:
            i = data.find(b"\n")
            if i < 0:
                return
            data = data[i:]  # keep the LF: _read_line ends the discarded line there
        buf = self._inbuf
        buf += data
        if len(buf) > HIGH_WATER and not self._read_paused and self._tr is not None:
            self._read_paused = True
            self._tr.pause_reading()
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(_W_DATA)

    def eof_received(self) -> bool:
        self._eof = True
        self._wake(_W_EOF)
        # Plain TCP: stay half-open so the replies to already-received commands can still be
        # sent; the session closes once it has consumed the input. (True is an error under TLS.)
        return not self._tls

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._eof = True
        self._wake(_W_EOF)
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    # endregion

    def _wake(self, reason: int) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(reason)

    def request_shutdown(self) -> None:
        """Ask the session to end at the next command boundary (421 4.3.2)."""
        self._stopping = True
        if self._idle:
            self._wake(_W_STOP)

    def abort_connection(self) -> None:
        """Drop the connection now (listener stop after its grace period)."""
        self._shut = True
        for tr in (self._tr, self._raw_tr):
            if tr is not None:
                tr.abort()
        self._eof = True
        self._wake(_W_EOF)

    # region output
    def _reply(self, text: str) -> None:
        self._out.append(text.encode("utf-8", "replace") + b"\r\n")

    async def push(self, status: str | bytes) -> None:
        """aiosmtpd's API: queue a reply (written at the next flush, see module docstring)."""
        self._out.append((status.encode("utf-8", "replace") if isinstance(status, str) else status) + b"\r\n")

    async def _flush(self) -> None:
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self._lost or self._shut or self._tr is None:
            return
        self._tr.write(data)
        if self._write_paused:
            # The peer does not read its replies; give it write_timeout, then drop it.
            w = self.loop.create_future()
            self._drain_waiter = w
            try:
                await asyncio.wait_for(w, self._write_timeout)
            except TimeoutError:
                self.abort_connection()
                raise Disconnected from None
            finally:
                self._drain_waiter = None
            if self._lost:
                raise Disconnected

    def _close_transport(self) -> None:
        """Write what is queued, then close (TLS: with close_notify). Idempotent."""
        if self._shut:
            return
        self._shut = True
        tr = self._tr
        if tr is None:
            return
        if self._out and not self._lost:
            tr.write(b"".join(self._out))
        self._out.clear()
        tr.close()

    # endregion

    # region input
    async def _wait_input(self, deadline: float, interruptible: bool) -> None:
        """Flush replies, then wait for more input, EOF, the deadline or (if ``interruptible``) a
        shutdown request. Returns on new data or EOF; raises on timeout/stop/when already at EOF."""
        if self._out:
            await self._flush()
        if self._eof:
            raise Disconnected
        if interruptible and self._stopping:
            raise StopRequested
        if self._read_paused and self._tr is not None:
            self._read_paused = False
            self._tr.resume_reading()
        w: asyncio.Future[int] = self.loop.create_future()
        self._waiter = w
        self._idle = interruptible
        timer = self.loop.call_at(deadline, self._wake, _W_TIMEOUT)
        try:
            reason = await w
        finally:
            timer.cancel()
            self._waiter = None
            self._idle = False
        if reason == _W_TIMEOUT:
            raise IdleTimeout
        if reason == _W_STOP:
            raise StopRequested

    async def _read_line(self, limit: int, deadline: float) -> bytes | None:
        """The next line up to and including its LF, or None if it was longer than ``limit`` octets
        (it has then been consumed and dropped). Lines starting with ``AUTH `` may be up to
        AUTH_LINE_LIMIT long."""
        while True:
            buf = self._inbuf
            i = buf.find(b"\n")
            if i >= 0:
                if self._discarding:
                    self._discarding = False
                    del buf[: i + 1]
                    return None
                if i >= limit and i >= self._limit_for(buf, limit):
                    del buf[: i + 1]
                    return None
                line = bytes(buf[: i + 1])
                del buf[: i + 1]
                return line
            if len(buf) > limit and len(buf) > self._limit_for(buf, limit):
                buf.clear()
                self._discarding = True
            await self._wait_input(deadline, True)

    @staticmethod
    def _limit_for(buf: bytearray, limit: int) -> int:
        if limit < AUTH_LINE_LIMIT and buf[:5].upper() == b"AUTH ":
            return AUTH_LINE_LIMIT
        return limit

    def _take(self, n: int) -> bytes:
        """Remove and return up to ``n`` buffered bytes (DATA phase)."""
        buf = self._inbuf
        if len(buf) <= n:
            data = bytes(buf)
            buf.clear()
        else:
            with memoryview(buf) as mv:
                data = bytes(mv[:n])
            del buf[:n]
        if self._read_paused and len(buf) < LOW_WATER and self._tr is not None:
            self._read_paused = False
            self._tr.resume_reading()
        return data

    def _unread(self, data: bytes) -> None:
        """Put bytes back in front of the input buffer (pipelined commands after DATA)."""
        if data:
            self._inbuf[:0] = data

    # endregion

    async def _start_tls(self, context: ssl.SSLContext, handshake_timeout: float) -> None:
        """Switch the connection to TLS (server side). Raises Disconnected if the handshake fails."""
        await self._flush()  # the 220 goes out in plaintext
        # Discard anything pipelined after STARTTLS: it was sent in the clear and must never be
        # interpreted as a command of the protected session.
        self._inbuf.clear()
        self._discarding = False
        self._read_paused = False  # start_tls resumes reading on the raw transport
        raw = self._tr
        if raw is None or self._lost:
            raise Disconnected
        try:
            tr = await self.loop.start_tls(
                raw, self, context, server_side=True, ssl_handshake_timeout=handshake_timeout
            )
        except Exception as exc:  # any handshake failure (ssl, reset, timeout) ends the session
            log.debug("STARTTLS handshake failed: %r", exc)
            self._shut = True
            raw.abort()
            raise Disconnected from None
        if tr is None:
            raise Disconnected
        self._raw_tr = raw
        self._tr = tr
        self._tls = True
