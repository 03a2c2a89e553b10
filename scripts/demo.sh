#!/bin/sh
# The first run: builds and installs orch (cargo's progress shown), copies
# docs/examples/demo.toml into a scratch git repository, plans it there and
# runs it with 4 workers, lists the results, and ends with the commands to
# look around. This clone is never touched: no refs, files or worktrees.
#
# Usage: scripts/demo.sh
#   ORCH_HOME  the root of the demo's sessions
#              (default: ${XDG_STATE_HOME:-~/.local/state}/orch-demo; kept
#              between runs, so the printed commands keep working)
#   PREFIX     where to install (default: ~/.local, binaries in ~/.local/bin)
set -eu
clone=$(cd "$(dirname "$0")/.." && pwd)
user_path=$PATH
PREFIX="${PREFIX:-$HOME/.local}"
ORCH_HOME="${ORCH_HOME:-${XDG_STATE_HOME:-$HOME/.local/state}/orch-demo}"
export ORCH_HOME
repo="$ORCH_HOME/demo-repo"

# Bold headings on a terminal; plain ASCII on a pipe.
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
    bold=$(printf '\033[1m') plain=$(printf '\033[0m')
else
    bold='' plain=''
fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
die() { echo "demo: $*" >&2; exit 2; }

for tool in cargo git; do
    command -v "$tool" > /dev/null ||
        die "$tool is not installed (README.md: Set up on a fresh machine)"
done

echo "orch demo"
echo "  installs into  $PREFIX/bin"
echo "  sessions in    $ORCH_HOME   (ORCH_HOME)"
echo "  plans in       $repo   (a scratch repository; this clone stays untouched)"

step "1/4 build and install: scripts/install.sh $PREFIX   (the first build takes a few minutes)"
"$clone/scripts/install.sh" "$PREFIX"
PATH="$PREFIX/bin:$PATH"

step "2/4 scratch repository: $repo"
mkdir -p "$repo"
cp "$clone/docs/examples/demo.toml" "$repo/demo.toml"
# A throwaway identity, so that a fresh machine without one can commit.
g() {
    git -C "$repo" -c user.name=orch-demo -c user.email=orch-demo@localhost \
        -c commit.gpgsign=false -c init.defaultBranch=main "$@"
}
[ -d "$repo/.git" ] || g init --quiet
g add demo.toml
g diff --cached --quiet || g commit --quiet -m "demo plan"
echo "demo.toml from docs/examples, committed: $(g log -1 --format='%h %s')"

step "3/4 orch-plan demo.toml   (checks the plan, prints its analysis, creates the session)"
plan_out=$(cd "$repo" && orch-plan demo.toml)
printf '%s\n' "$plan_out"
id=$(printf '%s\n' "$plan_out" | tail -n 1)
dir="$ORCH_HOME/session-$id"

step "4/4 orch-worker --session $id --parallel 4"
rc=0
orch-worker --session "$id" --parallel 4 || rc=$?

step "results: orch-monitor tasks --session $id"
orch-monitor tasks --session "$id" || :
# Result files are pretty-printed JSON, one key a line.
field() { sed -n "s/^  \"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" "$2"; }
for f in "$dir"/results/*.json; do
    [ -e "$f" ] || continue
    [ "$(field attempt "$f")" -gt 1 ] || continue
    task=$(field task "$f")
    echo
    echo "  $task failed its first attempt and was retried (logs/$task.log):"
    grep -v -e '--- started attempt' "$dir/logs/$task.log" | cut -d ' ' -f 2- | sed 's/^/    /'
done

step "look around"
echo "# in another shell, these work as they are:"
on_path=''
case ":$user_path:" in
    *":$PREFIX/bin:"*) on_path=yes ;;
esac
case "$ORCH_HOME" in
    *[!A-Za-z0-9_./-]*) shown="'$(printf '%s' "$ORCH_HOME" | sed "s/'/'\\\\''/g")'" ;;
    *) shown=$ORCH_HOME ;;
esac
# $PATH is printed as it is, for the shell that reads the line.
# shellcheck disable=SC2016
[ -n "$on_path" ] || printf 'export PATH="%s/bin:$PATH"\n' "$PREFIX"
echo "export ORCH_HOME=$shown"
echo "orch-monitor -s demo     # the session: progress, workers, task logs, git"
echo "orch-aggregate           # the report: speed-up, critical path, retries, next step"
echo "cat \"\$ORCH_HOME/session-$id/logs/run.log\"   # every event, one a line"
exit "$rc"
