#!/usr/bin/env bash
# Load and soak runs (issue 8; results in Docs/Sanitizers-and-Soak.md):
#
#   bash scripts/soak.sh                 (a) then (b)
#   SOAK=connections bash scripts/soak.sh   only (a)       SOAK=loop bash scripts/soak.sh   only (b)
#   SOAK=reconnect bash scripts/soak.sh     only (c) (not part of `all`)
#
#   (a) connections: SOAK_CONNECTIONS (10000) concurrent connections on the CIO engine (release build) to the C echo
#       server (Benchmarks/c/echo_server.c) in another process; reports the time to open them (and handshake
#       percentiles), the client's RSS before and with every connection open, the RSS per connection, one echo on
#       each, the time to close them and the RSS after closing (before and after malloc_trim); SOAK_ROUNDS (3)
#       rounds, so that later rounds show whether closing made the memory reusable. Fails unless every connection
#       opened and echoed in every round.
#   (b) loop: connect, send two messages, receive their echoes, close, over and over on SOAK_WORKERS (4) workers for
#       SOAK_MINUTES (10) minutes, under AddressSanitizer (debug build), for each engine of SOAK_ENGINES ("cio";
#       "cio curl" for both); each worker replaces its client (and engine threads) every 1000 sessions. The RSS is
#       sampled every SOAK_SAMPLE_SECONDS (30); the run fails when the last sample exceeds 1.2 x the first sample
#       after the warm-up (min(120 s, a quarter of the run)) + 5 MiB, when a session fails, or when
#       AddressSanitizer or LeakSanitizer reports anything (LeakSanitizer checks at exit, with scripts/lsan.supp).
#   (c) reconnect: SOAK_WORKERS reconnecting sessions echo messages for SOAK_MINUTES minutes under AddressSanitizer
#       while the echo server is killed every SOAK_RESTART_SECONDS (10) and restarted on the same port
#       SOAK_DOWN_SECONDS (1) later, for each engine of SOAK_ENGINES. Fails on a session failure, when no
#       reconnection happened, when the RSS grows (the rule of (b)) or on a sanitizer report. Messages lost with
#       their connection are counted, not failures (the delivery guarantee is at most once).
#       SOAK_RECONNECT_BUILD=release runs (c) on the release build instead: no sanitizer, but a resident set that
#       means something (ASan's quarantine keeps up to 256 MiB of freed memory out of reuse).
#
# Environment: SOAK, SOAK_CONNECTIONS, SOAK_PARALLEL (handshakes in flight in (a), 500), SOAK_ROUNDS, SOAK_MINUTES,
# SOAK_ENGINES, SOAK_WORKERS, SOAK_SAMPLE_SECONDS, SOAK_RESTART_SECONDS, SOAK_DOWN_SECONDS, SOAK_RECONNECT_BUILD
# (asan or release), SOAK_SKIP_BUILD=1. Scratch:
# .build-soak (release, echo server) and .build-soak-asan (the Tools package under ASan). Logs: .build-soak/logs/.
# Exit status: 0 when every part passed, 1 otherwise.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi

WHAT="${SOAK:-all}"
CONNECTIONS="${SOAK_CONNECTIONS:-10000}"
PARALLEL="${SOAK_PARALLEL:-500}"
MINUTES="${SOAK_MINUTES:-10}"
ENGINES="${SOAK_ENGINES:-cio}"
WORKERS="${SOAK_WORKERS:-4}"
SAMPLE="${SOAK_SAMPLE_SECONDS:-30}"
LOGS="$ROOT/.build-soak/logs"
mkdir -p "$LOGS"
RESTART="${SOAK_RESTART_SECONDS:-10}"
DOWN="${SOAK_DOWN_SECONDS:-1}"
RECONNECT_BUILD="${SOAK_RECONNECT_BUILD:-asan}"
case "$WHAT" in all | connections | loop | reconnect) ;; *) echo "soak.sh: SOAK is all, connections, loop or reconnect, not '$WHAT'" >&2; exit 2 ;; esac
case "$RECONNECT_BUILD" in asan | release) ;; *) echo "soak.sh: SOAK_RECONNECT_BUILD is asan or release, not '$RECONNECT_BUILD'" >&2; exit 2 ;; esac
# What needs which build: (a) and a release (c) the release build, (b) and an ASan (c) the ASan build.
NEEDS_RELEASE=0
NEEDS_ASAN=0
if [ "$WHAT" = all ] || [ "$WHAT" = connections ]; then NEEDS_RELEASE=1; fi
if [ "$WHAT" = all ] || [ "$WHAT" = loop ]; then NEEDS_ASAN=1; fi
if [ "$WHAT" = reconnect ]; then
    if [ "$RECONNECT_BUILD" = release ]; then NEEDS_RELEASE=1; else NEEDS_ASAN=1; fi
fi

