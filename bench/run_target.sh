#!/usr/bin/env bash
# Target command for the shared side-by-side harness (/work/shared/bench/relay_bench.py run):
#
#   --target-cmd '/abs/path/to/bench/run_target.sh {port} {workdir} {sink}' --target-auth bench:secret-key
#
# With the third argument the relay delivers everything to the harness's sink (delivery.relayhost,
# an IP literal, so no DNS); without it the relay only accepts (init --no-delivery).
#
# Creates a fresh mailrelay data directory in WORKDIR/mailrelay-home (`mailrelay init`, SQLite,
# listener 127.0.0.1:PORT, AUTH without TLS allowed because it is loopback), adds API_USER
# `bench` (account `bench`, key `secret-key`) and then *execs* `mailrelay serve`, so the pid the
# harness started is the server itself (its CPU/RSS sampling and its SIGTERM reach the relay).
#
# BENCH_RATE_LIMIT (default 1000000): limits.messages_per_second and messages_burst of the
# relay. The shipped per-API_USER limit (1000 msgs/s, burst 2000 when this was written) would
# otherwise cap a one-user benchmark; BENCH_RATE_LIMIT=default keeps the shipped values.
# MAILRELAY overrides the executable (default: the repo's .venv/bin/mailrelay next to this script).
#
# BENCH_DKIM=1: an RSA 2048 DKIM key for BENCH_FROM_DOMAIN (default relay-bench.test, the harness's
# From domain), so every delivered message is signed. BENCH_TRACKING=1: a recipient-facing web
# listener on a free loopback port (init --web/--public-url), which turns List-Unsubscribe on
# (its default; a per-recipient header, so a per-recipient signature), and open and click tracking
# on for account `bench` (the harness's text/plain mail has no HTML part: it is parsed, found to
# have nothing to rewrite, and delivered as it is). Both off by default (the plain relay).
# BENCH_WORKERS=N: intake.workers (SMTP session processes); unset: the shipped default (auto).
set -euo pipefail

usage="usage: run_target.sh PORT WORKDIR [SINK_HOST:PORT]"
port=${1:?$usage}
workdir=${2:?$usage}
sink=${3:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
mailrelay=${MAILRELAY:-$here/../.venv/bin/mailrelay}
mailrelay=$(realpath "$mailrelay")
home=$workdir/mailrelay-home
rate=${BENCH_RATE_LIMIT:-1000000}
web=()
if [ "${BENCH_TRACKING:-0}" = 1 ]; then
    web_port=$("$(dirname "$mailrelay")/python" -c \
        'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    web=(--web "127.0.0.1:$web_port" --public-url "http://127.0.0.1:$web_port")
fi

# Delivery goes to the harness's sink as the relay host (an IP literal: no DNS). Without a sink the
# relay only accepts (--no-delivery): it must never look up MX records outside loopback.
if [ -n "$sink" ]; then
    "$mailrelay" init --home "$home" --smtp "127.0.0.1:$port" --relayhost "$sink" ${web[@]+"${web[@]}"} >&2
else
    "$mailrelay" init --home "$home" --smtp "127.0.0.1:$port" --no-delivery ${web[@]+"${web[@]}"} >&2
fi

if [ "$rate" != default ]; then
    case $rate in *.*) rate_f=$rate ;; *) rate_f=$rate.0 ;; esac
    burst=${rate%%.*}
    # init writes every key; unset ones as a commented default ("# messages_per_second = 200.0")
    sed -i -E "/^\[limits\]/,/^\[/{
        s/^#? ?messages_per_second = .*/messages_per_second = $rate_f/
        s/^#? ?messages_burst = .*/messages_burst = $burst/
    }" "$home/mailrelay.toml"
    effective=$("$mailrelay" config check --home "$home")
    if ! grep -qx "limits.messages_per_second = $rate_f" <<<"$effective" \
        || ! grep -qx "limits.messages_burst = $burst" <<<"$effective"; then
        echo "run_target.sh: could not set limits.messages_per_second/messages_burst in $home/mailrelay.toml" >&2
        grep '^limits\.' <<<"$effective" >&2 || true
        exit 1
    fi
    echo "run_target.sh: bench override limits.messages_per_second = $rate_f, messages_burst = $burst" >&2
fi

if [ -n "${BENCH_WORKERS:-}" ]; then
    sed -i -E "/^\[intake\]/,/^\[/s/^#? ?workers = .*/workers = $BENCH_WORKERS/" "$home/mailrelay.toml"
    effective=$("$mailrelay" config check --home "$home")
    if ! grep -qx "intake.workers = $BENCH_WORKERS" <<<"$effective"; then
        echo "run_target.sh: could not set intake.workers in $home/mailrelay.toml" >&2
        exit 1
    fi
    echo "run_target.sh: bench override intake.workers = $BENCH_WORKERS" >&2
fi

"$mailrelay" users add bench --account bench --key secret-key --home "$home" >&2
if [ "${BENCH_DKIM:-0}" = 1 ]; then
    "$mailrelay" dkim add "${BENCH_FROM_DOMAIN:-relay-bench.test}" --selector bench --home "$home" >&2
fi
if [ "${BENCH_TRACKING:-0}" = 1 ]; then
    "$mailrelay" accounts set bench --track-opens on --track-clicks on --home "$home" >&2
fi

exec "$mailrelay" serve --home "$home"
