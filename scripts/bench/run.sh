#!/bin/sh
# Every benchmark of docs/performance.md in one command: installs what orch
# is compared against (Debian's GNU parallel and make, with apt, when
# missing), builds the release binaries, runs the comparisons side by side
# and writes the table of medians and ratios to stdout and into
# docs/performance.md.
#
# Usage: scripts/bench/run.sh [--quick] [--only dispatch,dag,barrier,claim,plan,monitor]
#                             [--no-write] [--keep]
#   --quick   smaller sizes and one round: a check in a few minutes, not the record
#
# Takes about 5 minutes in full on 2 cores (2 with --quick). Not a test:
# nothing here asserts.
set -eu
cd "$(dirname "$0")/../.."
need=""
for pair in parallel:parallel make:make python3:python3 flock:util-linux; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need="$need ${pair#*:}"
done
if [ -n "$need" ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "installing:$need" >&2
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi
cargo build --release --locked --quiet
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"
exec python3 scripts/bench/bench.py --bin "$BIN" "$@"
