#!/usr/bin/env bash
# The whole test suite under ThreadSanitizer and AddressSanitizer (Docs/Sanitizers-and-Soak.md):
#
#   bash scripts/sanitizers.sh                       both, one after the other
#   SANITIZERS=thread bash scripts/sanitizers.sh     only TSan (SANITIZERS="thread address" is the default)
#   bash scripts/sanitizers.sh --filter CIOEngine    arguments go to `swift test`
#
# Per sanitizer: `swift build --build-tests --sanitize=S --scratch-path .build-tsan|.build-asan`, then
# `swift test --skip-build --sanitize=S --no-parallel` (tests use ports and processes) with the Python test peers of
# .venv (made by scripts/setup.sh, run first if .venv is missing), and a summary: exit status, test counts, failed
# tests, sanitizer reports (unique, demangled).
#
#   thread   TSAN_OPTIONS=suppressions=scripts/tsan.supp, and LD_PRELOAD of scripts/tsan-mutex.c (built into
#            .build-tsan/libtsan-mutex.so): TSan on Linux does not see the contended path of Synchronization.Mutex
#            (a futex in an uninstrumented library) and would report races between accesses made under the same
#            lock; the preload adds the missing acquire/release (explained in the file).
#   address  LSAN_OPTIONS=suppressions=scripts/lsan.supp (XCTest's own objects; two Foundation leaks of the test
#            harness). The whole suite runs in two passes: everything but MemoryBoundTests with ASan's defaults,
#            then MemoryBoundTests (resident-memory bounds) with quarantine_size_mb=0, since ASan's quarantine keeps
#            freed memory resident on purpose.
#
# Environment: SANITIZERS, SANITIZER_BUILD_TIMEOUT (3600 s), SANITIZER_TEST_TIMEOUT (5400 s), SANITIZER_SKIP_BUILD=1,
# TSAN_MUTEX_SHIM=0 (run TSan without the preload, to see the Mutex false positives). Logs: .build-tsan/logs/,
# .build-asan/logs/ (swift-test-<pass>.log). Exit status: 0 when every run passed with no sanitizer report, 1 otherwise, 2 on a usage error.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi
SWIFT_BIN_DIR="$(dirname "$(readlink -f "$(command -v swift)")")"

SANITIZERS="${SANITIZERS:-thread address}"
for s in $SANITIZERS; do
    case "$s" in thread | address) ;; *) echo "sanitizers.sh: SANITIZERS takes thread and/or address, not '$s'" >&2; exit 2 ;; esac
done

if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "=== sanitizers.sh: no .venv yet: bash scripts/setup.sh"
    bash "$ROOT/scripts/setup.sh" || { echo "sanitizers.sh: FAILED: scripts/setup.sh" >&2; exit 1; }
fi
export WS_TEST_VENV="$ROOT/.venv"
export WS_TEST_PYTHON="$ROOT/.venv/bin/python"

# run_bounded SECONDS CMD...: CMD in a session of its own, killed with everything it started (test peers, proxies)
# when it runs longer than SECONDS (exit status 124) and, in any case, when it ends.
run_bounded() {
    local limit="$1" pid rc waited=0
    shift
    setsid "$@" &
    pid=$!
    CURRENT_SID=$pid
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$limit" ]; do sleep 1; waited=$((waited + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
        pkill -TERM -s "$pid" 2>/dev/null; sleep 5; pkill -KILL -s "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        rc=124
    else
        wait "$pid"
        rc=$?
    fi
    pkill -KILL -s "$pid" 2>/dev/null   # whatever the run left behind
    CURRENT_SID=""
    return "$rc"
}
CURRENT_SID=""
trap 'if [ -n "$CURRENT_SID" ]; then pkill -TERM -s "$CURRENT_SID" 2>/dev/null; fi; echo "sanitizers.sh: interrupted" >&2; exit 130' INT TERM

demangle() { if [ -x "$SWIFT_BIN_DIR/swift-demangle" ]; then "$SWIFT_BIN_DIR/swift-demangle" --simplified; else cat; fi; }

SUMMARY=()
FAILED=0

# The CLI tests run the wsc binary of the Tools package (a package of its own, built without a sanitizer here: the
# sanitizer checks the library inside the test process; wsc's own runs are checked by scripts/soak.sh).
if [ -z "${WSC_BINARY:-}" ]; then
    echo "=== sanitizers.sh: swift build --package-path Tools --product wsc (for the CLI tests)"
    bash "$ROOT/scripts/build-tools.sh" --product wsc >/dev/null || { echo "sanitizers.sh: FAILED: building wsc" >&2; exit 1; }
    export WSC_BINARY="$ROOT/Tools/.build/debug/wsc"
