#!/bin/sh
# Installs the crontab line that tops a session up to N workers every 10
# minutes (or removes it with --uninstall). The line uses absolute paths,
# sets PATH and ORCH_HOME, names the session by name (stable across
# re-plans), logs to <root>/cron-<name>.log, and relies on orch's own tick
# lock, not flock(1).
#
# Usage: scripts/install-cron.sh SESSION [N] [--schedule '*/10 * * * *'] [--until TIME] [--uninstall]
set -eu
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
session=$1; shift
n=0; schedule='*/10 * * * *'; until=''; uninstall=0
case "${1:-}" in [0-9]*) n=$1; shift ;; esac
while [ $# -gt 0 ]; do
    case "$1" in
        --schedule) schedule=$2; shift 2 ;;
        --until) until=$2; shift 2 ;;
        --uninstall) uninstall=1; shift ;;
        *) usage ;;
    esac
done
worker=$(command -v orch-worker || true)
[ -n "$worker" ] || { echo "orch-worker is not on PATH (run scripts/install.sh first)" >&2; exit 1; }
set -- --session "$session" --print-crontab --schedule "$schedule"
[ "$n" -gt 0 ] && set -- "$@" --parallel "$n"
[ -n "$until" ] && set -- "$@" --until "$until"
line=$("$worker" "$@")
marker="# ${line##*# }"
current=$(crontab -l 2>/dev/null || true)
others=$(printf '%s\n' "$current" | grep -vF "$marker" || true)
if [ "$uninstall" = 1 ]; then
    printf '%s\n' "$others" | sed '/^$/d' | crontab -
    echo "removed: $marker"
else
    { printf '%s\n' "$others" | sed '/^$/d'; printf '%s\n' "$line"; } | crontab -
    echo "installed: $line"
fi
