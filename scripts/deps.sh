#!/bin/sh
# Installs, with Debian's apt, the programs the test suite drives for real
# and that a fresh machine may lack. Does nothing when they are present.
set -eu
need=""
pairs="flock:util-linux tmux:tmux python3:python3"
# The long scenarios drive a real cron daemon and a real one-node Slurm
# cluster (scripts/slurm-test-cluster.sh; the daemons live in /usr/sbin).
[ -n "${ORCH_LONG_TESTS:-}" ] && pairs="$pairs cron:cron unshare:util-linux sbatch:slurm-wlm slurmctld:slurm-wlm slurmd:slurm-wlm munged:munge"
PATH=$PATH:/usr/sbin:/sbin
for pair in $pairs; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need="$need ${pair#*:}"
done
[ -z "$need" ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "installing:$need" >&2
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
