#!/usr/bin/env bash
# Codec micro-benchmarks: encode and decode of 1,000 frames of 128 B and 64 KiB, without the network, in
# ns per frame, MB/s and allocations per frame (recorded in Docs/Performance.md, "Codec micro-benchmarks").
#
#   bash scripts/bench-codec.sh                 # Markdown table on stdout
#   bash scripts/bench-codec.sh --json          # the same figures as JSON
#   bash scripts/bench-codec.sh --runs 3        # three runs one after the other (the machine may be noisy)
#   bash scripts/bench-codec.sh --serialization # the WSSerialization converters instead: messages per second
#   bash scripts/bench-codec.sh --session       # a whole session per small message, in process (--read-size BYTES)
#
# Other arguments go to the benchmark: --iterations N (50), --warmup N (5), --frames N (1000), --size BYTES,
# --only TEXT. It is the `wsbench-codec` executable of the Benchmarks package (which compiles WSCore's codec sources
# through symlinks, since they are `package` API), built in release mode in Benchmarks/.build-codec (reused).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi

RUNS=1
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="${2:?--runs needs a count}"; shift 2 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done

SCRATCH="$ROOT/Benchmarks/.build-codec"
echo "bench-codec: building (release) in $SCRATCH ..." >&2
swift build --package-path "$ROOT/Benchmarks" -c release --scratch-path "$SCRATCH" --product wsbench-codec >&2
BIN="$SCRATCH/release/wsbench-codec"

CPU="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
echo "bench-codec: $(date -u +%Y-%m-%d), $(uname -m) ${CPU:-?}, $(nproc) cores," \
    "load $(cut -d' ' -f1-3 /proc/loadavg), $(swift --version 2>&1 | head -1)" >&2
for run in $(seq 1 "$RUNS"); do
    if [ "$RUNS" -gt 1 ]; then echo "bench-codec: run $run of $RUNS" >&2; fi
    "$BIN" ${ARGS[@]+"${ARGS[@]}"}
    if [ "$run" -lt "$RUNS" ]; then echo; fi
done
