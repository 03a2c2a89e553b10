#!/bin/sh
# The reliability suite in full, and the figures of docs/reliability.md.
#
#   scripts/torture.sh                 chaos 1000 tasks x 10 rounds, 20,000 fuzz cases
#   scripts/torture.sh --quick         chaos 120 tasks x 2 rounds, 1,000 fuzz cases
#
# Environment: TASKS, ROUNDS (chaos), CASES (proptest cases per property).
# Needs flock(1) (util-linux) and, for the disk-full and two-host tests,
# root (tmpfs mounts, namespaces). Prints a Markdown table per part and
# exits non-zero if any part failed.
set -eu

cd "$(dirname "$0")/.."

tasks=${TASKS:-1000}
rounds=${ROUNDS:-10}
cases=${CASES:-20000}
if [ "${1:-}" = "--quick" ]; then
	tasks=${TASKS:-120}
	rounds=${ROUNDS:-2}
	cases=${CASES:-1000}
elif [ -n "${1:-}" ]; then
	echo "usage: scripts/torture.sh [--quick]" >&2
	exit 2
fi

out=$(mktemp -d "${TMPDIR:-/tmp}/orch-torture.XXXXXX")
trap 'rm -rf "$out"' EXIT
failed=0

echo "Building (release)..." >&2
cargo build --release --tests --quiet

echo "Chaos: $tasks tasks x $rounds rounds..." >&2
start=$(date +%s)
if ! ORCH_CHAOS_TASKS=$tasks ORCH_CHAOS_ROUNDS=$rounds \
	cargo test --release --quiet --test e2e chaos:: -- --nocapture >"$out/chaos" 2>&1; then
	failed=1
	tail -40 "$out/chaos" >&2
fi
echo
echo "## Chaos: $tasks tasks, 4 workers, kill -9 every 100-500 ms, hand claims, escaping children ($(($(date +%s) - start)) s)"
echo
echo "| round | seconds | ticks | kills (worker) | kills (agent group) | hand claims | holder kills | person kills | escaping tasks | runs started | lost | run twice at once | over capacity | corrupt files | temp files left |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
grep '^CHAOS ' "$out/chaos" | sed 's/^CHAOS //' | awk '
{
	for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
	printf "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", v["round"] + 1, v["seconds"], v["ticks"], v["kills"], v["group_kills"], v["hand_claims"], v["holder_kills"], v["person_kills"], v["escapers"], v["runs"], v["lost"], v["overlaps"], v["over_capacity"], v["corrupt"], v["temp_files"]
	k += v["kills"]; g += v["group_kills"]; h += v["hand_claims"]; hk += v["holder_kills"]; pk += v["person_kills"]; e += v["escapers"]; r += v["runs"]; l += v["lost"]; o += v["overlaps"]; oc += v["over_capacity"]; c += v["corrupt"]; t += v["temp_files"]; n++
}
END { if (n) printf "| all %d | | | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d |\n", n, k, g, h, hk, pk, e, r, l, o, oc, c, t }'

echo "Faults, signals, bad input, security, two hosts..." >&2
if ! cargo test --release --quiet --test e2e -- faults:: security:: hosts:: worker::no_second_runner \
	worker::kill9 worker::sigterm monitor::watch_restores monitor::damaged monitor::clean_stale \
	>"$out/faults" 2>&1; then
	failed=1
	tail -40 "$out/faults" >&2
fi
echo
echo "## Faults, signals, bad input, security, two hosts"
echo
grep -E '^test result' "$out/faults" | sed 's/^/    /'

echo "Fuzzing: $cases cases per property..." >&2
if ! PROPTEST_CASES=$cases cargo test --release -p orch-readers -p orch-session fuzz -- --test-threads 2 \
	>"$out/fuzz" 2>&1; then
	failed=1
	tail -40 "$out/fuzz" >&2
fi
props=$(grep -cE '^test fuzz::.* ok$' "$out/fuzz" || true)
crashed=$(grep -cE '^test fuzz::.* FAILED$' "$out/fuzz" || true)
echo
echo "## Fuzzing (proptest)"
echo
echo "| properties | cases each | executions | failures |"
echo "|---|---|---|---|"
echo "| $((props + crashed)) | $cases | $(((props + crashed) * cases)) | $crashed |"

exit $failed