fi

# build SANITIZER: swift build --build-tests into .build-tsan / .build-asan (again when a source changed meanwhile)
build() {
    local sanitizer="$1" scratch="$2" logs="$2/logs" rc attempt
    [ "${SANITIZER_SKIP_BUILD:-0}" = 1 ] && return 0
    echo "=== sanitizers.sh: swift build --build-tests --sanitize=$sanitizer --scratch-path ${scratch#"$ROOT"/}"
    for attempt in 1 2 3; do
        run_bounded "${SANITIZER_BUILD_TIMEOUT:-3600}" swift build --build-tests --sanitize="$sanitizer" \
            --scratch-path "$scratch" >"$logs/build.log" 2>&1
        rc=$?
        # a source file edited while the build ran (someone else at work in the tree): build again
        [ "$rc" != 0 ] && grep -qE "was modified during the build|error opening input file" "$logs/build.log" || break
        echo "sanitizers.sh: a source file changed during the build; building again ($attempt)"
    done
    if [ "$rc" != 0 ]; then
        grep -v "Cannot export local symbol" "$logs/build.log" | grep -E "error:" | head -n 20
        SUMMARY+=("$sanitizer: BUILD FAILED (exit $rc; $logs/build.log)")
        FAILED=1
        return 1
    fi
}

# run_pass SANITIZER SCRATCH LABEL "ENV..." SWIFT-TEST-ARGS...: one `swift test` run and its summary
run_pass() {
    local sanitizer="$1" scratch="$2" label="$3" rc t reports counts failed_tests log
    # shellcheck disable=SC2206  # the environment assignments contain no spaces
    local env=($4)
    shift 4
    log="$scratch/logs/swift-test-$label.log"
    t=$SECONDS
    echo "=== sanitizers.sh: [$label] swift test --sanitize=$sanitizer --no-parallel $* (log: ${log#"$ROOT"/})"
    run_bounded "${SANITIZER_TEST_TIMEOUT:-5400}" env "${env[@]}" stdbuf -oL -eL \
        swift test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch" --no-parallel "$@" >"$log" 2>&1
    rc=$?

    # What ran: XCTest's line only when it ran tests (the suite is Swift Testing; XCTest says "Executed 0 tests"),
    # Swift Testing's last count line; what failed; what the sanitizer said (reports of child processes included:
    # the CLI tests print the stderr of the wsc they start, which is not sanitized).
    counts="$( { grep -aE 'Executed [1-9][0-9]* tests?, with' "$log" | tail -n 1; grep -aE '^. Test run with [0-9]+ tests?' "$log" | tail -n 1; } \
        | sed 's/^[^A-Za-z]*//' | paste -sd ';' | sed 's/;/; /g')"
    failed_tests="$(grep -aE "^✘ Test \".*\" (with [0-9]+ test cases )?failed after|^Test Case '.*' failed" "$log" \
        | sed -E 's/ after [0-9.]+ seconds.*//; s/ \([0-9.]+ seconds\).*//' | sort -u)"
    reports="$(grep -acE '(WARNING: ThreadSanitizer|==[0-9]+==ERROR: (AddressSanitizer|LeakSanitizer))' "$log")"
    echo "--- [$label] exit $rc, $((SECONDS - t)) s; ${counts:-no test counts (see the log)}; sanitizer reports: $reports"
    if [ -n "$failed_tests" ]; then echo "--- [$label] failed tests:"; echo "$failed_tests" | sed 's/^/    /'; fi
    if [ "$reports" != 0 ]; then
        echo "--- [$label] reports (count, summary line):"
        grep -aoE 'SUMMARY: (ThreadSanitizer|AddressSanitizer): .*' "$log" | demangle | sort | uniq -c | sort -rn | head -n 40 | sed 's/^/    /'
    fi
    # LSan: "Suppressions used:" then "count bytes template" lines; TSan: "ThreadSanitizer: Matched N suppressions"
    # then "count type:pattern" lines (one block per process that matched any)
    if grep -aqE 'Suppressions used|ThreadSanitizer: Matched' "$log"; then
        echo "--- [$label] suppressions matched (processes, then the counts each printed):"
        grep -aE -A8 'Suppressions used|ThreadSanitizer: Matched' "$log" | grep -aE '^ *[0-9]+ +([0-9]+ +)?[a-z]+:|^ *[0-9]+ +[0-9]+ +[^ ]+$' \
            | awk '{ $1 = $1; print }' | sort | uniq -c | sort -rn | head -n 20 | sed 's/^/    /'
    fi
    if [ "$rc" = 124 ]; then echo "--- [$label] swift test did not finish within ${SANITIZER_TEST_TIMEOUT:-5400}s and was killed"; fi

    if [ "$rc" = 0 ] && [ "$reports" = 0 ]; then
        SUMMARY+=("$sanitizer [$label]: PASSED — ${counts:-?}; no sanitizer report ($((SECONDS - t)) s)")
    elif [ "$label" = address-memory-bounds ] && [ "$reports" = 0 ] && rss_only "$log"; then
        # The scenarios ran under ASan without a finding; only their resident-memory bounds failed, which ASan's
        # allocator (chunk headers, redzones, shadow memory) makes meaningless: reported, not counted.
        echo "--- [$label] every failed expectation is a resident-memory bound (growth < ...): not applicable under ASan"
        grep -aE '^ +RSS growth' "$log" | sed 's/^ *//' | sort -u | sort -k3 -rn | head -n 4 | sed 's/^/    largest: /'
        SUMMARY+=("$sanitizer [$label]: PASSED (no sanitizer report; resident-memory bounds not applicable under ASan) — ${counts:-?}")
    else
        SUMMARY+=("$sanitizer [$label]: FAILED — exit $rc; ${counts:-?}; $reports sanitizer reports; $(echo "$failed_tests" | grep -c .) failed tests ($log)")
        FAILED=1
    fi
}

