#!/bin/sh
# Installs what the test suite drives for real and a fresh machine may
# lack: programs from Debian's apt, and the real Claude Code CLI from npm
# (into target/claude-code; tests point it at our loopback stand-in of the
# Messages API, scripts/anthropic-standin.py). Does nothing when they are
# present.
#
# Usage: scripts/deps.sh [COMMAND:PACKAGE ...]   also these (the benchmarks
#                                                 add parallel:parallel make:make)
set -eu
cd "$(dirname "$0")/.."
need=""
pairs="flock:util-linux tmux:tmux python3:python3 git:git $*"
# The long scenarios drive a real cron daemon and a real one-node Slurm
# cluster (scripts/slurm-test-cluster.sh; the daemons live in /usr/sbin).
[ -n "${ORCH_LONG_TESTS:-}" ] && pairs="$pairs cron:cron unshare:util-linux sbatch:slurm-wlm slurmctld:slurm-wlm slurmd:slurm-wlm munged:munge"
PATH=$PATH:/usr/sbin:/sbin
for pair in $pairs; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need="$need ${pair#*:}"
done
if [ -n "$need" ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "installing:$need" >&2
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi

# The real claude CLI, at the version docs/agents.md was tested with
# (ORCH_CLAUDE_VERSION=latest tries the newest). The tests that drive it
# say "skipped" with the reason when it cannot be installed.
version=${ORCH_CLAUDE_VERSION:-2.1.197}
dir=target/claude-code
cli=$dir/node_modules/@anthropic-ai/claude-code/bin/claude.exe
have=$("$cli" --version 2>/dev/null | cut -d' ' -f1 || true)
if [ "$have" != "$version" ] || [ "$version" = latest ]; then
    if command -v npm >/dev/null 2>&1; then
        echo "installing @anthropic-ai/claude-code@$version into $dir" >&2
        mkdir -p "$dir"
        [ -f "$dir/package.json" ] || echo '{"private": true}' > "$dir/package.json"
        npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
            "@anthropic-ai/claude-code@$version" >&2 ||
            echo "warning: could not install the claude CLI; its tests will be skipped" >&2
    else
        echo "warning: npm is missing, so the claude CLI is not installed; its tests will be skipped" >&2
    fi
fi
