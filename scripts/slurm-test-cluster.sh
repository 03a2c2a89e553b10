#!/bin/sh
# A private one-node Slurm cluster on this machine, for the real-Slurm test
# of `orch-worker --slurm` (tests/e2e/slurm.rs) and for trying it by hand.
#
#   scripts/slurm-test-cluster.sh start   # install if missing, (re)start, wait for the node
#   scripts/slurm-test-cluster.sh stop    # cancel its jobs, stop its daemons
#   scripts/slurm-test-cluster.sh status
#
# Everything lives in one directory (ORCH_SLURM_DIR, default
# /var/lib/orch-slurm-test): its own munge key and socket, slurm.conf,
# state, spool, pid files and logs. Nothing in /etc is changed, and a
# site's own munged or Slurm daemons are left alone: the cluster listens on
# its own ports (ORCH_SLURM_PORT and the next one, default 16817-16818).
# Point Slurm's commands at it with the line `start` prints last:
#
#   export SLURM_CONF=/var/lib/orch-slurm-test/slurm.conf
#
# The node is this host (`hostname -s`) with 4 CPUs whatever `nproc` says
# (SlurmdParameters=config_overrides), so 4 one-CPU array tasks run at once
# on a 2-core machine. Processes are tracked by proctrack/linuxproc: no
# cgroups needed. `start` on a running cluster stops it and starts afresh;
# `stop` leaves no daemon and no job behind. Needs root (the daemons run as
# root, munged as the munge user).
set -eu

DIR=${ORCH_SLURM_DIR:-/var/lib/orch-slurm-test}
PORT=${ORCH_SLURM_PORT:-16817}
CPUS=${ORCH_SLURM_CPUS:-4}
PATH=$PATH:/usr/sbin:/sbin
export PATH
export SLURM_CONF="$DIR/slurm.conf"

say() { echo "slurm-test-cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }

# Waits until the command succeeds, at most $1 seconds.
wait_for() {
    limit=$1; shift
    i=0
    while ! "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -gt $((limit * 10)) ] && return 1
        sleep 0.1
    done
}

# Whether process $1 has exited: gone, or a zombie (the parent of a
# daemon's first fork may be an init that does not reap).
not_alive() {
    [ -r "/proc/$1/stat" ] || return 0
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [ -z "$state" ] || [ "$state" = Z ] || [ "$state" = X ]
}

# Whether process $1 runs program $2. Debian installs the daemons as
# alternatives: /usr/sbin/slurmctld -> slurmctld-wlm, so compare the files.
runs() {
    exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
    want=$(command -v "$2") || return 1
    [ "$exe" = "$(readlink -f "$want")" ]
}

# The pid in pid file $1 if that process lives and runs program $2.
live_pid() {
    [ -f "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    not_alive "$pid" && return 1
    runs "$pid" "$2" || return 1
    echo "$pid"
}

# Stops the daemon of pid file $1 running program $2: SIGTERM, then SIGKILL.
stop_daemon() {
    pid=$(live_pid "$1" "$2") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for 30 not_alive "$pid"; then
        say "$2 (pid $pid) ignored SIGTERM for 30s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 10 not_alive "$pid" || die "$2 (pid $pid) does not die"
    fi
    rm -f "$1"
}

# Job step daemons of this cluster that outlived slurmd (their spool
# directory is ours): killed with their jobs' processes.
kill_stepds() {
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        runs "$pid" slurmstepd || continue
        not_alive "$pid" && continue
        if tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qx "SLURM_CONF=$SLURM_CONF" ||
            ls -l "$p/cwd" 2>/dev/null | grep -q -- "-> $DIR/"; then
            say "killing leftover slurmstepd $pid and its job"
            pkill -KILL -P "$pid" 2>/dev/null || true
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

no_jobs() { [ -z "$(squeue -h -o %A 2>/dev/null)" ] && squeue -h >/dev/null 2>&1; }

do_stop() {
    if live_pid "$DIR/slurmctld.pid" slurmctld >/dev/null; then
        jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
        if [ -n "$jobs" ]; then
            say "cancelling jobs: $jobs"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            # KillWait (10s) between SIGTERM and SIGKILL, then the epilogue.
            wait_for 60 no_jobs || say "jobs still listed after 60s: $(squeue -h 2>&1 | tr '\n' ';')"
        fi
    fi
    stop_daemon "$DIR/slurmd.pid" slurmd
    stop_daemon "$DIR/slurmctld.pid" slurmctld
    kill_stepds
    stop_daemon "$DIR/munged.pid" munged
}

install_if_missing() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
        command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed; run as root to install them"
    say "installing slurm-wlm and munge (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {
    host=$(hostname -s)
    mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    mem_mb=$((mem_kb / 1024 - 256))
    cat >"$SLURM_CONF" <<EOF
# Written by scripts/slurm-test-cluster.sh: a private one-node test cluster.
ClusterName=orchtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# The node as configured below, not as detected: 4 CPUs on a 2-core host.
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=10
MinJobAge=10
PlugStackConfig=$DIR/plugstack.conf
NodeName=$host NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN
PartitionName=orchtest Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    : >"$DIR/plugstack.conf"
}

node_idle() {
    state=$(sinfo -h -N -o %T 2>/dev/null) || return 1
    [ "$state" = idle ]
}

do_start() {
    install_if_missing
    do_stop
    # Only ever wipe a directory this script made.
    if [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -f "$DIR/.orch-slurm-test" ]; then
        die "$DIR exists and was not made by this script; set ORCH_SLURM_DIR to another place"
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"
    : >"$DIR/.orch-slurm-test"
    chmod 0755 "$DIR"
    mkdir -p "$DIR/ctld" "$DIR/spool"
    install -d -o munge -g munge -m 0755 "$DIR/munge"
    # A fresh key of our own: the site's key (if any) is not touched.
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 2>/dev/null
    chown munge:munge "$DIR/munge/munge.key"
    chmod 0400 "$DIR/munge/munge.key"
    write_conf
    runuser -u munge -- munged \
        --socket="$DIR/munge/munge.socket" \
        --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/munge/munged.log" \
        --seed-file="$DIR/munge/munged.seed" ||
        die "munged did not start; see $DIR/munge/munged.log"
    ln -sf munge/munged.pid "$DIR/munged.pid"
    wait_for 10 test -S "$DIR/munge/munge.socket" || die "munged made no socket"
    slurmctld || die "slurmctld did not start; see $DIR/slurmctld.log"
    wait_for 30 scontrol ping || die "slurmctld does not answer; see $DIR/slurmctld.log"
    slurmd || die "slurmd did not start; see $DIR/slurmd.log"
    if ! wait_for 60 node_idle; then
        sinfo -N -l >&2 || true
        die "the node is not idle after 60s; see $DIR/slurmd.log and $DIR/slurmctld.log"
    fi
    say "node $(hostname -s) idle with $CPUS CPUs"
    echo "SLURM_CONF=$SLURM_CONF"
}

case "${1:-}" in
start) do_start ;;
stop) do_stop ;;
status)
    for d in munged slurmctld slurmd; do
        if pid=$(live_pid "$DIR/$d.pid" "$d"); then echo "$d: running (pid $pid)"; else echo "$d: stopped"; fi
    done
    if live_pid "$DIR/slurmctld.pid" slurmctld >/dev/null; then
        sinfo -N -l || true
        squeue || true
    fi
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
