#!/bin/sh
# Builds and installs orch, then plans and runs the demo pipeline with 4
# workers in a fresh orchestration root, and lists the results.
# Usage: scripts/demo.sh            (root: a new temp dir; ORCH_HOME to choose)
set -eu
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-$HOME/.local}"
scripts/install.sh "$PREFIX"
PATH="$PREFIX/bin:$PATH"
export ORCH_HOME="${ORCH_HOME:-$(mktemp -d /tmp/orch-demo.XXXXXX)}"
echo
echo "== orch-plan docs/examples/demo.toml   (root: $ORCH_HOME)"
id=$(orch-plan docs/examples/demo.toml | tee /dev/stderr | tail -n 1)
echo
echo "== orch-worker --session $id --parallel 4"
orch-worker --session "$id" --parallel 4
echo
echo "== results"
dir="$ORCH_HOME/session-$id"
for f in "$dir"/results/*.json; do
    task=$(sed -n 's/^  "task": "\(.*\)",$/\1/p' "$f")
    status=$(sed -n 's/^  "status": "\(.*\)",$/\1/p' "$f")
    duration=$(sed -n 's/^  "duration": \([0-9.]*\),\{0,1\}$/\1/p' "$f")
    worker=$(sed -n 's/^  "worker": "\(.*\)",$/\1/p' "$f")
    printf '  %-8s %-8s %6ss  %s\n' "$task" "$status" "$duration" "$worker"
done
echo
echo "Logs:    tail -f $dir/logs/run.log"
echo "Summary: cat $dir/status/orchestration.yaml"
