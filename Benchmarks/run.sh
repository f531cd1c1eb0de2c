#!/usr/bin/env bash
# Issue 7 benchmarks: builds the C echo server, the C limit client and wsbench (release), starts the echo
# server on 127.0.0.1:$PORT, and for each workload runs every client once per round, alternating
# (c A B C D, c A B C D, ...), $ROUNDS rounds. Prints a markdown table of medians, min–max and the median of
# the per-round ratios to the C client measured in the same round, and each client's CPU time per run (user + system,
# whole process) with its ratio to the C client's; also writes it to $OUT if set.
#
#   bash Benchmarks/run.sh                       # 5 rounds, W1–W5 and idle, all clients
#   ROUNDS=3 OUT=/tmp/table.md bash Benchmarks/run.sh
#   WORKLOADS="w2" CLIENTS="c ours-cio" bash Benchmarks/run.sh
#   WORKLOADS=w5 bash Benchmarks/run.sh           # permessage-deflate only
#   TLS=1 WORKLOADS="w1 w2 w3" bash Benchmarks/run.sh   # over wss://
#
# W5 (W3 with permessage-deflate: $W5_MIB MiB of 64 KiB compressible text messages, 16 in flight) runs against the
# Python websockets echo server (Tests/Fixtures/ws_server.py --deflate, from ../.venv) on 127.0.0.1:$W5_PORT, started
# only when WORKLOADS has w5. It runs the clients of $CLIENTS that support permessage-deflate (ours-*, wsclient: not
# the C client, not websocket-kit 2.16.2, which have none) plus ours-cio+nodeflate, our native engine without
# compression against the same server (what Python's own echo costs). Its table has the ratio to ours-cio in the
# same round instead of the ratio to C, and the extensions each client negotiated (a run fails if a client that should
# compress did not get permessage-deflate). 5 rounds of its 4 clients take about 70 s on the 2-core machine.
#
# TLS=1 runs W1–W3 over wss:// (TLS 1.3): the echo server serves TLS (OpenSSL, same single thread) with a self-signed
# P-256 certificate for 127.0.0.1 made with openssl at the start of the run ($SCRATCH/tls/), which the clients verify
# (WSBENCH_CA_FILE). Only the C client and our engines (ours-*, base-*) have a wss variant so far; W4, W5 and idle
# have none and are skipped, like websocket-kit and WSClient.
#
# idle opens IDLE_CONNECTIONS sessions (500 at a time) and leaves them idle: RSS per connection of our native engine
# (ours-cio*) and of the C client, the time to open them, and the echo server's RSS per connection. Connections are
# spread over IDLE_ADDRESSES destination addresses 127.0.0.1 ... 127.0.0.N (the echo server listens on each): one
# address and port leave a client at most ~28,000 ephemeral ports (ip_local_port_range). Every process needs
# IDLE_CONNECTIONS + 100 descriptors: the script raises the hard limit when it may (root with CAP_SYS_RESOURCE, up
# to fs.nr_open) and stops with a message when it may not. E.g. 100,000 (about 4 minutes per round on 2 busy cores):
#   IDLE_CONNECTIONS=100000 WORKLOADS=idle CLIENTS="c ours-cio" ROUNDS=3 TIMEOUT=900 bash Benchmarks/run.sh
#
# Environment: ROUNDS (5), PORT (19001), WORKLOADS ("w1 w2 w3 w4 w5 idle"), TLS (0),
# CLIENTS ("c ours-cio ours-curl websocket-kit wsclient"; "c" must come first; also ours-cio-pool and
# ours-curl-pool: our block API with runsBlocksOnEventLoop = false; ours-cio+buf and ours-curl+buf: our
# engines with maxIncomingBufferMessages raised to 4,096), W3_MIB (512), IDLE_CONNECTIONS (10000),
# TIMEOUT per run in seconds (300), OUT (markdown file), SKIP_BUILD=1 to reuse the last build,
# W5_MIB (64), W5_PORT (PORT + 1), PYTHON (../.venv/bin/python), IDLE_ADDRESSES (IDLE_CONNECTIONS ÷ 10,000, rounded
# up).
#
# Before/after a change, in the same rounds: build this directory in a second checkout at the old commit
# (`swift build -c release --scratch-path .build-bench --product wsbench-ours-cio`, likewise wsbench-ours-curl) and
# point BASE_BIN at that build's bin directory; the clients base-cio and base-curl then run the old build's drivers
# alternating with the others, e.g. CLIENTS="c base-cio ours-cio base-curl ours-curl".
set -euo pipefail
cd "$(dirname "$0")"

