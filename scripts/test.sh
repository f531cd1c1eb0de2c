#!/usr/bin/env bash
# The whole test suite, as CI runs it:  bash scripts/test.sh
#
#   1. scripts/setup.sh          apt packages, libcurl with WebSockets, .venv (Python test peers), .autobahn
#   2. swift build --build-tests, and `wsc` (swift build --package-path Tools --product wsc: the tools are a package
#                                of their own, so that the library's users resolve none of their dependencies)
#   3. swift test                with WS_TEST_VENV / WS_TEST_PYTHON pointing at .venv (arguments to this script,
#                                e.g. --filter PeerSmoke, go to swift test; Autobahn then runs only if AUTOBAHN=on)
#   4. scripts/docs.sh           the DocC archive of every library module, docc warnings as errors, with
#                                scripts/check-docs.sh and scripts/format.sh --lint (swift format, .swift-format), and
#                                no merge conflict markers in any tracked file
#                                (DOCS=off skips them)
#   5. scripts/consumer.sh       Tests/ConsumerPackage, a package depending on this one by path as a user's does: built
#                                and run against its own loopback servers; its Package.resolved must hold no tool
#                                dependency (CONSUMER=off skips it)
#   6. scripts/autobahn.sh       Autobahn|Testsuite cases 1-10 through `wsc echo`, CIO then Curl engine; 12-13 with deflate (skipped with a notice where no
#                                Python 2.7 exists; AUTOBAHN=off skips it)
#
# Limits (seconds, env): BUILD_TIMEOUT=2400, SWIFT_TEST_TIMEOUT=1800; autobahn.sh has AUTOBAHN_TOTAL_TIMEOUT.
# Exit status is non-zero if any step failed; the last line says which.
set -euo pipefail
# a command failing under set -e would end the script silently; say where (not under set +e)
# shellcheck disable=SC2154
trap 'rc=$?; if [[ $- == *e* ]]; then echo "test.sh: FAILED: unexpected error (exit $rc) at line $LINENO of $0 — rerun with bash -x to see more" >&2; fi' ERR

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi

START=$SECONDS
TIMES=()
FAILED=()
LOG_DIR="$ROOT/.build-setup/logs"
mkdir -p "$LOG_DIR"

step_done() { TIMES+=("$1 $((SECONDS - $2))s"); }
summary() {
    local times="" item
    for item in "${TIMES[@]}"; do times="${times:+$times, }$item"; done
    if [ "${#FAILED[@]}" = 0 ]; then
        echo "test.sh: PASSED — ${times}; total $((SECONDS - START))s"
    else
        local failed="" f
        for f in "${FAILED[@]}"; do failed="${failed:+$failed; }$f"; done
        echo "test.sh: FAILED: ${failed} — see the output above (${times:+$times; }total $((SECONDS - START))s)"
    fi
}
abort() { FAILED+=("$1"); summary; exit 1; }

# run_bounded SECONDS CMD...: runs CMD in a session of its own and kills that whole session when it runs longer
# than SECONDS (exit status 124), and afterwards in any case: `timeout` alone misses the test runner, which SwiftPM
# starts in a process group of its own, and a leftover child (a test peer, a proxy) would keep our pipe open.
run_bounded() {
    local limit="$1" pid rc flag
    shift
    flag="$(mktemp)"
    setsid "$@" &
    pid=$!
    echo "$pid" >"$LOG_DIR/running.sid"
    (
        waited=0
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$waited" -ge "$limit" ]; then
                echo timeout >"$flag"
                pkill -TERM -s "$pid" || true
                for _ in 1 2 3 4 5 6 7 8 9 10; do pgrep -s "$pid" >/dev/null || break; sleep 1; done
                pkill -KILL -s "$pid" || true
                exit 0
            fi
            sleep 1
            waited=$((waited + 1))
        done
    ) </dev/null >/dev/null 2>&1 &
    local watchdog=$! interrupted=0
    # an interrupt (Ctrl-C reaches only our process group, not the session) ends the session too
    trap 'interrupted=1; pkill -TERM -s "$pid" 2>/dev/null || true' INT TERM
    set +e
    while :; do
        wait "$pid"
        rc=$?
        kill -0 "$pid" 2>/dev/null || break   # wait returns early when a trapped signal arrives
    done
    set -e
    trap on_interrupt INT TERM
    wait "$watchdog" 2>/dev/null || true
    pkill -KILL -s "$pid" 2>/dev/null || true   # whatever the run left behind
    if [ -s "$flag" ]; then rc=124; fi
    if [ "$interrupted" = 1 ]; then rc=130; fi
    rm -f "$flag" "$LOG_DIR/running.sid"
    return "$rc"
}
# Ctrl-C reaches only our own process group: pass it on to the session run_bounded started
# shellcheck disable=SC2317  # invoked by the trap
on_interrupt() {
    local sid
    sid="$(cat "$LOG_DIR/running.sid" 2>/dev/null || true)"
    if [ -n "$sid" ]; then pkill -TERM -s "$sid" 2>/dev/null || true; fi
    echo "test.sh: interrupted" >&2
    exit 130
}
trap on_interrupt INT TERM

