#!/usr/bin/env bash
# The main job:  bash scripts/demo.sh
# Installs what building needs (scripts/setup.sh --minimal), builds `wsc` (the Tools package) and runs `wsc demo`
# (a demo against an embedded echo server on loopback; no outside server). Extra arguments go to `wsc demo`.
set -euo pipefail
# a command failing under set -e would end the script silently; say where (not under set +e)
# shellcheck disable=SC2154
trap 'rc=$?; if [[ $- == *e* ]]; then echo "demo: FAILED: unexpected error (exit $rc) at line $LINENO of $0 — rerun with bash -x to see more" >&2; fi' ERR

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi

fail() { echo "demo: FAILED: $1 — $2" >&2; exit 1; }

bash "$ROOT/scripts/setup.sh" --minimal || fail "setup (scripts/setup.sh --minimal)" "see the setup message above"
echo "demo: building wsc (debug; the first build takes a few minutes)"
# wsc is in the Tools package (tools apart from the library, so that its users resolve none of their dependencies)
bash "$ROOT/scripts/build-tools.sh" --product wsc \
    || fail "building wsc (swift build --package-path Tools --product wsc)" "see the compiler errors above"
BIN="$(swift build --package-path Tools --show-bin-path)" || fail "swift build --show-bin-path" "see the error above"
echo "demo: running $BIN/wsc demo $*"
set +e
"$BIN/wsc" demo "$@"
rc=$?
set -e
[ "$rc" = 0 ] || fail "wsc demo exited with status $rc" "see its output above"