ROUNDS=${ROUNDS:-5}
PORT=${PORT:-19001}
WORKLOADS=${WORKLOADS:-"w1 w2 w3 w4 w5 idle"}
CLIENTS=${CLIENTS:-"c ours-cio ours-curl websocket-kit wsclient"}
W3_MIB=${W3_MIB:-512}
TLS=${TLS:-0}
W5_MIB=${W5_MIB:-64}
W5_PORT=${W5_PORT:-$((PORT + 1))}
PYTHON=${PYTHON:-../.venv/bin/python}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
IDLE_ADDRESSES=${IDLE_ADDRESSES:-$(((IDLE_CONNECTIONS + 9999) / 10000))}
export IDLE_CONNECTIONS IDLE_ADDRESSES
TIMEOUT=${TIMEOUT:-300}
OUT=${OUT:-}
SCRATCH=.build-bench
BIN_C=$SCRATCH/c

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    mkdir -p "$BIN_C"
    cc -O2 -Wall -o "$BIN_C/echo_server" c/echo_server.c -lssl -lcrypto
    cc -O2 -Wall -o "$BIN_C/wsclient_c" c/client.c -lssl -lcrypto
    swift build -c release --scratch-path "$SCRATCH" >&2
    # The WSClient driver is a package of its own (a module-name clash with our SDK); wsbench execs it from its dir.
    (cd WSClientBench && swift build -c release --scratch-path ../"$SCRATCH"/wsclient >&2)
    ln -sf "$(cd WSClientBench && swift build -c release --scratch-path ../"$SCRATCH"/wsclient --show-bin-path)/wsbench-wsclient" \
        "$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)/wsbench-wsclient"
fi
BIN="$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)"
WSBENCH="$BIN/wsbench"

# idle: every process (client, echo server) holds IDLE_CONNECTIONS sockets; raise the hard descriptor limit if needed.
if [[ " $WORKLOADS " == *" idle "* && "$TLS" != 1 ]]; then
    need=$((IDLE_CONNECTIONS + 100))
    if (($(ulimit -Hn) < need)) && ! ulimit -Hn "$need" 2>/dev/null; then
        echo "idle: $IDLE_CONNECTIONS connections need $need descriptors per process; the hard limit is $(ulimit -Hn)" \
            "and cannot be raised here (raising it needs root with CAP_SYS_RESOURCE; fs.nr_open is" \
            "$(cat /proc/sys/fs/nr_open)). Lower IDLE_CONNECTIONS or run where the limit may be raised." >&2
        exit 1
    fi
    if (($(cut -f1 /proc/sys/fs/file-max) < 2 * need + 10000)); then
        echo "idle: fs.file-max ($(cat /proc/sys/fs/file-max)) is below what the client and the server hold together;" \
            "raise it (sysctl fs.file-max=$((2 * need + 10000)))." >&2
        exit 1
    fi
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
    if ((IDLE_CONNECTIONS > (hi - lo) * IDLE_ADDRESSES * 9 / 10)); then
        echo "idle: $IDLE_CONNECTIONS connections over $IDLE_ADDRESSES address(es) leave too few ephemeral ports" \
            "($lo-$hi); raise IDLE_ADDRESSES." >&2
        exit 1
    fi
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
SERVER_ARGS=("$PORT")
URL="ws://127.0.0.1:$PORT/"
if [[ "$TLS" == 1 ]]; then
    mkdir -p "$SCRATCH/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1 -keyout "$SCRATCH/tls/key.pem" -out "$SCRATCH/tls/cert.pem" 2>/dev/null
    SERVER_ARGS+=("$SCRATCH/tls/cert.pem" "$SCRATCH/tls/key.pem")
    URL="wss://127.0.0.1:$PORT/"
    export WSBENCH_CA_FILE="$PWD/$SCRATCH/tls/cert.pem"
    kept=""
    for w in $WORKLOADS; do
        if [[ "$w" == w1 || "$w" == w2 || "$w" == w3 ]]; then kept+="$w "; else echo "TLS=1: skipping $w (no wss variant)" >&2; fi
    done
    WORKLOADS=$kept
    kept=""
    for c in $CLIENTS; do
        if [[ "$c" == c || "$c" == ours-* || "$c" == base-* ]]; then kept+="$c "; else echo "TLS=1: skipping $c (no wss variant)" >&2; fi
    done
    CLIENTS=$kept
