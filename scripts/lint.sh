#!/bin/sh
# What CI checks before the tests: formatting, clippy, docs, the crates'
# import direction, and the contract crate's module layers.
set -eu
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS='-D warnings' cargo doc --no-deps --workspace --locked --quiet
# bin -> orch-cli -> orch-readers -> orch-session (docs/architecture.md): the
# contract depends on neither the readers nor the commands, the readers not
# on the commands; dev-dependencies too, which cargo would let close a cycle.
refuse_deps() {
	tree=$(cargo tree --locked -p "$1" -e normal,build,dev --prefix none)
	bad=$(printf '%s\n' "$tree" | grep -E "^($2) " | head -n1)
	if [ -n "$bad" ]; then
		echo "lint: $1 must not depend on $bad (see docs/architecture.md)" >&2
		exit 1
	fi
}
refuse_deps orch-session 'orch-readers|orch-cli|orch'
refuse_deps orch-readers 'orch-cli|orch'
# Inside the contract its modules form layers (docs/architecture.md): no
# module uses one that uses it back, doc links included.
python3 scripts/module-cycles.py crates/session/src
