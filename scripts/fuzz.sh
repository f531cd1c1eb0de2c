#!/usr/bin/env bash
# Builds the libFuzzer targets in Fuzz/ and runs each for a bounded time (Docs/Fuzzing.md).
#
#   bash scripts/fuzz.sh [TARGET...]            fuzz every target (or the ones named) for FUZZ_SECONDS each
#   bash scripts/fuzz.sh --replay [TARGET...]   run the seeds and the kept regression inputs once, no fuzzing
#   bash scripts/fuzz.sh --minimize TARGET FILE minimize a crash input (writes FILE.min next to it)
#
# Targets: FuzzFrameDecoder FuzzHTTPResponse FuzzExtensionHeader FuzzClosePayload FuzzUTF8 FuzzInflate
#          FuzzStreamingAssembler.
#
# Each run starts from the committed seeds (Fuzz/corpus/<target>/, never written to) plus a working corpus that
# libFuzzer grows and that is kept between runs (Fuzz/.work/corpus/<target>/, ignored by git). Crash, timeout and
# out-of-memory inputs go to Fuzz/crashes/<target>/ (ignored by git: minimize them and move them to
# Tests/Fixtures/fuzz-regressions/<target>/, where the unit tests replay them). Logs: Fuzz/.work/logs/<target>.log.
# Per target the summary prints libFuzzer's final figures: executions, exec/s, cov: (covered edges), ft:
# (features) and the corpus size.
#
# Environment:
#   FUZZ_SECONDS=60     seconds per target
#   FUZZ_TIMEOUT=10     seconds one input may take before libFuzzer reports a hang
#   FUZZ_RSS_MB=4096    memory limit per fuzzer process (ASan's quarantine counts too)
#   FUZZ_MAX_LEN=       libFuzzer's -max_len (default: libFuzzer's own, 4096 unless the corpus has longer inputs)
#   FUZZ_FRESH=1        empty the working corpus first
#   FUZZ_SKIP_BUILD=1   use the binaries already built
#   FUZZ_ARGS=          more libFuzzer flags, e.g. "-jobs=2 -workers=2" or "-dict=..."
#
# Exit status: 0 when every target ran without a finding, 1 when a target crashed, hung, ran out of memory or a
# build failed, 2 on a usage error.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/Fuzz"
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi

ALL_TARGETS=(FuzzFrameDecoder FuzzHTTPResponse FuzzExtensionHeader FuzzClosePayload FuzzUTF8 FuzzInflate FuzzStreamingAssembler)
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
SCRATCH="$FUZZ/.build-fuzz"
BIN="$SCRATCH/release"
WORK="$FUZZ/.work"
CRASHES="$FUZZ/crashes"

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

check_target() {
    local t
    for t in "${ALL_TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done
    echo "fuzz.sh: unknown target '$1' (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
}

build() {
    [ "${FUZZ_SKIP_BUILD:-0}" = 1 ] && return 0
    echo "fuzz.sh: building the fuzz targets (release, -sanitize=fuzzer,address) ..."
    mkdir -p "$WORK/logs"
    local log="$WORK/logs/build.log" rc
    (cd "$FUZZ" && swift build -c release --scratch-path "$SCRATCH" \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library) >"$log" 2>&1
    rc=$?
    # ld.gold prints thousands of harmless "Cannot export local symbol '__asan_...'" warnings; show the rest.
    grep -v "Cannot export local symbol" "$log" | grep -E "warning:|error:" || true
    if [ "$rc" != 0 ]; then
        grep -v "Cannot export local symbol" "$log" | tail -30
        echo "fuzz.sh: FAILED: the build failed (log: $log)" >&2
        exit 1
    fi
}

# The value after `key:` in libFuzzer's last status line ("#N DONE cov: X ft: Y corp: A/Bb exec/s: Z ...").
status_field() { grep -E '^#[0-9]+' "$1" | tail -1 | grep -oE "$2: [^ ]+" | head -1 | cut -d' ' -f2; }

MODE=fuzz
case "${1:-}" in
    --replay) MODE=replay; shift ;;
    --minimize) MODE=minimize; shift ;;
    -h|--help) usage ;;
    -*) usage ;;
esac

