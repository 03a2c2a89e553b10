#!/usr/bin/env python3
"""Barrier release latency of `orch-sync`: the time from the last arrival at
a checkpoint to every waiter returning, over ROUNDS rounds with WAITERS
waiters, with inotify and with the polling fallback.

Each round: a coordinator runs `orch-sync wait cpN --expect a0..a7`, WAITERS
agents run `orch-sync wait cpN --proceed`; once they all wait, the first
WAITERS-1 arrivals are made, then the last one is written (an atomic rename,
as `orch-sync arrive` does) and timed until the last waiter has printed
that it may proceed (released) and until the last one has exited.

`floor()` measures the same two moments for the smallest possible waiter:
a forked process blocked in read(2) on a raw inotify descriptor. Its exit
includes closing that descriptor, which the kernel makes wait for the
destruction of the watch (fsnotify's SRCU grace period): on the machine
of docs/performance.md that, not the wake-up, is the tail.

Usage: scripts/bench/barrier.py [--rounds 200] [--waiters 8] [--bin DIR]
"""
import argparse
import ctypes
import json
import os
import select
import struct
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


def run(mode, rounds, waiters, bindir, root, with_wake=False):
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
    woke = []
    for r in range(rounds):
        cp = f"cp{r}"
        coord = subprocess.Popen([sync, "wait", cp, "--expect", ",".join(agents)] + extra,
                                 env=env, stdout=subprocess.DEVNULL)
        procs = [subprocess.Popen([sync, "wait", cp, "--proceed"] + extra, env=env,
                                  stdout=subprocess.PIPE) for _ in agents]
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
        # One thread watches every waiter: its output (the line it prints
        # once released) and its exit (a pidfd), so no reaper threads
        # contend for the interpreter lock in the figure.
        told = {}
        pipes = {p.stdout.fileno(): p.pid for p in procs}
        pidfds = {os.pidfd_open(p.pid): p.pid for p in procs}
        while pipes or pidfds:
            ready, _, _ = select.select(list(pipes) + list(pidfds), [], [])
            now = time.monotonic()
            for fd in ready:
                if fd in pipes:
                    told.setdefault(pipes[fd], now)
                    if not os.read(fd, 4096):
                        del pipes[fd]
                else:
                    ends[pidfds.pop(fd)] = now
                    os.close(fd)
        for p in procs:
            p.wait()
            p.stdout.close()
        coord.wait()
        woke.append((max(told.values()) - t0) * 1000)
        lat.append((max(ends.values()) - t0) * 1000)
    if with_wake:
        return lat, woke
    return lat


def floor(rounds, root):
    """(wake, exit) latencies in ms of a minimal raw-inotify waiter: from a
    rename into a watched directory to the waiter returning from read(2),
    and to its exit being seen."""
    libc = ctypes.CDLL(None, use_errno=True)
    d = os.path.join(root, "raw")
    os.makedirs(d, exist_ok=True)
    wake, gone = [], []
    for r in range(rounds):
        ready_r, ready_w = os.pipe()
        stamp_r, stamp_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            fd = libc.inotify_init1(0)
            libc.inotify_add_watch(fd, d.encode(), 0x80 | 0x100)  # IN_MOVED_TO | IN_CREATE
            os.write(ready_w, b"x")
            os.read(fd, 4096)
            os.write(stamp_w, struct.pack("d", time.monotonic()))
            os._exit(0)
        os.read(ready_r, 1)
        time.sleep(0.02)
        open(os.path.join(d, ".t"), "w").close()
        t0 = time.monotonic()
        os.rename(os.path.join(d, ".t"), os.path.join(d, f"f{r}"))
        os.waitpid(pid, 0)
        t1 = time.monotonic()
        woke = struct.unpack("d", os.read(stamp_r, 8))[0]
        wake.append((woke - t0) * 1000)
        gone.append((t1 - t0) * 1000)
        for f in (ready_r, ready_w, stamp_r, stamp_w):
            os.close(f)
    return wake, gone


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
    print(f"barrier latency: last arrival -> every one of {a.waiters} waiters released / exited, "
          f"{a.rounds} rounds")
    line = lambda name, v: print(f"{name:26} p50 {pct(v, 50):7.2f} ms   p99 {pct(v, 99):7.2f} ms   "
                                 f"max {max(v):7.2f} ms")
    for mode in ("inotify", "poll"):
        with tempfile.TemporaryDirectory(prefix="orch-barrier-") as root:
            lat, woke = run(mode, a.rounds, a.waiters, bindir, root, with_wake=True)
        line(f"{mode}, released", woke)
        line(f"{mode}, exited", lat)
    with tempfile.TemporaryDirectory(prefix="orch-barrier-") as root:
        wake, gone = floor(a.rounds, root)
    line("raw inotify, woken", wake)
    line("raw inotify, exited", gone)
    return 0


if __name__ == "__main__":
    sys.exit(main())
