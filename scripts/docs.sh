#!/usr/bin/env bash
# Builds the DocC documentation of every library module with the toolchain's `docc`, warnings as errors:
#
#   bash scripts/docs.sh              # archives in .build-docs/archives/<Module>.doccarchive
#   MODULES="WSCore" bash scripts/docs.sh
#   PREVIEW=WSCore bash scripts/docs.sh   # serves one module's documentation on http://localhost:8080 instead
#
# The symbol graphs come from a build of the package with -emit-symbol-graph in a scratch folder of its own
# (.build-docs), so the normal build's cache is untouched. The catalogs are Sources/<Module>/<Module>.docc.
# Each module's archive stands alone: a doc comment names another module's symbol in code voice (`WebSocketError`),
# since a double-backtick link resolves only within its own module. The last line says PASSED or FAILED and which
# module failed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi
DOCC="$(command -v docc || true)"
if [ -z "$DOCC" ]; then DOCC="$(dirname "$(readlink -f "$(command -v swift)")")/docc"; fi
if [ ! -x "$DOCC" ]; then echo "docs.sh: FAILED: no docc next to swift — install a Swift toolchain that ships DocC (6.0 or later)" >&2; exit 1; fi

MODULES=${MODULES:-"WSCore WSEngineCIO WSEngineCurl WSExtensions WSSerialization WSTesting WebSocketClientKit"}
SCRATCH=.build-docs
GRAPHS="$SCRATCH/symbol-graphs"
OUT="$SCRATCH/archives"
# Not emptied first: a module that does not need recompiling writes no new graph, and its last one is current.
mkdir -p "$GRAPHS" "$OUT"

for module in $MODULES; do
    if ! swift build --scratch-path "$SCRATCH" --target "$module" \
        -Xswiftc -emit-symbol-graph -Xswiftc -emit-symbol-graph-dir -Xswiftc "$ROOT/$GRAPHS" >"$SCRATCH/build.log" 2>&1; then
        tail -n 30 "$SCRATCH/build.log" >&2
        echo "docs.sh: FAILED: building $module for its symbol graph — see the output above" >&2
        exit 1
    fi
done

failed=()
for module in $MODULES; do
    graphs="$SCRATCH/graphs-$module"
    rm -rf "$graphs"
    mkdir -p "$graphs"
    # The module's own graph and its extensions of other modules' types (Module@Other.symbols.json).
    cp "$GRAPHS/$module.symbols.json" "$graphs/"
    for extra in "$GRAPHS/$module@"*.symbols.json; do [ -e "$extra" ] && cp "$extra" "$graphs/"; done
    if [ -n "${PREVIEW:-}" ] && [ "$PREVIEW" = "$module" ]; then
        exec "$DOCC" preview "Sources/$module/$module.docc" --additional-symbol-graph-dir "$graphs" \
            --fallback-display-name "$module" --fallback-bundle-identifier "swift-websocket-client.$module"
    fi
    log="$SCRATCH/docc-$module.log"
    if "$DOCC" convert "Sources/$module/$module.docc" --additional-symbol-graph-dir "$graphs" \
        --output-path "$OUT/$module.doccarchive" --fallback-display-name "$module" \
        --fallback-bundle-identifier "swift-websocket-client.$module" --warnings-as-errors >"$log" 2>&1; then
        echo "docs.sh: $module: $OUT/$module.doccarchive"
    else
        grep -E "warning|error" "$log" | head -n 40 >&2 || tail -n 20 "$log" >&2
        failed+=("$module")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "docs.sh: FAILED: docc reported warnings or errors for ${failed[*]} — see the lines above"
    exit 1
fi
echo "docs.sh: PASSED — $MODULES"
