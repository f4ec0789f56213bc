#!/usr/bin/env bash
# Accept rate and CPU per process with N intake workers ([intake] workers), against a running
# `mailrelay serve` that delivers to Postfix's smtp-sink (Debian package postfix):
#
#   bench/intake_workers.sh 1 0 1 0        # alternate settings; one line of figures each
#
# Each run: a fresh data directory (mailrelay init, relayhost = the sink), `intake.workers` set in
# mailrelay.toml, API_USER bench, then bench/submission.py -n $N -c 20 -s 2048 --msgs-per-conn 1
# (N=4000, warm-up 200) and the CPU ticks each server process used from /proc (owner first).
# MAILRELAY overrides the executable (default: the repo's .venv/bin/mailrelay).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
mailrelay=${MAILRELAY:-$here/../.venv/bin/mailrelay}
python=$here/../.venv/bin/python
n=${N:-4000}
free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
for workers in "$@"; do
    dir=$(mktemp -d)
    sink_port=$(free_port); smtp_port=$(free_port)
    /usr/sbin/smtp-sink -c -u nobody "127.0.0.1:$sink_port" 1024 >/dev/null 2>&1 & sink=$!
    "$mailrelay" init --home "$dir/h" --smtp "127.0.0.1:$smtp_port" --relayhost "127.0.0.1:$sink_port" >/dev/null 2>&1
    sed -i -E "/^\[intake\]/,/^\[/s/^#? ?workers = .*/workers = $workers/" "$dir/h/mailrelay.toml"
    "$mailrelay" users add bench --account bench --key secret-key --home "$dir/h" >/dev/null 2>&1
    "$mailrelay" serve --home "$dir/h" 2>"$dir/serve.log" & owner=$!
    for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$smtp_port") 2>/dev/null && break; sleep 0.1; done
    sleep 0.5  # the workers are up once the port answers; let the owner settle
    pids="$owner $(pgrep -P "$owner" -f relay.workers.worker | tr '\n' ' ' || true)"
    ticks() { for p in $pids; do awk '{printf "%d ", $14 + $15}' "/proc/$p/stat"; done; }
    before=($(ticks))
    result=$("$python" "$here/submission.py" --target "127.0.0.1:$smtp_port" --auth bench:secret-key -n "$n" \
        -c 20 -s 2048 --msgs-per-conn 1 --warmup 200 2>&1 | grep '^accept_mps=' | cut -d' ' -f1-3)
    after=($(ticks))
    per=""; total=0
    for i in "${!before[@]}"; do d=$(( after[i] - before[i] )); total=$(( total + d )); per="$per $d"; done
    hz=$(getconf CLK_TCK)
    echo "workers=$workers $result cpu_ms_per_msg=$("$python" -c "print(round($total * 1000 / $hz / ($n + 200), 2))") ticks_by_process=[${per# }] load=$(cut -d' ' -f1 /proc/loadavg)"
    kill "$owner"; wait "$owner" 2>/dev/null || true
    kill "$sink"; wait "$sink" 2>/dev/null || true
    rm -rf "$dir"
done
