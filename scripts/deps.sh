#!/bin/sh
# Installs, with Debian's apt, the programs the test suite drives for real
# and that a fresh machine may lack. Does nothing when they are present.
set -eu
need=""
for pair in flock:util-linux tmux:tmux; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need="$need ${pair#*:}"
done
[ -z "$need" ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "installing:$need" >&2
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
