#!/bin/sh
# Time and peak memory of `orch-aggregate` on generated sessions.
#
# For each N, makes a plan of N tasks (10 waves, 20 groups, a competition
# every 100 tasks), creates its session with orch-plan, and writes N result
# files as a worker would (simulated start/finish times on 8 agents, 2%
# failures, 1% timeouts, 3% of tasks with an archived attempt, insights and
# decisions drawn from small pools). Then runs `orch-aggregate` ROUNDS times
# under /usr/bin/time -v (text to /dev/null; the report is also written to
# aggregate.json as always) and prints wall time and peak RSS of each round.
# The files were just written, so they are in the page cache: warm numbers.
#
# Usage: scripts/bench/aggregate.sh [N...]     (default: 10000 100000)
#        ROUNDS=5 KEEP=1 scripts/bench/aggregate.sh 1000
set -eu
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || set -- 10000 100000
ROUNDS="${ROUNDS:-3}"
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
cargo build --release --locked --quiet --bin orch-plan --bin orch-aggregate
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"
WORK=$(mktemp -d /tmp/orch-bench-aggregate.XXXXXX)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT
export ORCH_HOME="$WORK/root"

for N in "$@"; do
    python3 scripts/bench/aggregate-session.py plan "$N" > "$WORK/plan-$N.toml"
    t0=$(date +%s.%N)
    id=$("$BIN/orch-plan" "$WORK/plan-$N.toml" | tail -n 1)
    t1=$(date +%s.%N)
    python3 scripts/bench/aggregate-session.py fill "$N" "$ORCH_HOME/session-$id"
    t2=$(date +%s.%N)
    echo "N=$N session $id: orch-plan $(echo "$t1 - $t0" | bc)s, results written in $(echo "$t2 - $t1" | bc)s"
    for r in $(seq "$ROUNDS"); do
        code=0
        /usr/bin/time -v "$BIN/orch-aggregate" --session "$id" > /dev/null 2> "$WORK/time.txt" || code=$?
        wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$WORK/time.txt")
        rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time.txt")
        user=$(sed -n 's/.*User time (seconds): //p' "$WORK/time.txt")
        sys=$(sed -n 's/.*System time (seconds): //p' "$WORK/time.txt")
        echo "  round $r: wall $wall  user ${user}s  sys ${sys}s  peak RSS $((rss / 1024)) MiB  (exit $code)"
    done
done
[ -z "${KEEP:-}" ] || echo "kept $WORK"
