"""The local control socket: how `mailrelay queues ...` reaches the running server.

A Unix stream socket in the data directory (mode 0600: only the server's user). One JSON
request line in, one JSON response line out: ``{"cmd": "queues.list", "args": {...}}`` →
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. Queue state lives in the
server's memory, so the CLI cannot read it from the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay.delivery.admin import QueueAdmin, QueueError

log = logging.getLogger("mailrelay.control")

MAX_REQUEST = 64 * 1024


def _rate(args: dict[str, Any]) -> float | None:
    value = args.get("rate")
    if value in (None, "", "none", 0):
        return None
    rate = float(value)
    if rate < 0:
        raise ValueError("rate must be >= 0")
    return rate


class ControlServer:
    def __init__(self, path: Path, queues: QueueAdmin | None,
                 exports_wake: Callable[[], None] | None = None) -> None:
        self.path = path
        self.queues = queues
        self.exports_wake = exports_wake
        self._server: asyncio.AbstractServer | None = None
        self._bound: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file we created

    def _commands(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        out: dict[str, Callable[[dict[str, Any]], Any]] = {}
        wake = self.exports_wake
        if wake is not None:
            out["exports.wake"] = lambda a: wake()
        q = self.queues
        if q is None:
            return out
        return {
            **out,
            "queues.list": lambda a: [v.to_json() for v in q.list(a.get("api_user"))],
            "queues.show": lambda a: q.show(a["api_user"], a["domain"], int(a.get("limit", 100))),
            "queues.pause": lambda a: q.pause(a["api_user"], a["domain"]).to_json(),
            "queues.resume": lambda a: q.resume(a["api_user"], a["domain"]).to_json(),
            "queues.recover": lambda a: q.recover(a["api_user"], a["domain"]).to_json(),
            "queues.rate": lambda a: q.set_rate(a["api_user"], a["domain"], _rate(a)).to_json(),
        }

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        fn = self._commands().get(str(cmd))
        if fn is None:
            return {"ok": False, "error": f"unknown command {cmd!r} (is delivery enabled?)"}
        try:
            return {"ok": True, "result": fn(dict(request.get("args") or {}))}
        except QueueError as e:
            return {"ok": False, "error": str(e)}
        except (KeyError, ValueError, TypeError) as e:
            return {"ok": False, "error": f"bad arguments: {e}"}

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            if len(line) > MAX_REQUEST:
                resp: dict[str, Any] = {"ok": False, "error": "request too large"}
            else:
                try:
                    req = json.loads(line)
                    resp = self.handle(req) if isinstance(req, dict) else {"ok": False, "error": "expected an object"}
                except ValueError:
                    resp = {"ok": False, "error": "request is not JSON"}
            writer.write(json.dumps(resp).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _clear_stale(self) -> None:
        """Remove a socket file left by a server that died (kill -9); refuse to touch a live one
        or anything that is not a socket."""
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"{self.path} exists and is not a socket; not replacing it")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.path)), 5)
        except ConnectionRefusedError:  # nobody listens: stale
            self.path.unlink(missing_ok=True)
            return
        except (OSError, TimeoutError) as e:
            raise OSError(f"control socket {self.path}: cannot tell whether a server uses it ({e}); "
                          "not replacing it") from None
        writer.close()
        raise OSError(f"another process answers on the control socket {self.path}; not replacing it")

    async def start(self) -> None:
        await self._clear_stale()
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=MAX_REQUEST)
        os.chmod(self.path, 0o600)
        st = self.path.lstat()
        self._bound = (st.st_dev, st.st_ino)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        # Only the socket this server bound: the path may have been taken over since.
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == self._bound:
            self.path.unlink(missing_ok=True)
        self._bound = None


async def call(path: Path, cmd: str, args: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    """Client side: send one command, return its result or raise RuntimeError with the error."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=16 * 1024 * 1024),
                                                timeout)
    except (OSError, TimeoutError) as e:
        raise RuntimeError(f"cannot reach the running server at {path} ({e}); is `mailrelay serve` running?") from e
    try:
        writer.write(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    resp = json.loads(line)
    if not resp.get("ok"):
        raise RuntimeError(resp.get("error", "failed"))
    return resp["result"]
