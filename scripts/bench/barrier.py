#!/usr/bin/env python3
"""Barrier release latency of `orch-sync`: the time from the last arrival at
a checkpoint to every waiter returning, over ROUNDS rounds with WAITERS
waiters, with inotify and with the polling fallback.

Each round: a coordinator runs `orch-sync wait cpN --expect a0..a7`, WAITERS
agents run `orch-sync wait cpN --proceed`; once they all wait, the first
WAITERS-1 arrivals are made, then the last one is written (an atomic rename,
as `orch-sync arrive` does) and timed until the last waiter exits.

Usage: scripts/bench/barrier.py [--rounds 200] [--waiters 8] [--bin DIR]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def pct(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def watching(pid):
    """Whether the process has an inotify descriptor open (its watch is set)."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if "inotify" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                return True
    except OSError:
        pass
    return False


def run(mode, rounds, waiters, bindir, root):
    env = dict(os.environ, ORCH_HOME=root)
    sync = os.path.join(bindir, "orch-sync")
    plan = os.path.join(root, "plan.toml")
    with open(plan, "w") as f:
        f.write('name = "barrier"\n[[task]]\nid = "t"\ncommand = "true"\n')
    sid = subprocess.run([os.path.join(bindir, "orch-plan"), plan], env=env, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    env["ORCH_SESSION"] = sid
    sdir = os.path.join(root, f"session-{sid}")
    extra = ["--poll"] if mode == "poll" else []
    agents = [f"a{i}" for i in range(waiters)]
    lat = []
    for r in range(rounds):
        cp = f"cp{r}"
        coord = subprocess.Popen([sync, "wait", cp, "--expect", ",".join(agents)] + extra,
                                 env=env, stdout=subprocess.DEVNULL)
        procs = [subprocess.Popen([sync, "wait", cp, "--proceed"] + extra, env=env,
                                  stdout=subprocess.DEVNULL) for _ in agents]
        for a in agents[:-1]:
            subprocess.run([sync, "arrive", cp, "--as", a], env=env, check=True, stdout=subprocess.DEVNULL)
        # Let every waiter set up its watch before the last arrival.
        deadline = time.monotonic() + 5
        while mode == "inotify" and not all(watching(p.pid) for p in procs + [coord]):
            if time.monotonic() > deadline:
                break
            time.sleep(0.001)
        time.sleep(0.05)
        ends = {}
        cpdir = os.path.join(sdir, "checkpoints", cp)
        last = agents[-1]
        tmp = os.path.join(cpdir, f".{last}.ready.bench")
        with open(tmp, "w") as f:
            json.dump({"agent": last, "time": "", "pid": os.getpid(), "host": "bench"}, f)
        t0 = time.monotonic()
        os.rename(tmp, os.path.join(cpdir, f"{last}.ready"))
        # One thread reaps every child as it exits (wait4 on any): no
        # reaper threads contending for the interpreter lock in the figure.
        waiting = {p.pid for p in procs} | {coord.pid}
        while waiting:
            pid, status, _ = os.wait4(-1, 0)
            now = time.monotonic()
            if pid in waiting:
                waiting.discard(pid)
                ends[pid] = now
                for p in procs + [coord]:
                    if p.pid == pid:
                        p.returncode = os.waitstatus_to_exitcode(status)
        ends.pop(coord.pid, None)
        lat.append((max(ends.values()) - t0) * 1000)
    return lat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--waiters", type=int, default=8)
    ap.add_argument("--bin", default=None)
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    bindir = a.bin
    if bindir is None:
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=repo, check=True)
        bindir = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(repo, "target")), "release")
    print(f"barrier latency: last arrival -> every one of {a.waiters} waiters returned, {a.rounds} rounds")
    for mode in ("inotify", "poll"):
        with tempfile.TemporaryDirectory(prefix="orch-barrier-") as root:
            lat = run(mode, a.rounds, a.waiters, bindir, root)
        print(f"{mode:8} p50 {pct(lat, 50):7.2f} ms   p99 {pct(lat, 99):7.2f} ms   "
              f"mean {statistics.mean(lat):7.2f} ms   max {max(lat):7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
