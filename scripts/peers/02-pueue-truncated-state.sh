#!/usr/bin/env bash
# Scenario 2: pueue daemon restarted on a truncated state.json.
#
# Question: when state.json is damaged (cut to half its size, or to 0 bytes)
# while the daemon is down, is the queue lost on restart, and is an error shown?
#
# pueue is not packaged in Debian 12; install it once (about 7 minutes on
# 2 cores) with:  cargo install pueue --locked --root /opt/pueue
# This script looks for pueue/pueued in $PUEUE_BIN, /opt/pueue/bin, then PATH.
#
# Method: private HOME, config, data and socket dirs under a temp dir. Start
# pueued in the foreground (in the background of this shell, stderr to a log),
# add 4 tasks `sleep 100` with parallel limit 1 (1 running, 3 queued), shut the
# daemon down with `pueue shutdown`, check state.json, truncate it, start the
# daemon again and read `pueue status --json`. Done for two truncations:
# half size, and 0 bytes, plus an untouched control run.
set -u
for d in "${PUEUE_BIN:-}" /opt/pueue/bin "$HOME/.cargo/bin"; do
  [ -n "$d" ] && [ -x "$d/pueued" ] && { PATH="$d:$PATH"; break; }
done
command -v pueued >/dev/null && command -v pueue >/dev/null || {
  echo "RESULT: pueue not installed (not in Debian 12; cargo install pueue --locked --root /opt/pueue)"; exit 1; }
echo "version: $(pueue --version) / $(pueued --version)"

T=$(mktemp -d /tmp/peer-pueue.XXXXXX)
export HOME="$T/home" XDG_RUNTIME_DIR="$T/run" XDG_CONFIG_HOME="$T/home/.config" XDG_DATA_HOME="$T/home/.local/share"
mkdir -p "$HOME" "$T/run" "$T/data"
CFG="$T/pueue.yml"
export PUEUE_CONFIG_PATH="$CFG" NO_COLOR=1
cat > "$CFG" <<EOF
shared:
  pueue_directory: $T/data
  runtime_directory: $T/run
  use_unix_socket: true
  unix_socket_path: $T/run/pueue.sock
  pid_path: $T/run/pueue.pid
daemon:
  compress_state_file: false
EOF
DPID=""
cleanup() {
  if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
    pueue -c "$CFG" reset --force >/dev/null 2>&1
    pueue -c "$CFG" shutdown >/dev/null 2>&1
    for i in $(seq 1 50); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DPID" 2>/dev/null
  fi
  rm -rf "$T"
}
trap cleanup EXIT

wait_for() {   # wait_for <deadline-seconds> <shell condition>
  local dl=$(( $(date +%s) + $1 )); shift
  until eval "$@"; do [ "$(date +%s)" -ge "$dl" ] && return 1; sleep 0.1; done
}
P() { pueue -c "$CFG" "$@"; }
start_daemon() {  # $1 = log file
  pueued -c "$CFG" >"$1" 2>&1 &
  DPID=$!
  wait_for 15 'P status >/dev/null 2>&1' || { echo "RESULT: daemon did not come up"; cat "$1"; exit 1; }
}
stop_daemon() {
  P shutdown >/dev/null 2>&1
  wait_for 15 '! kill -0 '"$DPID"' 2>/dev/null' || kill -9 "$DPID"
  wait "$DPID" 2>/dev/null; DPID=""
}
# counts from `pueue status --json`: total tasks, queued tasks, group status
count() {
  P status --json 2>/dev/null | python3 -c '
import json,sys
s=json.load(sys.stdin)
t=s["tasks"].values()
st=lambda x: x["status"] if isinstance(x["status"],str) else next(iter(x["status"]))
print(len(s["tasks"]), sum(1 for x in t if st(x)=="Queued"), s["groups"]["default"]["status"])'
}
count_file() {  # number of tasks stored in a state.json, or "unparsable"
  python3 -c '
import json,sys
try: print(len(json.load(open(sys.argv[1]))["tasks"]))
except Exception as e: print("unparsable")' "$1"
}

summary=""
for mode in none half zero; do   # none = control, state.json left intact
  rm -rf "$T/data"; mkdir -p "$T/data"
  start_daemon "$T/d1-$mode.log"
  P parallel 1 >/dev/null
  for i in 1 2 3 4; do P add -- sleep 100 >/dev/null; done
  wait_for 10 '[ "$(count | cut -d" " -f2)" = 3 ]'
  read n_before q_before g_before < <(count)
  stop_daemon
  S="$T/data/state.json"
  size0=$(stat -c %s "$S"); tasks_in_file=$(count_file "$S")
  case $mode in half) truncate -s $((size0 / 2)) "$S";; zero) : > "$S";; esac
  size1=$(stat -c %s "$S")

  start_daemon "$T/d2-$mode.log"
  read n_after q_after g_after < <(count)
  size2=$(stat -c %s "$S"); tasks_in_file2=$(count_file "$S")
  warn=$(grep -ciE 'warn|error|fail' "$T/d2-$mode.log")
  echo "--- $mode: daemon log after restart (first lines, no backtrace):"; head -5 "$T/d2-$mode.log" | sed -E 's/\\x1b\[[0-9;]*m//g' 
  echo "--- $mode: pueue status after restart:"; P status
  # does any client command tell the user something went wrong?
  client_err=$(P status 2>&1 | grep -ciE 'warn|error|fail|corrupt|restor')
  stop_daemon
  line="[$mode] before: $n_before tasks ($q_before queued) in daemon, state.json $size0 B with $tasks_in_file tasks; file set to $size1 B; after restart: $n_after tasks ($q_after queued, group $g_after), daemon stderr warn/error lines=$warn, client warnings=$client_err, state.json rewritten to $size2 B with $tasks_in_file2 tasks"
  echo "$line"
  summary="$summary $line;"
done
echo "RESULT:$summary"
