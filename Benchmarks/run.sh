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
#   WORKLOADS=w5 bash Benchmarks/run.sh           # permessage-deflate only (its four variants)
#   TLS=1 WORKLOADS="w1 w2 w3" bash Benchmarks/run.sh   # over wss://
#
# W5 (permessage-deflate, RFC 7692) runs against the same C echo server, which accepts the clients' offer and echoes
# compressed frames as they arrive (it never inflates), so the clients do all the compressing and inflating and the
# C client (zlib, level 6, the same offer as our SDK) is the limit, as in W1–W4. `w5` stands for the variants in
# $W5_VARIANTS (each may also be named in WORKLOADS, e.g. WORKLOADS="w5-1k-nct"): 1k = 20,000 text messages of
# 1 KiB, 100 in flight; 64k = $W5_MIB MiB of 64 KiB text messages, 16 in flight; -nct = without context takeover
# (client_ and server_no_context_takeover offered). Every client sends the same JSON-log corpus (the "corpus" hash in
# each line; the table flags a mismatch), checks that deflate was negotiated, and compares every echo byte for byte.
# websocket-kit 2.16.2 has no permessage-deflate and is skipped. ours-cio+nodeflate (no compression) can be added to
# CLIENTS as a reference. Over wss (TLS=1) W5 runs too.
#
# TLS=1 runs W1–W5 over wss:// (TLS 1.3): the echo server serves TLS (OpenSSL, same single thread) with a self-signed
# P-256 certificate for 127.0.0.1 (and localhost) made with openssl at the start of the run ($SCRATCH/tls/), which
# every client verifies (WSBENCH_CA_FILE): the C client with OpenSSL, our engines with their TLS configuration,
# websocket-kit and WSClient with NIOSSL. The C client runs W4 over wss on every core (one process per online CPU;
# its peak RSS is the sum of its processes'). idle has no wss variant and is skipped.
#
# Every run's line also records the echo server's CPU time during the run (server_cpu_ms, from
# /proc/PID/schedstat before and after); the table shows it and its share of the run's timed part.
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
# engines with maxIncomingBufferMessages raised to 4,096; for W4 over wss c+resume, c+1proc and c+1proc+resume: the C
# client with TLS session resumption and/or in one process; for W4 over wss ours-cio+resume and ours-curl+resume: our
# driver opens and closes one wss connection before the clock starts, so that the 1,000 can resume its TLS session
# (the engines' resumesSessions is on by default), and ours-cio+noresume / ours-curl+noresume: resumesSessions off
# (WSBENCH_COUNT_RESUMED=1 in the environment makes our drivers report how many handshakes resumed; it logs at debug
# level, so not for timed rounds); any of ours with +glibc, e.g. ours-cio+glibc: the same
# driver with GLIBC_TUNABLES keeping freed memory in malloc's arenas), W3_MIB (512), IDLE_CONNECTIONS (10000),
# TIMEOUT per run in seconds (300), OUT (markdown file), SKIP_BUILD=1 to reuse the last build,
# W5_MIB (64, the 64k variants' volume), W5_VARIANTS ("1k 1k-nct 64k 64k-nct"), IDLE_ADDRESSES (IDLE_CONNECTIONS ÷
# 10,000, rounded up), TLS_CA_BUNDLE (with TLS=1: a CA bundle every client trusts besides the run's certificate).
#
# Before/after a change, in the same rounds: build this directory in a second checkout at the old commit
# (`swift build -c release --scratch-path .build-bench --product wsbench-ours-cio`, likewise wsbench-ours-curl) and
# point BASE_BIN at that build's bin directory; the clients base-cio and base-curl then run the old build's drivers
# alternating with the others, e.g. CLIENTS="c base-cio ours-cio base-curl ours-curl". (W5's base build must know
# the --w5-size/--w5-count/--w5-window/--w5-nct flags: a commit from after they were added.)
set -euo pipefail
cd "$(dirname "$0")"

