#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing server on loopback and drives every case through `wsc echo URL`.
# Needs scripts/setup.sh first (it installs .autobahn where Python 2.7 exists, and the .venv).
#
# Environment (all optional):
#   AUTOBAHN_CASES="1.*,2.*"      case patterns (default 1.* .. 10.*; "12.*,13.*" are the compression groups)
#   AUTOBAHN_EXCLUDE_CASES=""     patterns to leave out (default none)
#   AUTOBAHN_ENGINE=cio|curl      passes --engine to wsc; the agent becomes swift-ws-<engine> (default cio, no flag)
#   AUTOBAHN_DEFLATE=1            passes --deflate to wsc (offer permessage-deflate; needed by the 12.* and 13.* cases)
#   AUTOBAHN_AGENT=name           agent name in the report (default swift-ws-<engine>)
#   AUTOBAHN_CASE_TIMEOUT=60      seconds per case before the client is killed
#   AUTOBAHN_TOTAL_TIMEOUT=1500   seconds for all cases; cases not started by then count as failed
#   AUTOBAHN_BUILD_CONFIG=debug   which `swift build` configuration's wsc to use (debug|release)
#   WSC=/path/to/wsc              the wsc binary (default: the Tools package's, built or brought up to date first)
#   WSC_CMD="prog args"           a whole client command instead of "wsc echo [--engine X]"; the URL is appended
#                                 (e.g. WSC_CMD=".venv/bin/python Tests/Fixtures/py_echo_client.py")
# Reports: autobahn-reports/clients/index.json and one HTML/JSON file per case.
set -euo pipefail
# a command failing under set -e would end the script silently; say where (not under set +e)
# shellcheck disable=SC2154
trap 'rc=$?; if [[ $- == *e* ]]; then echo "autobahn: FAILED: unexpected error (exit $rc) at line $LINENO of $0 — rerun with bash -x to see more" >&2; fi' ERR

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$SECONDS

fail() { echo "autobahn: FAILED: $1 — $2" >&2; exit 1; }

# ------------------------------------------------------------------------------------------------ prerequisites
if [ -f .autobahn/UNAVAILABLE ] && [ ! -f .autobahn/env ]; then
    echo "autobahn: SKIPPED — no Python 2.7 (pyenv) on this machine ($(cat .autobahn/UNAVAILABLE))"
    exit 0
fi
if [ ! -f .autobahn/env ] || [ ! -f .autobahn/bin/wstest ]; then
    fail "Autobahn|Testsuite is not installed (.autobahn)" "run ./scripts/setup.sh first"
fi
# shellcheck disable=SC1091
. .autobahn/env
[ -x "${AUTOBAHN_PY2:-}" ] || fail "Python 2.7 '${AUTOBAHN_PY2:-}' from .autobahn/env is gone" "rerun ./scripts/setup.sh"
PY3="${WS_TEST_PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY3" ] || fail "the test venv's python ($PY3) is missing" "run ./scripts/setup.sh first"
CTL=("$PY3" "$ROOT/Tests/Fixtures/autobahn_ctl.py")

ENGINE="${AUTOBAHN_ENGINE:-cio}"
case "$ENGINE" in cio | curl) ;; *) fail "AUTOBAHN_ENGINE='$ENGINE'" "use cio or curl" ;; esac
AGENT="${AUTOBAHN_AGENT:-swift-ws-$ENGINE}"
CASE_TIMEOUT="${AUTOBAHN_CASE_TIMEOUT:-60}"
TOTAL_TIMEOUT="${AUTOBAHN_TOTAL_TIMEOUT:-1500}"

if [ -n "${WSC_CMD:-}" ]; then
    read -r -a CLIENT <<<"$WSC_CMD"
else
    if [ -z "${WSC:-}" ]; then
        if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi
        CONFIG="${AUTOBAHN_BUILD_CONFIG:-debug}"
        # wsc lives in the Tools package; building it is a no-op when it is up to date (test.sh built it).
        bash "$ROOT/scripts/build-tools.sh" -c "$CONFIG" --product wsc >/dev/null \
            || fail "building wsc (swift build --package-path Tools -c $CONFIG --product wsc)" "see the compiler errors above"
        BIN="$(swift build --package-path Tools -c "$CONFIG" --show-bin-path)" || fail "swift build --show-bin-path" "see the error above"
        WSC="$BIN/wsc"
    fi
    [ -x "$WSC" ] || fail "wsc binary '$WSC' not found" "build it (swift build --package-path Tools --product wsc) or set WSC=/path/to/wsc"
    CLIENT=("$WSC" echo)
    [ -n "${AUTOBAHN_ENGINE:-}" ] && CLIENT+=(--engine "$ENGINE")
    if [ "${AUTOBAHN_DEFLATE:-0}" = 1 ]; then CLIENT+=(--deflate); fi
