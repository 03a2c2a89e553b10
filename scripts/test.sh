#!/bin/sh
# Runs the whole test suite: unit tests of every crate and the end-to-end
# tests of the built binaries, after installing what they drive (apt).
# Long scenarios (real cron, Slurm, chaos) run only with ORCH_LONG_TESTS=1.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
exec cargo test --workspace --locked "$@"