fi
WSBENCH_ADDRESSES=$IDLE_ADDRESSES "$BIN_C/echo_server" "${SERVER_ARGS[@]}" 2>/dev/null &
SERVER_PID=$!
# The drivers' idle workload reports the server's RSS too.
export WSBENCH_SERVER_PID=$SERVER_PID
W5_SERVER_PID=
trap 'kill "$SERVER_PID" ${W5_SERVER_PID:+"$W5_SERVER_PID"} 2>/dev/null || true' EXIT
sleep 0.3

# W5: the clients with permessage-deflate, plus the uncompressed reference; and the Python server with compression.
W5_CLIENTS=""
for c in $CLIENTS; do
    if [[ "$c" != c && "$c" != websocket-kit ]]; then W5_CLIENTS+="$c "; fi
done
if [[ " $W5_CLIENTS " != *" ours-cio+nodeflate "* ]]; then W5_CLIENTS+="ours-cio+nodeflate"; fi
W5_URL="ws://127.0.0.1:$W5_PORT/echo"
if [[ " $WORKLOADS " == *" w5 "* ]]; then
    if [[ ! -x "$PYTHON" ]]; then echo "w5 needs the Python websockets venv ($PYTHON; scripts/setup.sh)" >&2; exit 1; fi
    W5_LOG=$SCRATCH/w5-server.log
    : >"$W5_LOG" # before the start: the server truncating it itself races with the wait below
    "$PYTHON" ../Tests/Fixtures/ws_server.py --deflate --port "$W5_PORT" >"$W5_LOG" 2>&1 &
    W5_SERVER_PID=$!
    for ((i = 0; i < 100; i++)); do
        if grep -q "^PORT $W5_PORT\$" "$W5_LOG"; then break; fi
        sleep 0.1
    done
    if ! grep -q "^PORT $W5_PORT\$" "$W5_LOG"; then echo "the Python server did not start: $(tail -c 300 "$W5_LOG")" >&2; exit 1; fi
fi

RESULTS=$SCRATCH/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl
: >"$RESULTS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