ROUNDS=${ROUNDS:-5}
PORT=${PORT:-19001}
WORKLOADS=${WORKLOADS:-"w1 w2 w3 w4 w5 idle"}
CLIENTS=${CLIENTS:-"c ours-cio ours-curl websocket-kit wsclient"}
W3_MIB=${W3_MIB:-512}
TLS=${TLS:-0}
W5_MIB=${W5_MIB:-64}
W5_VARIANTS=${W5_VARIANTS:-"1k 1k-nct 64k 64k-nct"}
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
    cc -O2 -Wall -o "$BIN_C/wsclient_c" c/client.c -lssl -lcrypto -lz
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
    # DNS:localhost for WSClient, which sends the URL's host as SNI and cannot send an IP address (its driver names
    # localhost instead; see Benchmarks/WSClientBench).
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$SCRATCH/tls/key.pem" -out "$SCRATCH/tls/cert.pem" 2>/dev/null
    SERVER_ARGS+=("$SCRATCH/tls/cert.pem" "$SCRATCH/tls/key.pem")
    URL="wss://127.0.0.1:$PORT/"
    export WSBENCH_CA_FILE="$PWD/$SCRATCH/tls/cert.pem"
    # TLS_CA_BUNDLE (e.g. /etc/ssl/certs/ca-certificates.crt): every client trusts that bundle plus the run's
    # certificate, what a user who adds a private CA to the system store has: the cost of parsing a full trust store.
    if [[ -n "${TLS_CA_BUNDLE:-}" ]]; then
        cat "$TLS_CA_BUNDLE" "$SCRATCH/tls/cert.pem" >"$SCRATCH/tls/bundle.pem"
        export WSBENCH_CA_FILE="$PWD/$SCRATCH/tls/bundle.pem"
    fi
    kept=""
    for w in $WORKLOADS; do
        if [[ "$w" != idle ]]; then kept+="$w "; else echo "TLS=1: skipping $w (no wss variant)" >&2; fi
    done
    WORKLOADS=$kept
fi
WSBENCH_ADDRESSES=$IDLE_ADDRESSES "$BIN_C/echo_server" "${SERVER_ARGS[@]}" 2>/dev/null &
SERVER_PID=$!
# The drivers' idle workload reports the server's RSS too.
export WSBENCH_SERVER_PID=$SERVER_PID
trap 'kill "$SERVER_PID" 2>/dev/null || true' EXIT
sleep 0.3
# A server that could not bind has exited; the clients would otherwise measure whatever else listens on $PORT.
if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "the echo server did not start (is port $PORT taken?)" >&2; exit 1; fi

# W5: `w5` stands for its variants; the clients with permessage-deflate (not websocket-kit 2.16.2).
kept=""
for w in $WORKLOADS; do
    if [[ "$w" == w5 ]]; then for v in $W5_VARIANTS; do kept+="w5-$v "; done; else kept+="$w "; fi
done
WORKLOADS=$kept
W5_CLIENTS=""
for c in $CLIENTS; do
    if [[ "$c" != websocket-kit && "$c" != c+* ]]; then W5_CLIENTS+="$c "; fi
done
# A W5 variant's flags, for every client: 1k or 64k, optionally -nct (no context takeover).
w5_args() {
    local v=${1#w5-}
    case "${v%-nct}" in
        1k) echo "--w5-size 1024 --w5-count 20000 --w5-window 100" ;;
        64k) echo "--w5-size 65536 --w5-count $((W5_MIB * 16)) --w5-window 16" ;;
        *) echo "unknown W5 variant $1 (1k, 1k-nct, 64k, 64k-nct)" >&2; exit 1 ;;
    esac
    if [[ "$v" == *-nct ]]; then echo "--w5-nct 1"; fi
}

# The echo server's CPU time so far in ns (all its threads: it has one), from the scheduler's account; empty where the
# kernel has no schedstat. For the W5 server as well would need its PID: not measured.
server_cpu_ns() { cut -d' ' -f1 "/proc/$SERVER_PID/schedstat" 2>/dev/null || true; }

RESULTS=$SCRATCH/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl
: >"$RESULTS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

