#!/usr/bin/env bash
# Scenario 1: GNU parallel --joblog/--resume after the dispatcher is SIGKILLed
# while one job is still running as an orphan.
#
# Question: does `parallel --resume` start the still-running job a second time,
# so that two runs of the same job overlap?
#
# Method: job 1 of 4 runs LONG seconds, jobs 2-4 are short. Every job appends
# "start <job> <pid> <epoch-ns>" and "end <job> <pid> <epoch-ns>" to a journal.
# Once jobs 2-4 are in the joblog and job 1 has started, kill -9 the parallel
# (perl) process, check that job 1's process is still alive (orphan), then rerun
# the exact same command with --resume and compare the journal intervals.
set -u
LONG=${LONG:-12}
command -v parallel >/dev/null || { echo "RESULT: parallel not installed"; exit 1; }
echo "version: $(parallel --version | head -1)"

T=$(mktemp -d /tmp/peer-par-resume.XXXXXX)
PAR_PID=""
cleanup() {
  [ -n "$PAR_PID" ] && kill -9 "$PAR_PID" 2>/dev/null
  # kill any job processes we started (identified by our private temp dir)
  for p in $(pgrep -f "$T/job.sh" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
cd "$T"
export HOME="$T"   # parallel writes ~/.parallel; keep it private

cat > job.sh <<EOF
#!/usr/bin/env bash
n=\$1
echo "start \$n \$\$ \$(date +%s%N)" >> "$T/journal"
if [ "\$n" = 1 ]; then sleep $LONG; else sleep 0.2; fi
echo "end \$n \$\$ \$(date +%s%N)" >> "$T/journal"
EOF
chmod +x job.sh
: > journal

# wait_for <deadline-seconds> <shell condition>
wait_for() {
  local dl=$(( $(date +%s) + $1 )); shift
  until eval "$@"; do
    [ "$(date +%s)" -ge "$dl" ] && return 1
    sleep 0.1
  done
}

# --- first run: killed with SIGKILL -------------------------------------------
parallel --joblog "$T/J" -j2 "$T/job.sh" ::: 1 2 3 4 >"$T/out1" 2>"$T/err1" &
PAR_PID=$!
# jobs 2,3,4 completed (3 joblog lines + header) and job 1 started
if ! wait_for 30 '[ "$( { wc -l < "$T/J"; } 2>/dev/null || echo 0)" -ge 4 ] && grep -q "^start 1 " "$T/journal"'; then
  echo "RESULT: setup failed: first run did not reach expected state"; exit 1
fi
kill -9 "$PAR_PID"; wait "$PAR_PID" 2>/dev/null; PAR_PID=""
ORPHAN=$(awk '$1=="start" && $2==1 {print $3; exit}' journal)
if kill -0 "$ORPHAN" 2>/dev/null; then orphan_alive=yes; else orphan_alive=no; fi
echo "joblog after kill -9:"; cat J
echo "orphan job1 pid=$ORPHAN alive=$orphan_alive ppid=$(ps -o ppid= -p "$ORPHAN" 2>/dev/null | tr -d ' ')"

# --- second run: --resume, immediately ----------------------------------------
parallel --joblog "$T/J" --resume -j2 "$T/job.sh" ::: 1 2 3 4 >"$T/out2" 2>"$T/err2"
rc2=$?
# let the orphan finish so its "end" line is in the journal
wait_for $((LONG + 10)) '[ "$(grep -c "^end 1 " "$T/journal")" -ge 2 ] || ! kill -0 '"$ORPHAN"' 2>/dev/null'
echo "journal:"; cat journal
echo "joblog after resume:"; cat J
[ -s err2 ] && { echo "stderr of resume:"; cat err2; }

starts1=$(grep -c '^start 1 ' journal)
starts_other=$(grep -c -E '^start [234] ' journal)
# overlap check for job 1: max(start) < min(end) over two distinct pids
read overlap overlap_ms < <(awk '
  $2==1 && $1=="start" {s[$3]=$4}
  $2==1 && $1=="end"   {e[$3]=$4}
  END {
    n=0; for (p in s) {pid[n++]=p}
    if (n<2) {print "no 0"; exit}
    a=pid[0]; b=pid[1]
    lo = (s[a]>s[b]) ? s[a] : s[b]
    hi = (e[a]<e[b]) ? e[a] : e[b]
    if (hi > lo) printf "yes %d\n", (hi-lo)/1000000; else print "no 0"
  }' journal)

echo "RESULT: resume rc=$rc2; job1 started $starts1 times (orphan pid $ORPHAN alive at resume=$orphan_alive); jobs 2-4 started $starts_other times total (3 = not rerun); two runs of job1 overlapped=$overlap for ${overlap_ms} ms"
