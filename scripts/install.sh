#!/bin/sh
# Builds orch in release mode and installs the six binaries into
# $PREFIX/bin (default: ~/.local), with bash, zsh and fish completions and
# man pages under $PREFIX/share. Usage: scripts/install.sh [PREFIX]
set -eu
cd "$(dirname "$0")/.."
PREFIX="${1:-${PREFIX:-$HOME/.local}}"
cargo install --locked --path . --root "$PREFIX" --force
share="$PREFIX/share"
mkdir -p "$share/bash-completion/completions" "$share/zsh/site-functions" \
    "$share/fish/vendor_completions.d" "$share/man/man1"
bins="orch-plan orch-claim orch-worker orch-sync orch-aggregate orch-monitor"
for b in $bins; do
    "$PREFIX/bin/$b" --completions bash > "$share/bash-completion/completions/$b"
    "$PREFIX/bin/$b" --completions zsh > "$share/zsh/site-functions/_$b"
    "$PREFIX/bin/$b" --completions fish > "$share/fish/vendor_completions.d/$b.fish"
    "$PREFIX/bin/$b" --man > "$share/man/man1/$b.1"
done
echo "installed into $PREFIX/bin: $bins"
echo "completions and man pages under $share (man orch-worker)"
case ":$PATH:" in
    *":$PREFIX/bin:"*) ;;
    *) echo "note: add $PREFIX/bin to your PATH" ;;
esac
