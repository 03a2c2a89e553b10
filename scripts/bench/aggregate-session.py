#!/usr/bin/env python3
"""Makes sessions for benchmarking orch-aggregate.

Usage: aggregate-session.py plan N > plan.toml
       aggregate-session.py fill N SESSION_DIR

`plan`: N tasks in 10 waves (each after one task of the previous wave), 20
groups, a competition every 100 tasks. `fill`: N result files as a worker
would write them (simulated start/finish times on 8 agents, failures and
timeouts only in the last wave, 3% of tasks with an archived attempt,
insights and decisions drawn from small pools) and the journal.
"""
import heapq
import json
import os
import random
import sys
from datetime import datetime, timedelta, timezone


def plan(n):
    width = max(1, n // 10)
    print(f'name = "bench-{n}"\nagents = 8')
    for i in range(n):
        print(f'[[task]]\nid = "t{i}"\ncommand = "true"\ngroup = "g{i % 20}"')
        if i >= width:
            print(f'after = ["t{i - width}"]')
        if i % 100 < 2:
            print(f'compete = "c{i // 100}"')


def fill(n, sdir):
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
    journal.close()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "plan":
        plan(int(sys.argv[2]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "fill":
        fill(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(__doc__)
