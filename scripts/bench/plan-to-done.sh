#!/bin/sh
# Plan-to-done wall time of N tasks of `true` with `orch-worker --parallel 2`,
# against `xargs -P2` running the same N `true` in the same run.
# Usage: scripts/bench/plan-to-done.sh [N] [ROUNDS]     (default 1000 3)
set -eu
cd "$(dirname "$0")/../.."
N="${1:-1000}"
ROUNDS="${2:-3}"
cargo build --release --locked --quiet
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"
WORK=$(mktemp -d /tmp/orch-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
python3 - "$N" > "$WORK/plan.toml" <<'PY'
import sys
n = int(sys.argv[1])
print('name = "bench"')
for i in range(n):
    print(f'[[task]]\nid = "t{i}"\ncommand = "true"')
PY
now() { python3 -c 'import time; print(time.monotonic())'; }
for r in $(seq "$ROUNDS"); do
    export ORCH_HOME="$WORK/root-$r"
    t0=$(now)
    id=$("$BIN/orch-plan" "$WORK/plan.toml" | tail -n 1)
    "$BIN/orch-worker" --session "$id" --parallel 2 >/dev/null
    t1=$(now)
    seq "$N" | xargs -P2 -n1 sh -c 'true' >/dev/null
    t2=$(now)
    done=$(ls "$ORCH_HOME/session-$id/results" | wc -l)
    python3 -c "o=$t1-$t0; x=$t2-$t1; print(f'round $r: orch {o:.2f}s ({o/$N*1000:.2f} ms/task, {$done} results)  xargs -P2 {x:.2f}s  ratio {o/x:.2f}')"
done
