"""PrivatePg: a throw-away PostgreSQL cluster of the machine's PostgreSQL, for tests that stop,
restart or crash the database server (never the shared server on 5432: others use it).

``initdb`` runs as the ``postgres`` user into a fresh temporary directory it owns (trust
authentication); the server listens on ``127.0.0.1:<free port>`` with its Unix socket in that
directory::

    pg = PrivatePg()
    pg.start()              # initdb (first time) + pg_ctl start; blocking: ``await asyncio.to_thread(pg.start)``
    try:
        url = pg.create_database("mailrelay")   # postgresql://postgres@127.0.0.1:PORT/mailrelay
        ...
        pg.restart(down=2.0)                    # fast shutdown, 2 s without a server, start again
        pg.stop(mode="immediate")               # like a crash: no checkpoint, recovery at the next start
    finally:
        pg.cleanup()        # stop whatever runs, remove the directory

Needs root (``runuser``) and ``/usr/lib/postgresql/<version>/bin``; :func:`pg_unavailable` says why
not (a test fails with that reason, it never skips). Every wait is bounded. ``fsync`` is off: the
machine does not crash in a test, and shared disks stay quiet.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import asyncpg


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(found[-1]).parent if found else None


def pg_unavailable() -> str | None:
    """Why a private cluster cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private PostgreSQL cluster needs root (initdb runs as the postgres user via runuser)"
    if shutil.which("runuser") is None:
        return "runuser is missing"
    if _bin_dir() is None:
        return "no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePg:
    def __init__(self, *, port: int | None = None) -> None:
        reason = pg_unavailable()
        if reason:
            raise RuntimeError(reason)
        bin_dir = _bin_dir()
        assert bin_dir is not None
        self.bin = bin_dir
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mailrelay-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.datadir = self.root / "data"
        self.logfile = self.root / "server.log"
        self._initialised = False

    # -- commands ---------------------------------------------------------------------------------
    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)

    def _pg_ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self._run(str(self.bin / "pg_ctl"), "-D", str(self.datadir), *args, timeout=timeout)

    def init(self) -> None:
        r = self._run(str(self.bin / "initdb"), "-D", str(self.datadir), "--auth=trust", "-U", "postgres",
                      "--no-sync", "-E", "UTF8", "--locale=C")
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stdout}{r.stderr}")
        self._initialised = True

    def start(self, timeout: float = 30) -> None:
        """Start the server (initdb first if needed) and wait until it accepts connections."""
        if not self._initialised:
            self.init()
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                "-c fsync=off -c full_page_writes=off -c max_connections=60")
        r = self._pg_ctl("-l", str(self.logfile), "-w", "-t", str(int(timeout)), "-o", opts, "start",
                         timeout=timeout + 10)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {r.stdout}{r.stderr}\n{self.log_tail()}")

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        """``fast``: clients are disconnected (57P01), clean shutdown; ``immediate``: like a crash."""
        r = self._pg_ctl("-m", mode, "-w", "-t", str(int(timeout)), "stop", timeout=timeout + 10)
        if r.returncode != 0 and self.running():
            raise RuntimeError(f"pg_ctl stop failed: {r.stdout}{r.stderr}")

    def restart(self, down: float = 0.0, mode: str = "fast") -> None:
        """Stop, stay down ``down`` seconds, start again."""
        self.stop(mode)
        if down:
            time.sleep(down)
        self.start()

    def running(self) -> bool:
        if not self.datadir.exists():
            return False
        return self._pg_ctl("status", timeout=15).returncode == 0

    def cleanup(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- databases --------------------------------------------------------------------------------
    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name``; returns its URL."""
        r = self._run(str(self.bin / "psql"), "-h", str(self.root), "-p", str(self.port), "-d", "postgres",
                      "-v", "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{name}"')
        if r.returncode != 0:
            raise RuntimeError(f"create database failed: {r.stdout}{r.stderr}")
        return self.dsn(name)

    async def wait_ready(self, database: str = "postgres", timeout: float = 30) -> None:
        """Wait until a client connection succeeds (async, for code already in a loop)."""
        import asyncio

        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = await asyncpg.connect(self.dsn(database), timeout=5)
                await conn.close()
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __enter__(self) -> PrivatePg:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()
