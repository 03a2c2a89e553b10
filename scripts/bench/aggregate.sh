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
    python3 - "$N" > "$WORK/plan-$N.toml" <<'PY'
import sys
n = int(sys.argv[1])
width = max(1, n // 10)
print(f'name = "bench-{n}"\nagents = 8')
for i in range(n):
    print(f'[[task]]\nid = "t{i}"\ncommand = "true"\ngroup = "g{i % 20}"')
    if i >= width:
        print(f'after = ["t{i - width}"]')
    if i % 100 < 2:
        print(f'compete = "c{i // 100}"')
PY
    t0=$(date +%s.%N)
    id=$("$BIN/orch-plan" "$WORK/plan-$N.toml" | tail -n 1)
    t1=$(date +%s.%N)
    python3 - "$N" "$ORCH_HOME/session-$id" <<'PY'
import heapq, json, os, random, sys
from datetime import datetime, timedelta, timezone
n, sdir = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(42)
width = max(1, n // 10)
t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
def ts(s):
    return (t0 + timedelta(seconds=s)).isoformat(timespec="milliseconds")
insights = [f"Finding number {k} about module {k % 17}." for k in range(200)]
dbs = ["postgres", "mysql", "sqlite"]
slots = [0.0] * 8
finish = [0.0] * n
os.makedirs(f"{sdir}/history", exist_ok=True)
journal = open(f"{sdir}/index/results.jsonl", "a")
for i in range(n):
    ready = finish[i - width] if i >= width else 0.0
    free = heapq.heappop(slots)
    start = max(ready, free)
    dur = round(rnd.uniform(1, 120), 3)
    end = start + dur
    heapq.heappush(slots, end)
    finish[i] = end
    roll = rnd.random()
    # Failures only in the last wave, so no dependent needs to be skipped.
    status = "success"
    if i >= n - width:
        status = "failure" if roll < 0.2 else "timeout" if roll < 0.3 else "success"
    attempt = 1
    if rnd.random() < 0.03:
        attempt = 2
        os.makedirs(f"{sdir}/history/t{i}", exist_ok=True)
        old = {"format": 1, "task": f"t{i}", "status": "failure", "exit_code": 1,
               "reason": "exit code 1", "attempt": 1, "worker": "worker-1", "pid": 1000 + i,
               "host": "bench", "started": ts(start - 5), "finished": ts(start - 3),
               "duration": 2.0}
        with open(f"{sdir}/history/t{i}/attempt-1.json", "w") as f:
            json.dump(old, f, indent=2)
    r = {"format": 1, "task": f"t{i}", "status": status,
         "exit_code": 0 if status == "success" else 1, "attempt": attempt,
         "worker": f"worker-{i % 8 + 1}", "pid": 2000 + i, "host": "bench",
         "started": ts(start), "finished": ts(end), "duration": dur,
         "summary": f"did task {i}",
         "insights": rnd.sample(insights, rnd.randint(0, 2)),
         "decisions": {"db": rnd.choice(dbs), f"k{i % 50}": rnd.randint(0, 2)},
         "score": round(rnd.random(), 2)}
    if status != "success":
        r["reason"] = "exit code 1" if status == "failure" else "timed out after 2m"
    with open(f"{sdir}/results/t{i}.json", "w") as f:
        json.dump(r, f, indent=2)
        f.write("\n")
    journal.write(json.dumps({"task": f"t{i}", "status": status}, separators=(",", ":")) + "\n")
PY
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
