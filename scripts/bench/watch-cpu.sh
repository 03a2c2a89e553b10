#!/bin/sh
# CPU used by `orch-monitor --watch` over a minute (utime + stime from
# /proc/<pid>/stat before and after), in a real terminal (tmux), on an idle
# session and on a busy one: 4 workers whose tasks each print a line and a
# progress report every 10 ms (about 800 log lines a second in all).
# Usage: scripts/bench/watch-cpu.sh [SECONDS]          (default 60)
set -eu
cd "$(dirname "$0")/../.."
SECS="${1:-60}"
cargo build --release --locked --quiet
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"
WORK=$(mktemp -d /tmp/orch-bench-watch.XXXXXX)
SOCK="orch-bench-watch-$$"
WORKERS=""
cleanup() {
    tmux -L "$SOCK" kill-server 2>/dev/null || true
    for p in $WORKERS; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
export ORCH_HOME="$WORK/root"
TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }

measure() { # label
    rm -f "$WORK/pid"
    tmux -L "$SOCK" -f /dev/null new-session -d -x 160 -y 50 -s m \
        "sh -c 'echo \$\$ > $WORK/pid; exec $BIN/orch-monitor --watch'"
    while [ ! -s "$WORK/pid" ]; do sleep 0.05; done
    pid=$(cat "$WORK/pid")
    until tmux -L "$SOCK" capture-pane -p -t m | grep -q WORKERS; do sleep 0.05; done
    a=$(cpu_ticks "$pid")
    sleep "$SECS"
    b=$(cpu_ticks "$pid")
    rss=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
    tmux -L "$SOCK" send-keys -t m q
    echo "$1: $((b - a)) ticks = $(echo "scale=3; ($b - $a) / $TICK" | bc) s of CPU in ${SECS} s ($(echo "scale=2; ($b - $a) * 100 / $TICK / $SECS" | bc)% of one core), peak RSS ${rss} KiB"
    tmux -L "$SOCK" kill-server 2>/dev/null || true
}

cat > "$WORK/idle.toml" <<'TOML'
name = "idle"
[[task]]
id = "a"
command = "true"
[[task]]
id = "b"
command = "true"
after = ["a"]
TOML
"$BIN/orch-plan" "$WORK/idle.toml" >/dev/null
measure "idle session (no workers)"

{
    echo 'name = "busy"'
    for i in 1 2 3 4; do
        printf '[[task]]\nid = "busy-%s"\ncommand = """i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo "line $i"; echo "::progress $((i %% 100))"; sleep 0.01; done"""\n' "$i"
    done
} > "$WORK/busy.toml"
"$BIN/orch-plan" "$WORK/busy.toml" >/dev/null
for w in 1 2 3 4; do
    "$BIN/orch-worker" >/dev/null 2>&1 &
    WORKERS="$WORKERS $!"
done
measure "busy session (4 workers, ~800 log lines/s)"