fi

# ----------------------------------------------------------------------------------------------------- the spec
json_list() { # "1.*, 2.*" -> ["1.*", "2.*"]
    local out="" item
    IFS=',' read -r -a items <<<"$1"
    for item in "${items[@]}"; do
        item="$(echo "$item" | tr -d '[:space:]')"
        [ -n "$item" ] && out="$out${out:+, }\"$item\""
    done
    echo "[$out]"
}
CASES="${AUTOBAHN_CASES:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,8.*,9.*,10.*}"
PORT="$("$PY3" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
REPORTS="$ROOT/autobahn-reports/clients"
WORK="$(mktemp -d /tmp/autobahn.XXXXXX)"
rm -rf "$REPORTS"
mkdir -p "$REPORTS"
cat >"$WORK/spec.json" <<JSON
{
  "url": "ws://127.0.0.1:$PORT",
  "outdir": "$REPORTS",
  "cases": $(json_list "$CASES"),
  "exclude-cases": $(json_list "${AUTOBAHN_EXCLUDE_CASES:-}"),
  "exclude-agent-cases": {},
  "options": {"failByDrop": false}
}
JSON

SERVER_PID=""
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------------------------- the server
echo "autobahn: fuzzingserver on ws://127.0.0.1:$PORT, cases $(json_list "$CASES"), agent $AGENT, client: ${CLIENT[*]}"
(cd "$WORK" && exec env PYTHONPATH="$ROOT/.autobahn" "$AUTOBAHN_PY2" "$ROOT/.autobahn/bin/wstest" \
    -m fuzzingserver -s "$WORK/spec.json" -u 0 >"$WORK/server.log" 2>&1) &
SERVER_PID=$!
for _ in $(seq 1 150); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        tail -n 30 "$WORK/server.log" >&2
        fail "the fuzzing server exited at start" "see its log above; rerun ./scripts/setup.sh"
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    sleep 0.2
done
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || {
    tail -n 30 "$WORK/server.log" >&2; fail "the fuzzing server did not listen on port $PORT within 30 s" "see its log above"; }

BASE="ws://127.0.0.1:$PORT"
COUNT="$("${CTL[@]}" case-count "$BASE")" || fail "getCaseCount" "the fuzzing server did not answer; its log: $(tail -n 5 "$WORK/server.log")"
[ "$COUNT" -gt 0 ] 2>/dev/null || fail "the server has $COUNT cases for $(json_list "$CASES")" "check AUTOBAHN_CASES"
echo "autobahn: $COUNT cases (per-case timeout ${CASE_TIMEOUT}s), server up after $((SECONDS - START))s"

# ------------------------------------------------------------------------------------------------- the cases
TIMEOUTS=0
NONZERO=0
RUN_START=$SECONDS
NOT_RUN=0
for ((n = 1; n <= COUNT; n++)); do
    if [ $((SECONDS - RUN_START)) -ge "$TOTAL_TIMEOUT" ]; then
        NOT_RUN=$((COUNT - n + 1))
        echo "autobahn: time budget of ${TOTAL_TIMEOUT}s (AUTOBAHN_TOTAL_TIMEOUT) used up; $NOT_RUN cases not run"
        break
    fi
    url="$BASE/runCase?case=$n&agent=$AGENT"
    set +e
    timeout -k 5 "$CASE_TIMEOUT" "${CLIENT[@]}" "$url" </dev/null >"$WORK/client.log" 2>&1
    rc=$?
    set -e
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        TIMEOUTS=$((TIMEOUTS + 1))
        echo "autobahn: case $n: client killed after ${CASE_TIMEOUT}s"
    elif [ "$rc" != 0 ]; then
        NONZERO=$((NONZERO + 1))
    fi
    if [ $((n % 50)) = 0 ] || [ "$n" = "$COUNT" ]; then
        echo "autobahn: $n/$COUNT cases run ($((SECONDS - RUN_START))s; clients exiting non-zero: $NONZERO, killed: $TIMEOUTS)"
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        tail -n 30 "$WORK/server.log" >&2
        fail "the fuzzing server died during case $n" "see its log above"
    fi
done

"${CTL[@]}" update-reports "$BASE" "$AGENT" || fail "updateReports" "the fuzzing server did not write its reports; log: $(tail -n 5 "$WORK/server.log")"
set +e
"${CTL[@]}" check "$REPORTS/index.json" "$AGENT" "$COUNT"
rc=$?
set -e
[ "$NOT_RUN" = 0 ] || { echo "autobahn: FAILED: $NOT_RUN cases not run (time budget)"; rc=1; }
echo "autobahn: report in autobahn-reports/clients/index.html; elapsed $((SECONDS - START))s"
exit "$rc"