# rss_only LOG: the child run's failed expectations (indented "✘ ... recorded an issue" lines) exist and are all
# resident-memory bounds: "Expectation failed: (growth → N) < ..."
rss_only() {
    local issues
    issues="$(grep -aE '^ +✘ Test .* recorded an issue' "$1" | sort -u)"
    [ -n "$issues" ] && ! grep -qv 'Expectation failed: (growth → ' <<<"$issues"
}

run_sanitizer() {
    local sanitizer="$1" short scratch
    shift
    case "$sanitizer" in thread) short=tsan ;; address) short=asan ;; esac
    scratch="$ROOT/.build-$short"
    mkdir -p "$scratch/logs"
    build "$sanitizer" "$scratch" || return

    if [ "$sanitizer" = thread ]; then
        # history_size=4: older accesses stay in the report (the other side of a race is not "[failed to restore]")
        local env="TSAN_OPTIONS=suppressions=$ROOT/scripts/tsan.supp:print_suppressions=1:history_size=4:halt_on_error=0${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
        if [ "${TSAN_MUTEX_SHIM:-1}" != 0 ]; then
            "$SWIFT_BIN_DIR/clang" -shared -fPIC -O2 -Wall -o "$scratch/libtsan-mutex.so" "$ROOT/scripts/tsan-mutex.c" -ldl \
                || { SUMMARY+=("thread: the Mutex shim did not build (scripts/tsan-mutex.c)"); FAILED=1; return; }
            env="$env LD_PRELOAD=$scratch/libtsan-mutex.so"
        fi
        run_pass thread "$scratch" thread "$env" "$@"
        return
    fi

    local lsan="LSAN_OPTIONS=suppressions=$ROOT/scripts/lsan.supp:print_suppressions=1${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
    if [ $# -gt 0 ]; then
        run_pass address "$scratch" address "$lsan ASAN_OPTIONS=detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" "$@"
        return
    fi
    # The whole suite, in two passes. The memory-bound tests (MemoryBoundTests: hostile input must not grow the
    # resident set by more than 8 MiB, measured in a child process) cannot hold under ASan: its quarantine keeps up
    # to 256 MiB of freed memory out of reuse on purpose (to catch use-after-free), and its chunk headers, redzones
    # and shadow memory add to every allocation. They run in a second pass with quarantine_size_mb=0 (ASan still
    # checks every access against redzones, and against freed memory not reused yet); a failure there counts
    # unless every failed expectation is a resident-memory bound (then it is printed, not counted). Everything
    # else runs with ASan's defaults.
    run_pass address "$scratch" address "$lsan ASAN_OPTIONS=detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
        --skip MemoryBoundTests
    run_pass address "$scratch" address-memory-bounds \
        "$lsan ASAN_OPTIONS=detect_leaks=1:quarantine_size_mb=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" --filter MemoryBoundTests
}

for s in $SANITIZERS; do run_sanitizer "$s" "$@"; done

echo "=== sanitizers.sh: summary"
for line in "${SUMMARY[@]}"; do echo "$line"; done
if [ "$FAILED" = 0 ]; then echo "sanitizers.sh: PASSED"; exit 0; fi
echo "sanitizers.sh: FAILED"
exit 1
