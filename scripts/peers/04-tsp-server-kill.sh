#!/usr/bin/env bash
# Scenario 4: task-spooler (tsp) server killed with SIGKILL while jobs are queued.
#
# Question: after `kill -9` of the tsp server, are the queued jobs still known
# to tsp, and do they eventually run?
#
# Method: private TS_SOCKET/TMPDIR/HOME, 1 slot. Queue `sleep 100` (runs) and
# three jobs behind it that each append a line to a marker file. Find the
# server as the process holding the *listening* unix socket at $TS_SOCKET,
# kill -9 it, then run `tsp` (list; this auto-starts a new server) and wait
# a few seconds to see whether the queued jobs show up or run. Also check
# whether the orphaned `sleep 100` is still running and whether a new job is
# started next to it (slot limit 1).
set -u
command -v tsp >/dev/null || { echo "RESULT: tsp not installed"; exit 1; }
VER=$(dpkg-query -W -f='${Version}' task-spooler 2>/dev/null)
echo "version: $(tsp -V 2>&1 | head -1) (Debian package $VER)"

T=$(mktemp -d /tmp/peer-tsp.XXXXXX)
export TS_SOCKET="$T/sock" TMPDIR="$T" HOME="$T" TS_SLOTS=1
unset TS_MAXFINISHED TS_ONFINISH TS_ENV
SLEEP_PIDS=""
cleanup() {
  tsp -K >/dev/null 2>&1
  # the orphaned job and its tsp client (found by our private temp dir / marker)
  for p in $SLEEP_PIDS; do kill -9 "$p" 2>/dev/null; done
  # the server may still be writing into $T for a moment after -K
  local i; for i in $(seq 1 50); do rm -rf "$T" 2>/dev/null && break; sleep 0.1; done
}
trap cleanup EXIT

wait_for() {   # wait_for <deadline-seconds> <shell condition>
  local dl=$(( $(date +%s) + $1 )); shift
  until eval "$@"; do [ "$(date +%s)" -ge "$dl" ] && return 1; sleep 0.1; done
}
server_pid() {  # pid holding the listening socket at $TS_SOCKET
  local ino f
  ino=$(awk -v p="$TS_SOCKET" '$NF==p && $6=="01" {print $7; exit}' /proc/net/unix)
  [ -n "$ino" ] || return 1
  for f in /proc/[0-9]*/fd/*; do
    [ "$(readlink "$f" 2>/dev/null)" = "socket:[$ino]" ] && { f=${f#/proc/}; echo "${f%%/*}"; return 0; }
  done
  return 1
}

tsp -S 1 >/dev/null
tsp sleep 100 >/dev/null                 # job 0 (runs)
for i in 1 2 3; do tsp sh -c "echo queued-$i >> $T/ran" >/dev/null; done
wait_for 10 'tsp | grep -q "running.*sleep 100"' || { echo "RESULT: setup failed"; exit 1; }
echo "before kill:"; tsp
queued_before=$(tsp | grep -c ' queued ')
SLEEP_PIDS=$(pgrep -x sleep -P "$(pgrep -f '^tsp sleep 100$' | tr '\n' ',' | sed 's/,$//')" 2>/dev/null)
QCLIENTS=$(pgrep -f "^tsp sh -c echo queued-[0-9] >> $T/ran")
SPID=$(server_pid) || { echo "RESULT: could not find tsp server"; exit 1; }
echo "server pid=$SPID, job sleep pid(s)=$SLEEP_PIDS"

kill -9 "$SPID"
wait_for 5 '! kill -0 '"$SPID"' 2>/dev/null || [ "$(ps -o stat= -p '"$SPID"')" = Z ]'

echo "after kill -9, tsp (list):"
tsp > "$T/list1" 2>&1; rc_list=$?
cat "$T/list1"
queued_after=$(grep -c ' queued ' "$T/list1")
known_after=$(( $(grep -c '' "$T/list1") - 1 ))
# give the new server time; any surviving queued job would run within this window
# since nothing is running in the new server
wait_for 5 '[ -s "$T/ran" ]'
ran=$( { grep -c '' "$T/ran"; } 2>/dev/null || echo 0)
qalive=0; for p in $QCLIENTS; do st=$(ps -o stat= -p "$p" 2>/dev/null); [ -n "$st" ] && [ "${st#Z}" = "$st" ] && qalive=$((qalive+1)); done
orphan=no; for p in $SLEEP_PIDS; do kill -0 "$p" 2>/dev/null && orphan=yes; done

# Does the new server start a job while the orphaned sleep still holds the only slot?
tsp sh -c "echo new-job >> $T/ran" >/dev/null
if wait_for 10 'grep -q new-job "$T/ran" 2>/dev/null'; then newran=yes; else newran=no; fi
echo "final list:"; tsp

echo "RESULT: queued before kill=$queued_before; after kill -9 + restart: tsp list rc=$rc_list, jobs known=$known_after, queued=$queued_after; queued jobs that ran within 5 s=$ran/3; their waiting tsp client processes still alive=$qalive/$(echo $QCLIENTS | wc -w); orphaned 'sleep 100' still running=$orphan; new job started beside the orphan despite 1 slot=$newran"
