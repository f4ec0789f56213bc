"""Console page renders, server side, through the real HTTP server on loopback:

    .venv/bin/python bench/console.py status  [--rows 10000000] [--queries 40]
    .venv/bin/python bench/console.py queues  [--queues 1000] [--renders 50]

status  The first render of /console/status (an operator session on the big account of
        bench/data_api.py's synthetic data in PostgreSQL: the same database, generated and topped up
        the same way) for a random 30-day window, with no filter and with each of a few filters:
        the page counts the matches and renders the first 50 rows (newest first, and once oldest
        first). Target: p95 < 300 ms.
queues  /console/queues with N queues (a QueueControl holding N synthetic queue views; the page
        sorts and renders every row; by API_USER, and once by pending, descending). Target: < 300 ms
        at 1,000 queues.

Times are request to last byte on loopback (the client's own cost is well under a millisecond).
Prints figures; not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import aiohttp  # noqa: E402
from data_api import SPAN, TOKEN, _bench_dsn, _ensure_recipients, _fmt, _open, _pct  # noqa: E402

from relay.config import HttpConfig  # noqa: E402
from relay.console import session as sess  # noqa: E402
from relay.console.app import attach  # noqa: E402
from relay.delivery.admin import QueueView  # noqa: E402
from relay.http.app import start_http  # noqa: E402
from relay.service.wiring import HttpServices  # noqa: E402
from relay.smtp.auth import ApiUserAuthenticator  # noqa: E402
from storage import open_storage  # noqa: E402

KEY = b"bench-console-key-0123456789abcd"


async def _serve(services: HttpServices) -> tuple[aiohttp.ClientSession, str, Any]:
    runner = await start_http(HttpConfig(listen="127.0.0.1:0", admin_token=TOKEN), services,
                              extend=lambda app: attach(app, KEY))
    host, port = runner.addresses[0][:2]
    cookie = sess.sign(KEY, sess.new_session(None, 3600, time.time(), TOKEN))
    http = aiohttp.ClientSession(cookies={sess.COOKIE: cookie}, cookie_jar=aiohttp.CookieJar(unsafe=True))
    return http, f"http://{host}:{port}", runner


async def _timed(http: aiohttp.ClientSession, url: str, params: dict[str, str]) -> float:
    t = time.perf_counter()
    async with http.get(url, params=params, allow_redirects=False) as r:
        body = await r.text()
        if r.status != 200 or 'class="error"' in body:  # a page that only says what went wrong is no render
            raise RuntimeError(f"{r.status}: {body[:300]}")
    return (time.perf_counter() - t) * 1000


async def bench_status(args: argparse.Namespace) -> None:
    url = await _bench_dsn(args.pg_dsn, False)
    storage, big, end = await _open(url)
    await _ensure_recipients(storage, big, end, args.rows)
    services = HttpServices(storage=storage, authenticator=ApiUserAuthenticator(storage.accounts),
                            admin_token=TOKEN, search_per_minute=10**9)
    http, base, runner = await _serve(services)
    big_name = (await storage.accounts.get_account_by_id(big)).name  # type: ignore[union-attr]
    rng = random.Random(11)
    filters = {"no filter": {}, "status=5": {"status": "5"}, "api_user=app3": {"api_user": "app3"},
               "email_type=marketing": {"email_type": "marketing"}, "order=oldest": {"order": "oldest"}}
    print(f"\n/console/status first render: {args.rows:,} records, account {big_name!r} holds half; "
          "random 30-day windows; count + first 50 rows")
    every: list[float] = []
    for name, extra in filters.items():
        ms = []
        for _ in range(args.queries):
            last_day = (end - timedelta(days=1 + rng.randrange(0, SPAN.days - 30))).date()
            params = {"account": big_name, **extra, "start_date": (last_day - timedelta(days=29)).isoformat(),
                      "end_date": last_day.isoformat()}
            ms.append(await _timed(http, base + "/console/status", params))
        every += ms
        print(f"  {name:24s} {_fmt(ms)}")
    print(f"  ALL                      {_fmt(every)}   target p95 < 300 ms: "
          f"{'met' if _pct(every, 95) < 300 else 'NOT met'}")
    await http.close()
    await runner.cleanup()
    await storage.close()


class _Queues:
    """N queue views, as QueueAdmin.list answers them."""

    def __init__(self, n: int) -> None:
        rates = {"5s": 1.2, "15s": 0.9, "30s": 0.7}
        self.views = [QueueView(f"app{i % 20}", f"domain{i}.example", "paused" if i % 10 == 0 else "active", i % 500,
                            rates, rates, rates, "domain_limit" if i % 10 == 0 else None,
                            "421 4.7.0 try again later" if i % 10 == 0 else None,
                            "2026-12-03T10:00:00+00:00" if i % 10 == 0 else None, False, None, None, None)
                      for i in range(n)]

    def list(self, api_user: str | None = None) -> Sequence[QueueView]:
        return [v for v in self.views if api_user is None or v.api_user == api_user]

    def show(self, api_user: str, domain: str, limit: int = 100) -> dict[str, Any]:
        raise LookupError("not used")

    def pause(self, api_user: str, domain: str) -> QueueView:
        raise LookupError("not used")

    resume = set_rate = recover = pause  # type: ignore[assignment]


async def bench_queues(args: argparse.Namespace) -> None:
    storage = await open_storage("sqlite:///:memory:")
    await storage.migrate()
    services = HttpServices(storage=storage, authenticator=ApiUserAuthenticator(storage.accounts),
                            admin_token=TOKEN, queues=_Queues(args.queues))  # type: ignore[arg-type]
    http, base, runner = await _serve(services)
    ms = [await _timed(http, base + "/console/queues", {} if i % 2 else {"sort": "pending", "dir": "desc"})
          for i in range(args.renders)]
    print(f"\n/console/queues with {args.queues:,} queues: {_fmt(ms)}   target < 300 ms: "
          f"{'met' if _pct(ms, 95) < 300 else 'NOT met'} (p95)")
    await http.close()
    await runner.cleanup()
    await storage.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["status", "queues"])
    ap.add_argument("--pg-dsn", default=os.environ.get("MAILRELAY_BENCH_PG_DSN",
                                                       "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--queues", type=int, default=1000)
    ap.add_argument("--renders", type=int, default=50)
    args = ap.parse_args()
    asyncio.run(bench_status(args) if args.what == "status" else bench_queues(args))


if __name__ == "__main__":
    main()
