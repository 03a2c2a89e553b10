#!/bin/sh
# Every benchmark of docs/performance.md in one command: installs what orch
# is compared against (Debian's GNU parallel and make, with apt, when
# missing) and the real claude CLI, builds the release binaries, runs the
# comparisons side by side and writes the table of medians and ratios to
# stdout and into docs/performance.md.
#
# Usage: scripts/bench/run.sh [--quick] [--only dispatch,dag,barrier,claim,plan,monitor,claude]
#                             [--no-write] [--keep]
#   --quick   smaller sizes and one round: a check in a few minutes, not the record
#
# Takes about 5 minutes in full on 2 cores (2 with --quick). Not a test:
# nothing here asserts.
set -eu
cd "$(dirname "$0")/../.."
# What the tests drive (and the claude CLI), plus the peers compared with.
scripts/deps.sh parallel:parallel make:make
cargo build --release --locked --quiet
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"
exec python3 scripts/bench/bench.py --bin "$BIN" "$@"
