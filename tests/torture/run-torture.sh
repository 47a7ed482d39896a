#!/bin/sh
# run-torture.sh - `make torture`: the torture suite's long profile, one test
# file at a time (each needs the two cores to itself), then the figures.
# Environment: what AM_TESTS_ENVIRONMENT sets, plus SLOWLANE_TORTURE=long
# and SLOWLANE_TORTURE_REPORT (JSON lines of figures, truncated here).
# Arguments: the test files. Output also goes to tests/torture/torture.log.
set -u
here=$(dirname "$0")
log=${SLOWLANE_TORTURE_LOG:-tests/torture/torture.log}
: > "$SLOWLANE_TORTURE_REPORT"
: > "$log"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
fail=0
start=$(date +%s)
for f in "$@"; do
	t0=$(date +%s)
	echo "==== $(basename "$f") (long profile)" | tee -a "$log"
	node --test-reporter=tap --test "$f" > "$out" 2>&1
	st=$?
	cat "$out" >> "$log"
	grep -E '^(not )?ok |^# [a-z-]+: |^# (pass|fail) ' "$out"
	echo "==== $(basename "$f"): exit $st in $(( $(date +%s) - t0 )) s" | tee -a "$log"
	[ $st -eq 0 ] || fail=1
done
echo "==== torture: $(( $(date +%s) - start )) s, $( [ $fail -eq 0 ] && echo PASS || echo FAIL )" | tee -a "$log"
node "$here/figures.mjs" "$SLOWLANE_TORTURE_REPORT" | tee -a "$log"
exit $fail