# ------------------------------------------------------------------------------------------------------ 1. setup
t=$SECONDS
echo "=== test.sh: setup"
bash "$ROOT/scripts/setup.sh" || abort "setup (scripts/setup.sh)"
step_done setup "$t"

# ------------------------------------------------------------------------------------------------------ 2. build
t=$SECONDS
echo "=== test.sh: swift build --build-tests"
set +e
run_bounded "${BUILD_TIMEOUT:-2400}" swift build --build-tests 2>&1 | tee "$LOG_DIR/build.log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" = 124 ]; then printf '\n'; echo "test.sh: the build did not finish within ${BUILD_TIMEOUT:-2400}s"; fi
if [ "$rc" = 130 ]; then abort "build (interrupted)"; fi
[ "$rc" = 0 ] || abort "build (swift build --build-tests, exit $rc)"
# Zero compiler warnings in our own sources (dependencies' checkouts and SwiftPM's own notes aside). Only a build
# that compiled every file sees them all: a clean clone does.
own_warnings="$(grep -E '^/[^ ]+\.(swift|c|h):[0-9]+:[0-9]+: warning:' "$LOG_DIR/build.log" | grep -v '/\.build/checkouts/' | sort -u || true)"
if [ -n "$own_warnings" ]; then
    echo "$own_warnings"
    FAILED+=("compiler warnings in the package's sources (listed above the summary)")
fi
echo "=== test.sh: swift build --package-path Tools --product wsc"
set +e
run_bounded "${BUILD_TIMEOUT:-2400}" bash "$ROOT/scripts/build-tools.sh" --product wsc
rc=$?
set -e
if [ "$rc" = 124 ]; then printf '\n'; echo "test.sh: the build of wsc did not finish within ${BUILD_TIMEOUT:-2400}s"; fi
if [ "$rc" = 130 ]; then abort "build (interrupted)"; fi
[ "$rc" = 0 ] || abort "build of wsc (swift build --package-path Tools --product wsc, exit $rc)"
export WSC_BINARY="$ROOT/Tools/.build/debug/wsc"
step_done build "$t"

# ------------------------------------------------------------------------------------------------------ 3. tests
export WS_TEST_VENV="$ROOT/.venv"
export WS_TEST_PYTHON="$ROOT/.venv/bin/python"
t=$SECONDS
echo "=== test.sh: swift test $*"
set +e
# stdbuf: line-buffered output, so that a hanging test run shows in the log which tests had started
# --no-parallel: many tests run in-process servers and peers on this 2-core machine; run side by side they
# starve Swift's cooperative pool and the timing assertions (open, close and pong timeouts) stop meaning anything.
run_bounded "${SWIFT_TEST_TIMEOUT:-1800}" stdbuf -oL -eL swift test --skip-build --no-parallel "$@" 2>&1 | tee "$LOG_DIR/swift-test.log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" = 124 ]; then printf '\n'; echo "test.sh: swift test did not finish within ${SWIFT_TEST_TIMEOUT:-1800}s and was killed"; fi
if [ "$rc" = 130 ]; then abort "swift test (interrupted)"; fi
[ "$rc" = 0 ] || FAILED+=("swift test (exit $rc)")
step_done "swift test" "$t"
TEST_COUNTS="$( { grep -E 'Executed [0-9]+ tests?, with' "$LOG_DIR/swift-test.log" | tail -n 1 || true
                  grep -E 'Test run with [0-9]+ tests?' "$LOG_DIR/swift-test.log" | tail -n 1 || true; } \
                | sed 's/^[^A-Za-z]*//' || true)"