mkdir -p "$WORK/logs"
if [ "$MODE" = minimize ]; then
    [ "$#" = 2 ] || usage
    check_target "$1"
    build
    input="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
    "$BIN/$1" -minimize_crash=1 -max_total_time="${FUZZ_SECONDS:-60}" -exact_artifact_path="$input.min" "$input" \
        >"$WORK/logs/minimize-$1.log" 2>&1
    if [ -f "$input.min" ]; then
        echo "fuzz.sh: minimized $(wc -c <"$input") -> $(wc -c <"$input.min") bytes: $input.min"
        echo "fuzz.sh: keep it as Tests/Fixtures/fuzz-regressions/$1/<name> once the bug is fixed"
        exit 0
    fi
    echo "fuzz.sh: minimization failed (log: $WORK/logs/minimize-$1.log)" >&2
    exit 1
fi

TARGETS=("$@")
[ "${#TARGETS[@]}" = 0 ] && TARGETS=("${ALL_TARGETS[@]}")
for t in "${TARGETS[@]}"; do check_target "$t"; done
build

if [ "$MODE" = replay ]; then
    failed=0
    for t in "${TARGETS[@]}"; do
        dirs=("$FUZZ/corpus/$t")
        [ -d "$ROOT/Tests/Fixtures/fuzz-regressions/$t" ] && dirs+=("$ROOT/Tests/Fixtures/fuzz-regressions/$t")
        log="$WORK/logs/replay-$t.log"
        if "$BIN/$t" -runs=0 -timeout="${FUZZ_TIMEOUT:-10}" "${dirs[@]}" >"$log" 2>&1; then
            printf '%-20s ok   %s inputs\n' "$t" "$(find "${dirs[@]}" -type f ! -name '.*' | wc -l)"
        else
            printf '%-20s FAIL (log: %s)\n' "$t" "$log"
            failed=1
        fi
    done
    exit "$failed"
fi

[ "$SECONDS_PER_TARGET" -gt 0 ] 2>/dev/null || { echo "fuzz.sh: FUZZ_SECONDS must be a positive number" >&2; exit 2; }
echo "fuzz.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), ${SECONDS_PER_TARGET}s per target: ${TARGETS[*]}"
SUMMARY=()
FAILED=()
for t in "${TARGETS[@]}"; do
    corpus="$WORK/corpus/$t"
    [ "${FUZZ_FRESH:-0}" = 1 ] && rm -rf "$corpus"
    mkdir -p "$corpus" "$CRASHES/$t"
    log="$WORK/logs/$t.log"
    marker="$WORK/.started-$t"
    touch "$marker"
    max_len=()
    [ -n "${FUZZ_MAX_LEN:-}" ] && max_len=(-max_len="$FUZZ_MAX_LEN")
    # The working corpus comes first: libFuzzer writes new inputs into the first directory only.
    # shellcheck disable=SC2086
    "$BIN/$t" -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 -timeout="${FUZZ_TIMEOUT:-10}" \
        -rss_limit_mb="${FUZZ_RSS_MB:-4096}" -artifact_prefix="$CRASHES/$t/" "${max_len[@]}" ${FUZZ_ARGS:-} \
        "$corpus" "$FUZZ/corpus/$t" >"$log" 2>&1
    rc=$?
    artifacts=$(find "$CRASHES/$t" -type f -newer "$marker" | sort)
    rm -f "$marker"
    execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    line=$(printf '%-20s execs %-10s exec/s %-7s cov %-6s ft %-7s corpus %-12s' "$t" "${execs:-?}" \
        "$(status_field "$log" exec/s)" "$(status_field "$log" cov)" "$(status_field "$log" ft)" \
        "$(status_field "$log" corp)")
    if [ "$rc" = 0 ] && [ -z "$artifacts" ]; then
        SUMMARY+=("$line ok")
    else
        SUMMARY+=("$line FAILED (exit $rc)")
        FAILED+=("$t")
        grep -m1 -E "oracle failed|Fatal error|ERROR: (libFuzzer|AddressSanitizer)" "$log" | sed 's/^/    /'
        for a in $artifacts; do echo "    input: $a"; done
        echo "    log: $log"
    fi
    echo "${SUMMARY[-1]}"
done

echo
echo "fuzz.sh: summary (${SECONDS_PER_TARGET}s per target)"
printf '  %s\n' "${SUMMARY[@]}"
if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "fuzz.sh: FAILED: ${FAILED[*]} — crash inputs are in Fuzz/crashes/<target>/;" \
        "minimize with: bash scripts/fuzz.sh --minimize TARGET FILE"
    exit 1
fi
echo "fuzz.sh: no crashes"
