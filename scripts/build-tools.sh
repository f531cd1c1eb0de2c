#!/usr/bin/env bash
# Builds the Tools package (wsc, wssoak) from the repository root:
#   bash scripts/build-tools.sh --product wsc [-c release] [--scratch-path DIR] [other swift build arguments]
#
# Why not a plain `swift build --package-path Tools`: SwiftPM does not notice source files added to or removed from a
# path dependency (here the library, `..`) in an existing build folder, and then fails with "cannot find type ..."
# for a type in a new file. Dropping the build plans (the *.yaml files, regenerated in a second or two; compiled
# objects are kept) makes it scan the library's sources again.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi

scratch="$ROOT/Tools/.build"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    if [ "${args[$i]}" = --scratch-path ] && [ $((i + 1)) -lt ${#args[@]} ]; then scratch="${args[$((i + 1))]}"; fi
done
rm -f "$scratch"/*.yaml
exec swift build --package-path "$ROOT/Tools" "$@"