for w in $WORKLOADS; do
    clients=$CLIENTS
    if [[ "$w" == w5 ]]; then clients=$W5_CLIENTS; fi
    for ((r = 1; r <= ROUNDS; r++)); do
        for c in $clients; do
            # The idle workload (idle connections, RSS per connection) is measured for our native engine and the C
            # client only: the Curl engine holds 3 descriptors per connection (socket, and its multi handle's wakeup
            # pair), which 10,000 connections would take past this machine's descriptor limit (20,000).
            if [[ "$w" == idle && "$c" != ours-cio* && "$c" != c ]]; then continue; fi
            if [[ "$c" == c ]]; then
                cmd=("$BIN_C/wsclient_c" --workload "$w" --url "$URL" --w3-mib "$W3_MIB")
                if [[ "$w" == idle ]]; then cmd+=(--connections "$IDLE_CONNECTIONS" --addresses "$IDLE_ADDRESSES"); fi
            elif [[ "$c" == base-cio || "$c" == base-curl ]]; then
                if [[ -z "${BASE_BIN:-}" ]]; then echo "$c needs BASE_BIN (see the top of this script)" >&2; exit 1; fi
                cmd=("$BASE_BIN/wsbench-ours-${c#base-}" --client "ours-${c#base-}" --workload "$w" --url "$URL" --w3-mib "$W3_MIB")
            elif [[ "$w" == w5 ]]; then
                cmd=("$WSBENCH" --client "$c" --workload "$w" --url "$W5_URL" --w5-mib "$W5_MIB")
            else
                # wsbench execs our engines' drivers (their RSS is ours alone); call them directly when built.
                driver=$WSBENCH
                if [[ "$c" == ours-curl* && -x "$BIN/wsbench-ours-curl" ]]; then driver=$BIN/wsbench-ours-curl; fi
                if [[ "$c" == ours-cio* && -x "$BIN/wsbench-ours-cio" ]]; then driver=$BIN/wsbench-ours-cio; fi
                cmd=("$driver" --client "$c" --workload "$w" --url "$URL" --w3-mib "$W3_MIB")
                if [[ "$w" == idle ]]; then cmd+=(--connections "$IDLE_CONNECTIONS" --addresses "$IDLE_ADDRESSES"); fi
            fi
            rc=0
            line=$(timeout "$TIMEOUT" "${cmd[@]}" 2>"$SCRATCH/last-stderr.txt" | tail -n 1) || rc=$?
            if [[ "$c" == base-* ]]; then line=${line/\"client\":\"ours-/\"client\":\"base-}; fi
            if [[ "$line" == \{* ]]; then
                echo "{\"round\":$r,${line#\{}" >>"$RESULTS"
                echo "round $r $w $c: $line" >&2
            else
                why=$([[ $rc == 124 ]] && echo "timeout after ${TIMEOUT}s" || echo "exit $rc: $(tail -c 200 "$SCRATCH/last-stderr.txt" | tr -d '"\\\n')")
                echo "{\"round\":$r,\"client\":\"$c\",\"workload\":\"$w\",\"error\":\"$why\"}" >>"$RESULTS"
                echo "round $r $w $c: FAILED ($why)" >&2
            fi
            sleep 0.2
        done
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$RESULTS" "$ROUNDS" "$W3_MIB" "$LOAD_BEFORE" "$LOAD_AFTER" "$CLIENTS" "$W5_MIB" "$W5_CLIENTS" "$TLS" <<'EOF' | tee ${OUT:+"$OUT"}
import json, os, statistics, sys
path, rounds, w3, load_before, load_after, clients, w5, w5_clients, tls = sys.argv[1:10]
clients = clients.split()
w5_clients = w5_clients.split()
rows = [json.loads(l) for l in open(path) if l.strip()]
names = {"w1": "W1 ping-pong (rt/s)", "w2": "W2 128 B x 200k, 1000 in flight (msg/s)",
         "w3": f"W3 {w3} MiB in 64 KiB, 16 in flight (MB/s)", "w4": "W4 1,000 connections (conn/s)",
         "idle": f"{int(os.environ.get('IDLE_CONNECTIONS', '10000')):,} idle connections (RSS)"}
if tls == "1":
    names = {w: n.replace(" (", " over wss (", 1) for w, n in names.items()}
def f(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:,.2f}"
print(f"{rounds} rounds; loadavg before {load_before}, after {load_after}; results in {path}\n")
if any(r.get("workload") != "w5" for r in rows):
    print("| workload | client | median | min–max | ratio to C (median of per-round) | extra |")
    print("|---|---|---:|---:|---:|---|")
for w in ["w1", "w2", "w3", "w4", "idle"]:
    wr = [r for r in rows if r.get("workload") == w]
    if not wr: continue
    if w == "idle":
        for c in clients:
            ok = [r for r in wr if r["client"] == c and not r.get("error")]
            failed = sum(1 for r in wr if r["client"] == c and r.get("error"))
            if not ok:
                if failed: print(f"| {names[w]} | {c} | failed | | | {failed} of {failed} failed |")
                continue
            per = statistics.median(r["kib_per_connection"] for r in ok)
            after = [r["rss_after_mib"] for r in ok]
            opened = statistics.median(r["seconds"] for r in ok)
            extra = [f"{per:.1f} KiB" if per >= 1 else f"{per * 1024:.0f} B",
                     " per connection (RSS after − before ÷ connections); peak RSS "
                     f"{statistics.median(r['peak_rss_mib'] for r in ok):.1f} MiB; opened in {opened:.1f} s "
                     f"({min(r['seconds'] for r in ok):.1f}–{max(r['seconds'] for r in ok):.1f}), "
                     f"{statistics.median(r.get('addresses', 1) for r in ok)} address(es)"]
            srv = [r for r in ok if "server_kib_per_connection" in r]
            if srv:
                extra.append(f"; echo server {statistics.median(r['server_kib_per_connection'] for r in srv):.1f} KiB per "
                             f"connection, RSS {statistics.median(r['server_rss_after_mib'] for r in srv):.1f} MiB")
            if failed: extra.append(f"; {failed} run(s) failed")
            print(f"| {names[w]} | {c} | {statistics.median(after):.1f} MiB in all | {min(after):.1f}–{max(after):.1f} | – | "
                  f"{''.join(extra)} |")
        continue
    climit = {r["round"]: r["value"] for r in wr if r["client"] == "c" and not r.get("error")}
    for c in clients:
        ok = [r for r in wr if r["client"] == c and not r.get("error")]
        failed = sum(1 for r in wr if r["client"] == c and r.get("error"))
        if not ok:
            whys = sorted({str(r["error"]) for r in wr if r["client"] == c and r.get("error")})
            print(f"| {names[w]} | {c} | failed | | | {failed} of {failed} failed ({', '.join(whys)}) |"); continue
        vals = [r["value"] for r in ok]
        ratios = [r["value"] / climit[r["round"]] for r in ok if r["round"] in climit]
        extra = []
        if w == "w1":
            extra.append(f"p50 {statistics.median(r['p50_us'] for r in ok):.1f} µs, p99 {statistics.median(r['p99_us'] for r in ok):.1f} µs")
        if w == "w4":
            extra.append(f"wall {statistics.median(r['seconds'] for r in ok)*1000:.0f} ms")
        extra.append(f"peak RSS {statistics.median(r['peak_rss_mib'] for r in ok):.1f} MiB")
        # CPU of the whole process (start-up included), and its ratio to the C client's in the same round (lower is
        # better): the cost the wall-clock figures hide where the kernel's wake-ups bound them (W1).
        cpu = [r["cpu_ms"] for r in ok if "cpu_ms" in r]
        ccpu = {r["round"]: r["cpu_ms"] for r in wr if r["client"] == "c" and "cpu_ms" in r}
        cpu_ratios = [r["cpu_ms"] / ccpu[r["round"]] for r in ok if "cpu_ms" in r and ccpu.get(r["round"])]
        if cpu:
            extra.append(f"CPU {statistics.median(cpu):,.0f} ms" + (f" ({statistics.median(cpu_ratios):.2f}× C)" if cpu_ratios and c != "c" else ""))
        if failed:
            whys = sorted({str(r["error"]) for r in wr if r["client"] == c and r.get("error")})
            extra.append(f"{failed} run(s) failed ({', '.join(whys)})")
        ratio = f"{statistics.median(ratios):.3f}" if ratios else "–"
        print(f"| {names[w]} | {c} | {f(statistics.median(vals))} | {f(min(vals))}–{f(max(vals))} | {ratio} | {'; '.join(extra)} |")
# W5: a table of its own, with ratios to ours-cio (permessage-deflate) in the same round.
wr = [r for r in rows if r.get("workload") == "w5"]
if wr:
    name = f"W5 {w5} MiB text in 64 KiB, 16 in flight, permessage-deflate, Python server (MB/s)"
    base = {r["round"]: r["value"] for r in wr if r["client"] == "ours-cio" and not r.get("error")}
    if len(rows) > len(wr): print()
    print("| workload | client | median | min–max | ratio to ours-cio (median of per-round) | extra |")
    print("|---|---|---:|---:|---:|---|")
    for c in w5_clients:
        ok = [r for r in wr if r["client"] == c and not r.get("error")]
        failed = [r for r in wr if r["client"] == c and r.get("error")]
        whys = sorted({str(r["error"]) for r in failed})
        if not ok:
            if failed: print(f"| {name} | {c} | failed | | | {len(failed)} of {len(failed)} failed ({', '.join(whys)}) |")
            continue
        vals = [r["value"] for r in ok]
        ratios = [r["value"] / base[r["round"]] for r in ok if r["round"] in base]
        negotiated = sorted({r.get("extensions", "") for r in ok})
        extra = ["extensions: " + " / ".join(f"`{n}`" if n else "none" for n in negotiated),
                 f"peak RSS {statistics.median(r['peak_rss_mib'] for r in ok):.1f} MiB"]
        if failed: extra.append(f"{len(failed)} run(s) failed ({', '.join(whys)})")
        ratio = f"{statistics.median(ratios):.3f}" if ratios else "–"
        print(f"| {name} | {c} | {f(statistics.median(vals))} | {f(min(vals))}–{f(max(vals))} | {ratio} | {'; '.join(extra)} |")
EOF
