#!/usr/bin/env bash
# Formatting with the toolchain's `swift format` and the repository's .swift-format configuration.
#
#   bash scripts/format.sh          rewrites every Swift file of the repository in place
#   bash scripts/format.sh --lint   changes nothing; lists what is not formatted and exits 1 if anything is
#                                   (scripts/test.sh runs this)
#
# Covered: the library and its tests, Tools/, Benchmarks/ (its own sources), Fuzz/ (its own sources; symlinked
# folders are formatted where they live), every Package.swift. Not covered: .build* folders and the symlinks.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi

# Every tracked Swift file that is a regular file (git ls-files skips .build*; -type f skips the symlinks).
mapfile -t FILES < <(git ls-files -z -- '*.swift' | xargs -0 -I{} find {} -maxdepth 0 -type f)
[ "${#FILES[@]}" -gt 0 ] || { echo "format: FAILED: no Swift files found — run it inside the git checkout" >&2; exit 1; }

if [ "${1:-}" = --lint ]; then
    out="$(swift format lint --strict --parallel "${FILES[@]}" 2>&1)" && rc=0 || rc=$?
    if [ "$rc" = 0 ] && [ -z "$out" ]; then
        echo "format: PASSED — ${#FILES[@]} files formatted as .swift-format says"
        exit 0
    fi
    printf '%s\n' "$out" | head -n 60
    echo "format: FAILED: $(printf '%s\n' "$out" | grep -c 'warning\|error') findings — run \`bash scripts/format.sh\` and commit the result (rules it cannot fix: see the lines above)" >&2
    exit 1
fi
swift format format --in-place --parallel "${FILES[@]}"
echo "format: ${#FILES[@]} files formatted"
