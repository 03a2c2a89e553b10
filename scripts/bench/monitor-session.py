#!/usr/bin/env python3
"""Makes a large session for benchmarking orch-monitor, re-runnably.

Usage: monitor-session.py ORCH_PLAN ROOT N

Plans N tasks in 10 waves (each task after one task of the previous wave),
with a real `orch-plan`, then fills the session as a long run would leave
it: 60% of the tasks finished (results, journal, logs; 1 in 50 failed),
4 workers with heartbeats and claims of running tasks, and a run.log of
one line per finished task. Prints the session id. Locks of the running
tasks and workers are not taken here: scripts/bench/monitor.sh holds them
with flock(1) so the workers look alive.
"""
import json, os, subprocess, sys, datetime

orch_plan, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(root, exist_ok=True)
plan = os.path.join(root, f"plan-{n}.toml")
waves = 10
per = max(1, n // waves)
with open(plan, "w") as f:
    f.write(f'name = "bench-{n}"\nagents = 4\n')
    for i in range(n):
        f.write(f'[[task]]\nid = "t{i:06d}"\ncommand = "true"\nestimate = "30s"\n')
        if i >= per:
            f.write(f'after = ["t{i - per:06d}"]\n')
env = dict(os.environ, ORCH_HOME=root)
out = subprocess.run([orch_plan, plan], env=env, check=True, capture_output=True, text=True)
sid = out.stdout.strip().splitlines()[-1]
d = os.path.join(root, f"session-{sid}")
now = datetime.datetime.now().astimezone()
ts = lambda s: (now + datetime.timedelta(seconds=s)).isoformat(timespec="milliseconds")
done = n * 6 // 10
journal = []
runlog = []
for i in range(done):
    t = f"t{i:06d}"
    status = "failure" if i % 50 == 7 else "success"
    r = {"format": 1, "task": t, "status": status, "exit_code": 0 if status == "success" else 1,
         "attempt": 1, "worker": f"worker-{i % 4 + 1}", "pid": 1000 + i, "host": os.uname().nodename,
         "started": ts(-3600 + i * 0.03), "finished": ts(-3600 + i * 0.03 + 0.02), "duration": 0.02}
    if status != "success":
        r["reason"] = "exit code 1"
    with open(os.path.join(d, "results", f"{t}.json"), "w") as f:
        json.dump(r, f, indent=2)
    journal.append(json.dumps({"task": t, "status": status}))
    runlog.append(f"{ts(-3600 + i * 0.03)} worker-{i % 4 + 1}[{1000 + i % 4}] {t} {status} in 20ms")
    if i >= done - 50:
        with open(os.path.join(d, "logs", f"{t}.log"), "w") as f:
            for k in range(200):
                f.write(f"{ts(-60)} [{t}] output line {k} of a finished task\n")
            f.write(f"{ts(-59)} [{t}] --- {status} in 20ms\n")
with open(os.path.join(d, "index", "results.jsonl"), "w") as f:
    f.write("\n".join(journal) + "\n")
with open(os.path.join(d, "logs", "run.log"), "a") as f:
    f.write("\n".join(runlog) + "\n")
host = os.uname().nodename
boot = open("/proc/sys/kernel/random/boot_id").read().strip()
for w in range(1, 5):
    t = f"t{done + w - 1:06d}"
    pid = os.getpid()
    hb = {"format": 1, "worker": f"worker-{w}", "pid": pid, "pid_start": 0, "host": host,
          "started": ts(-3600), "updated": ts(0), "state": "running", "task": t, "attempt": 1,
          "task_started": ts(-10), "agent_pid": pid, "progress": 25.0 * w, "progress_source": "output",
          "done": done // 4, "failed": done // 200}
    with open(os.path.join(d, "status", f"worker-{w}.active"), "w") as f:
        json.dump(hb, f)
    claim = {"format": 1, "task": t, "kind": "worker", "owner": f"worker-{w}", "pid": pid, "pid_start": 0,
             "host": host, "boot_id": boot, "attempt": 1, "since": ts(-10)}
    with open(os.path.join(d, "claims", f"{t}.json"), "w") as f:
        json.dump(claim, f)
    with open(os.path.join(d, "logs", f"{t}.log"), "w") as f:
        for k in range(100):
            f.write(f"{ts(-5)} [{t}] working, step {k}\n")
print(sid)