for w in $WORKLOADS; do
    clients=$CLIENTS
    wargs=(--workload "$w")
    if [[ "$w" == w5-* ]]; then
        clients=$W5_CLIENTS
        a=$(w5_args "$w") || exit 1
        read -r -a wargs <<<"--workload w5 $(echo $a)"
    fi
    for ((r = 1; r <= ROUNDS; r++)); do
        for c in $clients; do
            # The idle workload (idle connections, RSS per connection) is measured for our engines and the C client:
            # a ws:// connection of the Curl engine holds its socket alone once connected (a build from before the
            # socket takeover held 2, its multi handle's eventfd too: past this machine's limit of 20,000 at 10,000).
            if [[ "$w" == idle && "$c" != ours-cio* && "$c" != ours-curl* && "$c" != base-* && "$c" != c ]]; then
                continue
            fi
            if [[ "$c" == c ]]; then
                cmd=("$BIN_C/wsclient_c" "${wargs[@]}" --url "$URL" --w3-mib "$W3_MIB")
                if [[ "$w" == idle ]]; then cmd+=(--connections "$IDLE_CONNECTIONS" --addresses "$IDLE_ADDRESSES"); fi
            elif [[ "$c" == c+* ]]; then
                # W4 over wss variants of the C client: c+resume offers a TLS session from an earlier handshake on
                # every connection, c+1proc runs in one process; combinable (c+1proc+resume).
                cmd=("$BIN_C/wsclient_c" --workload "$w" --url "$URL" --w3-mib "$W3_MIB")
                if [[ "$c" == *+resume* ]]; then cmd+=(--resume 1); fi
                if [[ "$c" == *+1proc* ]]; then cmd+=(--procs 1); fi
            elif [[ "$c" == base-cio || "$c" == base-curl ]]; then
                if [[ -z "${BASE_BIN:-}" ]]; then echo "$c needs BASE_BIN (see the top of this script)" >&2; exit 1; fi
                cmd=("$BASE_BIN/wsbench-ours-${c#base-}" --client "ours-${c#base-}" "${wargs[@]}" --url "$URL" --w3-mib "$W3_MIB")
                if [[ "$w" == idle ]]; then cmd+=(--connections "$IDLE_CONNECTIONS" --addresses "$IDLE_ADDRESSES"); fi
            elif [[ "$w" == w5-* ]]; then
                driver=$WSBENCH
                if [[ "$c" == ours-curl* && -x "$BIN/wsbench-ours-curl" ]]; then driver=$BIN/wsbench-ours-curl; fi
                if [[ "$c" == ours-cio* && -x "$BIN/wsbench-ours-cio" ]]; then driver=$BIN/wsbench-ours-cio; fi
                if [[ "$c" == wsclient && -x "$BIN/wsbench-wsclient" ]]; then driver=$BIN/wsbench-wsclient; fi
                cmd=("$driver" --client "$c" "${wargs[@]}" --url "$URL")
            else
                # wsbench execs our engines' drivers (their RSS is ours alone); call them directly when built.
                driver=$WSBENCH
                if [[ "$c" == ours-curl* && -x "$BIN/wsbench-ours-curl" ]]; then driver=$BIN/wsbench-ours-curl; fi
                if [[ "$c" == ours-cio* && -x "$BIN/wsbench-ours-cio" ]]; then driver=$BIN/wsbench-ours-cio; fi
                cmd=("$driver" --client "$c" --workload "$w" --url "$URL" --w3-mib "$W3_MIB")
                if [[ "$w" == idle ]]; then cmd+=(--connections "$IDLE_CONNECTIONS" --addresses "$IDLE_ADDRESSES"); fi
            fi
            if [[ "$c" == *+glibc ]]; then
                # The same driver with glibc's malloc keeping freed memory (no trimming of the arena's top, no mmap
                # for blocks under 64 MiB): what the page faults of fresh large arrays cost (Docs/Performance.md).
                for i in "${!cmd[@]}"; do if [[ "${cmd[$i]}" == "$c" ]]; then cmd[$i]=${c%+glibc}; fi; done
                cmd=(env GLIBC_TUNABLES=glibc.malloc.trim_threshold=67108864:glibc.malloc.mmap_threshold=67108864 "${cmd[@]}")
            fi
            rc=0
            server_ns0=$(server_cpu_ns)
            line=$(timeout "$TIMEOUT" "${cmd[@]}" 2>"$SCRATCH/last-stderr.txt" | tail -n 1) || rc=$?
            server_ns1=$(server_cpu_ns)
            if [[ "$line" == *\} && -n "$server_ns0" && -n "$server_ns1" ]]; then
                line="${line%\}},\"server_cpu_ms\":$(((server_ns1 - server_ns0) / 1000000))}"
            fi
            if [[ "$c" == base-* ]]; then line=${line/\"client\":\"ours-/\"client\":\"base-}; fi
            if [[ "$w" == w5-* ]]; then line=${line/\"workload\":\"w5\"/\"workload\":\"$w\"}; fi
            if [[ "$c" == c+* ]]; then line=${line/\"client\":\"c\"/\"client\":\"$c\"}; fi
            if [[ "$c" == *+glibc ]]; then line=${line/\"client\":\"${c%+glibc}\"/\"client\":\"$c\"}; fi
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
# W5: MB/s from the wall time (3 decimals) and the variant's volume, not the drivers' 1-decimal figure.
for r in rows:
    if r.get("workload", "").startswith("w5-") and r.get("seconds"):
        volume = 20000 * 1024 if r["workload"].startswith("w5-1k") else int(w5) * 1048576
        r["value"] = volume / r["seconds"] / 1e6
names = {"w1": "W1 ping-pong (rt/s)", "w2": "W2 128 B x 200k, 1000 in flight (msg/s)",
         "w3": f"W3 {w3} MiB in 64 KiB, 16 in flight (MB/s)", "w4": "W4 1,000 connections (conn/s)",
         "idle": f"{int(os.environ.get('IDLE_CONNECTIONS', '10000')):,} idle connections (RSS)"}
if tls == "1":
    names = {w: n.replace(" (", " over wss (", 1) for w, n in names.items()}
def f(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:,.2f}"
print(f"{rounds} rounds; loadavg before {load_before}, after {load_after}; results in {path}\n")
print("| workload | client | median | min–max | ratio to C (median of per-round) | extra |")
print("|---|---|---:|---:|---:|---|")
w5s = list(dict.fromkeys(r["workload"] for r in rows if r.get("workload", "").startswith("w5-")))
for v in w5s:
    size, nct = v[3:].removesuffix("-nct"), v.endswith("-nct")
    shape = "20,000 × 1 KiB, 100 in flight" if size == "1k" else f"{w5} MiB in 64 KiB, 16 in flight"
    names[v] = (f"W5 deflate {shape}, {'no context takeover' if nct else 'context takeover'}"
                + (" over wss" if tls == "1" else "") + " (MB/s)")
for w in ["w1", "w2", "w3", "w4", "idle"] + w5s:
    wr = [r for r in rows if r.get("workload") == w]
    if not wr: continue
    # W5: every client must have sent the same corpus (the hash each prints).
    corpus = next((r.get("corpus") for r in wr if r["client"] == "c" and r.get("corpus")), None)
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
    for c in (w5_clients if w.startswith("w5-") else clients):
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
        if w.startswith("w5-"):
            negotiated = sorted({r.get("extensions", "") for r in ok})
            extra.append("extensions: " + " / ".join(f"`{n}`" if n else "none" for n in negotiated))
            if any("compressed" in r for r in ok):
                extra.append(f"compressed to {statistics.median(r['compressed'] for r in ok) * 100:.1f} %")
            if corpus and any(r.get("corpus") != corpus for r in ok):
                extra.append("**corpus differs from the C client's**")
        extra.append(f"peak RSS {statistics.median(r['peak_rss_mib'] for r in ok):.1f} MiB")
        if any("processes" in r for r in ok):
            # The C client's W4 over wss: one process per CPU; peak RSS above is the sum of the processes' peaks.
            extra[-1] += (f" (sum of {max(r.get('processes', 1) for r in ok)} processes; largest "
                          f"{statistics.median(r.get('peak_rss_max_mib', r['peak_rss_mib']) for r in ok):.1f} MiB)")
        if any("resumed" in r and r["resumed"] for r in ok):
            extra.append(f"TLS sessions resumed {statistics.median(r.get('resumed', 0) for r in ok):.0f}")
        # CPU of the whole process (start-up included), and its ratio to the C client's in the same round (lower is
        # better): the cost the wall-clock figures hide where the kernel's wake-ups bound them (W1).
        cpu = [r["cpu_ms"] for r in ok if "cpu_ms" in r]
        ccpu = {r["round"]: r["cpu_ms"] for r in wr if r["client"] == "c" and "cpu_ms" in r}
        cpu_ratios = [r["cpu_ms"] / ccpu[r["round"]] for r in ok if "cpu_ms" in r and ccpu.get(r["round"])]
        if cpu:
            extra.append(f"CPU {statistics.median(cpu):,.0f} ms" + (f" ({statistics.median(cpu_ratios):.2f}× C)" if cpu_ratios and c != "c" else ""))
        # The echo server's CPU during the run, and its share of the client's timed part (one core = 100 %).
        srv = [r for r in ok if "server_cpu_ms" in r and r.get("seconds")]
        if srv:
            extra.append(f"server CPU {statistics.median(r['server_cpu_ms'] for r in srv):,.0f} ms "
                         f"({statistics.median(r['server_cpu_ms'] / (r['seconds'] * 1e3) for r in srv) * 100:.0f} %)")
        if failed:
            whys = sorted({str(r["error"]) for r in wr if r["client"] == c and r.get("error")})
            extra.append(f"{failed} run(s) failed ({', '.join(whys)})")
        ratio = f"{statistics.median(ratios):.3f}" if ratios else "–"
        print(f"| {names[w]} | {c} | {f(statistics.median(vals))} | {f(min(vals))}–{f(max(vals))} | {ratio} | {'; '.join(extra)} |")
EOF