RESULTS=()
FAILED=0
SERVER_PID=""
stop_server() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=""; fi
}
trap 'stop_server' EXIT
trap 'stop_server; echo "soak.sh: interrupted" >&2; exit 130' INT TERM

rss_of() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null; }   # KiB

# Every process here needs one descriptor per connection: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$WHAT" != loop ] && [ "$WHAT" != reconnect ] && [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((CONNECTIONS + 256)) ]; then
    echo "soak.sh: the open-files limit is $(ulimit -n) (hard $(ulimit -Hn)); $CONNECTIONS connections need" \
        "$((CONNECTIONS + 256)); lower SOAK_CONNECTIONS or raise the hard limit" >&2
    exit 1
fi

# ------------------------------------------------------------------------------------------------- build
SERVER_BIN="$ROOT/.build-soak/echo_server"
if [ "${SOAK_SKIP_BUILD:-0}" != 1 ]; then
    echo "=== soak.sh: building the echo server (cc -O2 ... -lssl -lcrypto)"
    cc -O2 -Wall -o "$SERVER_BIN" Benchmarks/c/echo_server.c -lssl -lcrypto || { echo "soak.sh: FAILED: the echo server did not build" >&2; exit 1; }
    if [ "$NEEDS_RELEASE" = 1 ]; then
        echo "=== soak.sh: swift build --package-path Tools -c release --product wssoak --scratch-path .build-soak"
        bash "$ROOT/scripts/build-tools.sh" -c release --product wssoak --scratch-path .build-soak >"$LOGS/build-release.log" 2>&1 \
            || { tail -n 30 "$LOGS/build-release.log"; echo "soak.sh: FAILED: wssoak (release) did not build" >&2; exit 1; }
    fi
    if [ "$NEEDS_ASAN" = 1 ]; then
        echo "=== soak.sh: swift build --package-path Tools --product wssoak --sanitize=address --scratch-path .build-soak-asan"
        bash "$ROOT/scripts/build-tools.sh" --product wssoak --sanitize=address --scratch-path .build-soak-asan >"$LOGS/build-asan.log" 2>&1 \
            || { tail -n 30 "$LOGS/build-asan.log"; echo "soak.sh: FAILED: wssoak (ASan) did not build" >&2; exit 1; }
    fi
fi

start_server() {
    local port tries
    for tries in 1 2 3 4 5; do
        port="${1:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')}"
        PORT="$port"
        "$SERVER_BIN" "$port" 2>"$LOGS/echo_server.log" &
        SERVER_PID=$!
        for _ in $(seq 50); do
            if grep -q listening "$LOGS/echo_server.log" 2>/dev/null; then URL="ws://127.0.0.1:$port/"; return 0; fi
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        stop_server
    done
    echo "soak.sh: FAILED: the echo server did not start: $(cat "$LOGS/echo_server.log")" >&2
    exit 1
}

# ------------------------------------------------------------------------------------------------- (a)
if [ "$WHAT" != loop ] && [ "$WHAT" != reconnect ]; then
    echo "=== soak.sh: (a) $CONNECTIONS concurrent connections, CIO engine (release), ulimit -n $(ulimit -n)"
    start_server
    server_before="$(rss_of "$SERVER_PID")"
    log="$LOGS/connections.log"
    : >"$log"
    "$ROOT/.build-soak/release/wssoak" open "$URL" --connections "$CONNECTIONS" --parallel "$PARALLEL" \
        --engine cio --rounds "${SOAK_ROUNDS:-3}" >"$log" 2>&1 &
    soak_pid=$!
    tail -n +1 -f "$log" --pid "$soak_pid" &
    tail_pid=$!
    # the server's RSS while every connection is open: sampled until the client ends
    server_peak="$server_before"
    while kill -0 "$soak_pid" 2>/dev/null; do
        r="$(rss_of "$SERVER_PID")"; if [ -n "$r" ] && [ "$r" -gt "$server_peak" ]; then server_peak="$r"; fi
        sleep 0.5
    done
    wait "$soak_pid"
    rc=$?
    wait "$tail_pid" 2>/dev/null
    result="$(grep '^RESULT' "$log" | tail -n 1)"
    stop_server
    server_line="echo server RSS $((server_before / 1024)) MiB -> peak $((server_peak / 1024)) MiB"
    echo "soak.sh: (a) $server_line"
    if [ "$rc" = 0 ] && grep -q 'status=PASS' <<<"$result"; then
        RESULTS+=("(a) connections: PASS — ${result#RESULT }; $server_line")
    else
        RESULTS+=("(a) connections: FAILED (exit $rc) — ${result:-no RESULT line, see $log}")
        FAILED=1
    fi
fi

