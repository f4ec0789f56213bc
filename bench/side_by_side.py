"""mailrelay vs. Postfix, same work, same invocation: the shared harness run once per load shape,
then one table of ratios.

Each shape is one ``relay_bench.py run`` (interleaved ABBA runs of our relay, started by
``bench/run_target.sh`` and delivering to the harness's sink, and a private Postfix relaying to its
own sink). The harness needs root and Debian's ``postfix``. Shapes (``--shapes``, comma-separated):

- ``base``: ``-n N -c 20 -s 2048 -r 1``, a new connection with EHLO + AUTH per message;
- ``open``: the same with connections kept open (``--msgs-per-conn 0``);
- ``rcpt10``: 10 recipients per message;
- ``kb20``: 20 KB messages.

``MAILRELAY=/path/to/mailrelay`` (passed on to run_target.sh) measures another build, e.g. an
older commit, against the same Postfix; the output then names it. ``--shipped-limits`` keeps the
relay's shipped per-API_USER rate limit (``BENCH_RATE_LIMIT=default`` for run_target.sh); without
it the limit is raised as run_target.sh documents. The 1-minute load average is printed before
and after each shape: this machine is shared, read ratios, not rates.

    python3 bench/side_by_side.py -n 3000 --repeat 2
    python3 bench/side_by_side.py -n 3000 --repeat 2 --shapes base,open --shipped-limits --json out.json

Output: per shape the harness's medians and the ratios ours/Postfix (accepted, delivered, p99,
msgs per CPU-second; higher is better except p99), then one ``shape=… ratio_accept=…`` line each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HARNESS = Path(os.environ.get("RELAY_BENCH", "/work/shared/bench/relay_bench.py"))
SHAPES: dict[str, list[str]] = {
    "base": ["-c", "20", "-s", "2048", "-r", "1", "--msgs-per-conn", "1"],
    "open": ["-c", "20", "-s", "2048", "-r", "1", "--msgs-per-conn", "0"],
    "rcpt10": ["-c", "20", "-s", "2048", "-r", "10", "--msgs-per-conn", "1"],
    "kb20": ["-c", "20", "-s", "20480", "-r", "1", "--msgs-per-conn", "1"],
}
KEYS = ("accept_mps", "delivered_mps", "p99_ms", "msgs_per_cpu_s")


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a != a or b != b or not b:
        return None
    return a / b


def fmt(v: float | None, nd: int = 2) -> str:
    return "nan" if v is None else f"{v:.{nd}f}"


def run_shape(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    out = workdir / f"{name}.json"
    target = f"{REPO / 'bench' / 'run_target.sh'} {{port}} {{workdir}} {{sink}}"
    cmd = [sys.executable, str(HARNESS), "run", "-n", str(args.messages), *SHAPES[name],
           "--repeat", str(args.repeat), "--target-cmd", target, "--target-auth", "bench:secret-key",
           "--drain-timeout", str(args.drain_timeout), "--json", str(out)]
    env = dict(os.environ)
    if args.shipped_limits:
        env["BENCH_RATE_LIMIT"] = "default"
    before = load1()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"[side_by_side] {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
    sys.stderr.write(proc.stdout)
    after = load1()
    result: dict[str, object] = {"shape": name, "started": started, "exit_status": proc.returncode,
                                 "load1_before": before, "load1_after": after, "command": cmd}
    if not out.exists():
        result["error"] = "the harness wrote no JSON"
        return result
    med = json.loads(out.read_text())["median"]
    t, p = med.get("target", {}), med.get("peer", {})
    result["target"] = {k: t.get(k) for k in (*KEYS, "all_drained", "failed", "peak_rss_mb")}
    result["peer"] = {k: p.get(k) for k in (*KEYS, "all_drained", "failed", "peak_rss_mb")}
    result["ratios"] = {f"ratio_{k.removesuffix('_mps').removesuffix('_ms')}": ratio(t.get(k), p.get(k))
                        for k in KEYS}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=3000, help="messages per run (3000)")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved runs per shape (2)")
    ap.add_argument("--shapes", default="base,open,rcpt10,kb20", help="comma-separated: " + ",".join(SHAPES))
    ap.add_argument("--shipped-limits", action="store_true", help="keep the relay's shipped rate limit")
    ap.add_argument("--drain-timeout", type=float, default=60.0, help="harness: wait for the sinks (s)")
    ap.add_argument("--json", help="write every shape's medians and ratios here")
    args = ap.parse_args()
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        ap.error(f"unknown shape(s): {', '.join(unknown)}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip()
    results = []
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as tmp:
        for name in shapes:
            results.append(run_shape(name, args, Path(tmp)))
    override = os.environ.get("MAILRELAY")  # run_target.sh runs this executable instead of the repo's
    print(f"commit={commit}{f' MAILRELAY={override}' if override else ''} messages={args.messages} "
          f"repeat={args.repeat} limits={'shipped' if args.shipped_limits else 'raised'}")
    print(f"{'shape':8} {'ours acc/s':>10} {'pf acc/s':>9} {'ours dlv/s':>10} {'pf dlv/s':>9} "
          f"{'p99 ours':>8} {'p99 pf':>8} {'msg/CPU-s':>9} {'pf':>6}  ratios acc / dlv / p99 / cpu  load")
    status = 0
    for r in results:
        if "error" in r:
            print(f"{r['shape']:8} {r['error']} (exit {r['exit_status']})")
            status = 2
            continue
        t, p, q = r["target"], r["peer"], r["ratios"]
        assert isinstance(t, dict) and isinstance(p, dict) and isinstance(q, dict)
        print(f"{r['shape']:8} {fmt(t['accept_mps'], 0):>10} {fmt(p['accept_mps'], 0):>9} "
              f"{fmt(t['delivered_mps'], 0):>10} {fmt(p['delivered_mps'], 0):>9} {fmt(t['p99_ms'], 1):>8} "
              f"{fmt(p['p99_ms'], 1):>8} {fmt(t['msgs_per_cpu_s'], 0):>9} {fmt(p['msgs_per_cpu_s'], 0):>6}  "
              f"{fmt(q['ratio_accept'])} / {fmt(q['ratio_delivered'])} / {fmt(q['ratio_p99'])} / "
              f"{fmt(q['ratio_msgs_per_cpu_s'])}  {r['load1_before']:.1f}->{r['load1_after']:.1f}")
        if r["exit_status"] != 0:
            status = 2
    for r in results:
        if "ratios" in r:
            q = r["ratios"]
            assert isinstance(q, dict)
            print(f"shape={r['shape']} " + " ".join(f"{k}={fmt(v, 3)}" for k, v in q.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"commit": commit, "args": vars(args), "results": results}, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