# ------------------------------------------------------------------------------------------------------- 4. docs
t=$SECONDS
if [ "${DOCS:-}" = off ]; then
    echo "docs: SKIPPED — DOCS=off"
elif [ $# -gt 0 ] && [ "${DOCS:-}" != on ]; then
    echo "docs: SKIPPED — swift test arguments given (set DOCS=on to run it anyway)"
else
    echo "=== test.sh: scripts/check-docs.sh and scripts/docs.sh (DocC, warnings as errors)"
    bash "$ROOT/scripts/check-docs.sh" || FAILED+=("docs (scripts/check-docs.sh: public symbols without a doc comment)")
    bash "$ROOT/scripts/docs.sh" || FAILED+=("docs (scripts/docs.sh)")
    bash "$ROOT/scripts/format.sh" --lint || FAILED+=("formatting (scripts/format.sh --lint: run bash scripts/format.sh)")
    # A merge that left conflict markers in a file no compiler reads (CHANGELOG, Docs/, scripts) would land unseen.
    if conflicts="$(git -C "$ROOT" grep -n -I -E '^(<<<<<<< |>>>>>>> )' -- . 2>/dev/null)"; then
        echo "$conflicts"
        FAILED+=("merge conflict markers in tracked files (listed above the summary)")
    fi
    step_done docs "$t"
fi

# --------------------------------------------------------------------------------------------------- 5. consumer
t=$SECONDS
if [ "${CONSUMER:-}" = off ]; then
    echo "consumer: SKIPPED — CONSUMER=off"
elif [ $# -gt 0 ] && [ "${CONSUMER:-}" != on ]; then
    echo "consumer: SKIPPED — swift test arguments given (set CONSUMER=on to run it anyway)"
else
    echo "=== test.sh: scripts/consumer.sh (the SDK as a user's package uses it, by path)"
    bash "$ROOT/scripts/consumer.sh" || FAILED+=("consumer package (scripts/consumer.sh)")
    step_done consumer "$t"
fi

# --------------------------------------------------------------------------------------------------- 6. autobahn
t=$SECONDS
if [ "${AUTOBAHN:-}" = off ]; then
    echo "autobahn: SKIPPED — AUTOBAHN=off"
elif [ $# -gt 0 ] && [ "${AUTOBAHN:-}" != on ]; then
    echo "autobahn: SKIPPED — swift test arguments given (set AUTOBAHN=on to run it anyway)"
elif [ -f "$ROOT/.autobahn/env" ]; then
    # Groups 1-10 on both engines: the session logic is shared, the transports are not.
    for engine in cio curl; do
        echo "=== test.sh: scripts/autobahn.sh (engine $engine)"
        AUTOBAHN_ENGINE=$engine bash "$ROOT/scripts/autobahn.sh" || FAILED+=("autobahn $engine (scripts/autobahn.sh)")
    done
    # The compression groups (permessage-deflate), CIO engine: about 20 minutes, the fuzzing server is the bottleneck.
    echo "=== test.sh: scripts/autobahn.sh (groups 12 and 13, permessage-deflate)"
    AUTOBAHN_CASES="12.*,13.*" AUTOBAHN_DEFLATE=1 AUTOBAHN_AGENT=swift-ws-cio-deflate AUTOBAHN_TOTAL_TIMEOUT=3000 \
        bash "$ROOT/scripts/autobahn.sh" || FAILED+=("autobahn 12/13 deflate (scripts/autobahn.sh)")
    step_done autobahn "$t"
else
    echo "autobahn: SKIPPED — no Python 2.7 (pyenv) on this machine"
fi

echo "=== test.sh: summary"
if [ -n "$TEST_COUNTS" ]; then while IFS= read -r line; do echo "swift test: $line"; done <<<"$TEST_COUNTS"; fi
summary
if [ "${#FAILED[@]}" = 0 ]; then exit 0; else exit 1; fi
