#!/bin/sh
# Builds orch in release mode and installs the six binaries into
# $PREFIX/bin (default: ~/.local). Usage: scripts/install.sh [PREFIX]
set -eu
cd "$(dirname "$0")/.."
PREFIX="${1:-${PREFIX:-$HOME/.local}}"
cargo install --locked --quiet --path . --root "$PREFIX" --force
echo "installed into $PREFIX/bin:"
for b in orch-plan orch-claim orch-worker orch-sync orch-aggregate orch-monitor; do
    echo "  $PREFIX/bin/$b"
done
case ":$PATH:" in
    *":$PREFIX/bin:"*) ;;
    *) echo "note: add $PREFIX/bin to your PATH" ;;
esac
