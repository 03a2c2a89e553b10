#!/bin/sh
# What CI checks before the tests: formatting, clippy, docs.
set -eu
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS='-D warnings' cargo doc --no-deps --workspace --locked --quiet
