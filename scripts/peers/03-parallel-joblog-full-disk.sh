#!/usr/bin/env bash
# Scenario 3: GNU parallel --joblog on a full file system.
#
# Question: when the joblog cannot be written (ENOSPC), does parallel report an
# error / exit non-zero, or does it silently lose joblog lines?
#
# Method (needs root): mount a 64 KiB tmpfs, fill it with dd leaving ~8 KiB,
# point --joblog at it and run N short jobs whose joblog lines need far more
# than 8 KiB. Each job also writes a marker file on the normal disk so we can
# count how many jobs really ran. Record exit status, stderr, joblog size and
# line count, and whether the last joblog line is cut off. Then free the space
# and rerun with --resume to see how many already-finished jobs run again.
set -u
N=${N:-400}
command -v parallel >/dev/null || { echo "RESULT: parallel not installed"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "RESULT: needs root for mount"; exit 1; }
echo "version: $(parallel --version | head -1)"

T=$(mktemp -d /tmp/peer-par-full.XXXXXX)
MNT="$T/mnt"
mkdir -p "$MNT" "$T/ran" "$T/home"
cleanup() {
  mountpoint -q "$MNT" && umount "$MNT"
  rm -rf "$T"
}
trap cleanup EXIT
export HOME="$T/home" TMPDIR="$T"   # parallel's own temp files stay on the normal disk

mount -t tmpfs -o size=64k tmpfs "$MNT" || { echo "RESULT: mount failed"; exit 1; }
# fill the tmpfs, then free ~8 KiB (two pages)
dd if=/dev/zero of="$MNT/filler" bs=4k 2>/dev/null
truncate -s $(( $(stat -c %s "$MNT/filler") - 8192 )) "$MNT/filler"
echo "tmpfs before run:"; df -B1 "$MNT" | tail -1

parallel --joblog "$MNT/J" -j2 "touch $T/ran/{}; echo {} >> $T/runs; echo out-{}" ::: $(seq 1 $N) >"$T/out" 2>"$T/err"
rc=$?

size=$(stat -c %s "$MNT/J" 2>/dev/null || echo missing)
nl=$( { wc -l < "$MNT/J"; } 2>/dev/null || echo 0)   # complete lines incl. header
ran=$(ls "$T/ran" | wc -l)
outs=$(grep -c '^out-' "$T/out")
last=$(tail -c 200 "$MNT/J" 2>/dev/null | tail -1)
if [ -s "$MNT/J" ] && [ "$(tail -c1 "$MNT/J" | od -An -c | tr -d ' ')" != '\n' ]; then partial=yes; else partial=no; fi
errbytes=$(stat -c %s "$T/err")
echo "tmpfs after run:"; df -B1 "$MNT" | tail -1
echo "stderr ($errbytes bytes):"; head -c 1000 "$T/err"; echo
echo "last joblog line: $last"

# follow-up: free the disk and resume
rm -f "$MNT/filler"
parallel --joblog "$MNT/J" --resume -j2 "touch $T/ran/{}; echo {} >> $T/runs; echo out-{}" ::: $(seq 1 $N) >"$T/out2" 2>"$T/err2"
rc2=$?
reruns=$(( $(grep -c '' "$T/runs") - N ))
echo "resume: exit=$rc2, stderr: $(head -c 300 "$T/err2")"

echo "RESULT: exit=$rc; jobs ran=$ran/$N (stdout lines $outs); joblog size=$size bytes, $((nl>0 ? nl-1 : 0)) of $N jobs logged as complete lines; last line cut off=$partial; stderr bytes=$errbytes; after freeing space, --resume (exit=$rc2) re-ran $reruns already-finished jobs"
