#!/bin/sh
# Time and peak memory of `orch-monitor` (plain report and --json) on
# sessions of N tasks, release build, with 4 live workers (their locks held
# by flock(1)). Targets: 10,000 tasks <= 0.3 s, 100,000 <= 3 s.
# Usage: scripts/bench/monitor.sh [N...]          (default 10000 100000)
set -eu
cd "$(dirname "$0")/../.."
cargo build --release --locked --quiet
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"
WORK=$(mktemp -d /tmp/orch-bench-monitor.XXXXXX)
HOLDERS=""
trap 'for p in $HOLDERS; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
[ $# -gt 0 ] || set -- 10000 100000
for n in "$@"; do
    root="$WORK/root-$n"
    t0=$(date +%s.%N)
    id=$(python3 scripts/bench/monitor-session.py "$BIN/orch-plan" "$root" "$n")
    t1=$(date +%s.%N)
    dir="$root/session-$id"
    echo "== $n tasks: session $id (made in $(echo "$t1 - $t0" | bc) s)"
    for w in 1 2 3 4; do
        task=$(python3 -c "import json;print(json.load(open('$dir/status/worker-$w.active'))['task'])")
        # One process holds the worker's slot lock and its task's lock,
        # standing in for the worker and its agent.
        python3 -c 'import fcntl, sys, time
fs = [open(p, "a") for p in sys.argv[1:]]
for f in fs: fcntl.flock(f, fcntl.LOCK_EX)
time.sleep(100000)' "$dir/locks/worker-$w.lock" "$dir/locks/$task.lock" >/dev/null 2>&1 &
        HOLDERS="$HOLDERS $!"
        sed -i "s/\"pid\": [0-9]*/\"pid\": $!/; s/\"agent_pid\": [0-9]*/\"agent_pid\": $!/" \
            "$dir/status/worker-$w.active" "$dir/claims/$task.json"
        while flock -n "$dir/locks/$task.lock" true; do sleep 0.01; done
    done
    for mode in "" "--json"; do
        # A warm-up run, then three measured ones.
        ORCH_HOME="$root" "$BIN/orch-monitor" $mode >/dev/null
        for r in 1 2 3; do
            ORCH_HOME="$root" /usr/bin/time -f "%e %M" -o "$WORK/time" "$BIN/orch-monitor" $mode >"$WORK/out"
            read -r secs kb < "$WORK/time"
            echo "orch-monitor ${mode:-(plain)}: ${secs} s, peak ${kb} KiB, $(wc -c < "$WORK/out") bytes of output"
        done
    done
    ORCH_HOME="$root" "$BIN/orch-monitor" | head -n 12
done
