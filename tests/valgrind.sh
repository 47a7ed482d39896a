#!/bin/sh
# tests/valgrind.sh - the functional tests with every slowlaned under
# valgrind memcheck (`make check-valgrind`). Each daemon writes its own
# report (vg.<pid>.log); the run fails if any report holds a memcheck error
# or a definite leak, or if a test failed. Daemons the tests kill -9 leave
# no summary, but memcheck writes each error the moment it happens, so
# their errors are still caught.
#
#   tests/valgrind.sh BUILD-DIR TEST...
set -u
build=$1
shift
vgdir="$build/tests/valgrind"
rm -rf "$vgdir"
mkdir -p "$vgdir"
command -v valgrind >/dev/null 2>&1 || { echo "valgrind is not installed (apt-get install valgrind)"; exit 1; }

# Timing-bound assertions need room: a daemon under memcheck runs ~10x slower.
SLOWLANE_TEST_WRAPPER="valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
--show-leak-kinds=definite --errors-for-leak-kinds=definite --track-origins=yes \
--num-callers=30 --log-file=$vgdir/vg.%p.log"
SLOWLANE_TEST_TIME_SCALE=8
export SLOWLANE_TEST_WRAPPER SLOWLANE_TEST_TIME_SCALE

make -C "$build" check TESTS="$*"
status=$?

reports=$(ls "$vgdir"/vg.*.log 2>/dev/null | wc -l)
bad=$(grep -lE '^==[0-9]+== (Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap|Argument .* of function)|definitely lost: [1-9]' \
	"$vgdir"/vg.*.log 2>/dev/null)
summaries=$(grep -l 'ERROR SUMMARY: 0 errors' "$vgdir"/vg.*.log 2>/dev/null | wc -l)
echo "valgrind: $reports daemon reports, $summaries clean exits with a summary, $(echo "$bad" | grep -c .) with errors"
for f in $bad; do
	echo "=== $f"
	grep -E -A25 '^==[0-9]+== (Invalid|Conditional|Use of|Syscall|Mismatched|Source and|Argument)|definitely lost' "$f" | head -80
done
[ -z "$bad" ] && [ "$status" -eq 0 ] && [ "$reports" -gt 0 ]