# ------------------------------------------------------------------------------------------------- (b)
if [ "$WHAT" = all ] || [ "$WHAT" = loop ]; then
    for engine in $ENGINES; do
        echo "=== soak.sh: (b) connect/send/close loop, engine $engine, $MINUTES min, AddressSanitizer"
        start_server
        log="$LOGS/loop-$engine.log"
        : >"$log"
        LSAN_OPTIONS="suppressions=$ROOT/scripts/lsan.supp:print_suppressions=1" \
        ASAN_OPTIONS="detect_leaks=1:abort_on_error=0" \
            "$ROOT/.build-soak-asan/debug/wssoak" loop "$URL" --minutes "$MINUTES" --engine "$engine" \
            --workers "$WORKERS" --sample-seconds "$SAMPLE" >"$log" 2>&1 &
        soak_pid=$!
        tail -n +1 -f "$log" --pid "$soak_pid" &
        tail_pid=$!
        wait "$soak_pid"
        rc=$?
        wait "$tail_pid" 2>/dev/null
        sleep 0.5
        server_rss="$(rss_of "$SERVER_PID")"
        stop_server
        result="$(grep '^RESULT' "$log" | tail -n 1)"
        asan="$(grep -cE '^==[0-9]+==ERROR: (AddressSanitizer|LeakSanitizer)' "$log")"
        if grep -q 'ERROR: LeakSanitizer' "$log"; then
            grep -E 'SUMMARY: AddressSanitizer|Direct leak|Indirect leak' "$log" | head -n 20
        fi
        if [ "$rc" = 0 ] && [ "$asan" = 0 ] && grep -q 'status=PASS' <<<"$result"; then
            RESULTS+=("(b) loop $engine: PASS — no ASan/LSan report; ${result#RESULT }")
        else
            RESULTS+=("(b) loop $engine: FAILED (exit $rc, $asan sanitizer reports) — ${result:-no RESULT line} (log: $log)")
            FAILED=1
        fi
        echo "soak.sh: (b) $engine: exit $rc, sanitizer reports: $asan, echo server RSS at the end $((${server_rss:-0} / 1024)) MiB"
    done
fi

# ------------------------------------------------------------------------------------------------- (c)
if [ "$WHAT" = reconnect ]; then
    for engine in $ENGINES; do
        if [ "$RECONNECT_BUILD" = release ]; then
            build_name="release build"
            soak_bin="$ROOT/.build-soak/release/wssoak"
        else
            build_name="AddressSanitizer"
            soak_bin="$ROOT/.build-soak-asan/debug/wssoak"
        fi
        echo "=== soak.sh: (c) reconnecting sessions, server restarted every ${RESTART} s, engine $engine, $MINUTES min, $build_name"
        start_server
        log="$LOGS/reconnect-$engine-$RECONNECT_BUILD.log"
        : >"$log"
        LSAN_OPTIONS="suppressions=$ROOT/scripts/lsan.supp:print_suppressions=1" \
        ASAN_OPTIONS="detect_leaks=1:abort_on_error=0" \
            "$soak_bin" reconnect "$URL" --minutes "$MINUTES" --engine "$engine" \
            --workers "$WORKERS" --sample-seconds "$SAMPLE" >"$log" 2>&1 &
        soak_pid=$!
        tail -n +1 -f "$log" --pid "$soak_pid" &
        tail_pid=$!
        restarts=0
        while kill -0 "$soak_pid" 2>/dev/null; do
            for _ in $(seq $((RESTART * 10))); do kill -0 "$soak_pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$soak_pid" 2>/dev/null || break
            stop_server
            sleep "$DOWN"
            start_server "$PORT"
            restarts=$((restarts + 1))
        done
        wait "$soak_pid"
        rc=$?
        wait "$tail_pid" 2>/dev/null
        stop_server
        result="$(grep '^RESULT' "$log" | tail -n 1)"
        asan="$(grep -cE '^==[0-9]+==ERROR: (AddressSanitizer|LeakSanitizer)' "$log")"
        if grep -q 'ERROR: LeakSanitizer' "$log"; then
            grep -E 'SUMMARY: AddressSanitizer|Direct leak|Indirect leak' "$log" | head -n 20
        fi
        if [ "$rc" = 0 ] && [ "$asan" = 0 ] && grep -q 'status=PASS' <<<"$result"; then
            checked=$([ "$RECONNECT_BUILD" = asan ] && echo "no ASan/LSan report" || echo "no sanitizer in this build")
            RESULTS+=("(c) reconnect $engine ($build_name): PASS — $restarts server restarts, $checked; ${result#RESULT }")
        else
            RESULTS+=("(c) reconnect $engine ($build_name): FAILED (exit $rc, $asan sanitizer reports, $restarts restarts) — ${result:-no RESULT line} (log: $log)")
            FAILED=1
        fi
    done
fi

echo "=== soak.sh: summary"
for line in "${RESULTS[@]}"; do echo "$line"; done
if [ "$FAILED" = 0 ]; then echo "soak.sh: PASSED"; exit 0; fi
echo "soak.sh: FAILED"
exit 1
