#!/usr/bin/env bash
# Network namespaces for the network-fault tests (Tests/WSIntegrationTests/NetworkFaultTests.swift). Needs root,
# iproute2 (`ip`, `tc`) and, for `drop`, nftables (`nft`; without it `drop` takes the link down instead).
# Touches only the namespace and the veth pair it creates; nothing else on the machine.
#
#   netns.sh check                   exit 0 when namespaces work here; otherwise print why and exit 1
#   netns.sh up NAME INDEX           create namespace NAME and a veth pair: ws8h<INDEX> (this namespace,
#                                    10.213.INDEX.1/30) <-> ws8n<INDEX> (in NAME, 10.213.INDEX.2/30); MTU 1500
#   netns.sh down NAME INDEX         delete the namespace and the veth pair (idempotent)
#   netns.sh drop NAME INDEX         silently drop every packet into and out of NAME (nftables, else link down)
#   netns.sh undrop NAME INDEX       undo drop
#   netns.sh shape NAME INDEX RATE   token-bucket (tbf) limit RATE (e.g. 1mbit) on both directions of the pair
#   netns.sh sweep                   delete leftovers (ws8-* namespaces whose owning process is gone)
#
# INDEX is 1..250. Names are ws8-<pid>-<n>, so `sweep` can tell which test process owned a namespace.
set -euo pipefail

die() { echo "netns.sh: $*" >&2; exit 1; }

need_tools() {
    [ "$(id -u)" = 0 ] || die "needs root (uid $(id -u))"
    command -v ip >/dev/null 2>&1 || die "iproute2 'ip' not found"
    command -v tc >/dev/null 2>&1 || die "iproute2 'tc' not found"
}

cmd="${1:-}"
case "$cmd" in
check)
    need_tools
    probe="ws8-probe-$$"
    ip netns add "$probe" 2>/dev/null || die "'ip netns add' failed (no CAP_SYS_ADMIN or no netns support)"
    ok=1
    ip netns exec "$probe" ip link set lo up 2>/dev/null || ok=0
    ip netns exec "$probe" tc qdisc add dev lo root tbf rate 1mbit burst 16kb latency 100ms 2>/dev/null || ok=0
    ip netns del "$probe"
    [ "$ok" = 1 ] || die "namespaces exist but 'ip link' or 'tc qdisc tbf' does not work in them"
    echo "ok nft=$(command -v nft >/dev/null 2>&1 && echo yes || echo no)"
    ;;
up)
    need_tools
    name="$2"; index="$3"
    host="ws8h$index"; peer="ws8n$index"
    if ip link show "$host" >/dev/null 2>&1; then die "subnet index $index is in use ($host exists)"; fi
    ip netns list | awk '{print $1}' | grep -qx "$name" && die "namespace $name exists"
    trap 'ip link del "$host" 2>/dev/null || true; ip netns del "$name" 2>/dev/null || true' ERR
    ip netns add "$name"
    ip link add "$host" type veth peer name "$peer"
    ip link set "$peer" netns "$name"
    ip addr add "10.213.$index.1/30" dev "$host"
    ip link set "$host" mtu 1500 up
    ip netns exec "$name" ip link set lo mtu 1500 up
    ip netns exec "$name" ip addr add "10.213.$index.2/30" dev "$peer"
    ip netns exec "$name" ip link set "$peer" mtu 1500 up
    # No offloads: tbf then sees packets of at most one MTU (it silently drops anything larger than its burst).
    ethtool -K "$host" tso off gso off gro off >/dev/null 2>&1 || true
    ip netns exec "$name" ethtool -K "$peer" tso off gso off gro off >/dev/null 2>&1 || true
    ;;
down)
    name="$2"; index="$3"
    ip link del "ws8h$index" 2>/dev/null || true
    ip netns del "$name" 2>/dev/null || true
    ;;
drop)
    name="$2"; index="$3"
    if command -v nft >/dev/null 2>&1; then
        ip netns exec "$name" nft -f - <<'NFT'
table inet ws8fault {
    chain input { type filter hook input priority 0; policy drop; }
    chain output { type filter hook output priority 0; policy drop; }
}
NFT
        echo "dropping with nftables"
    else
        ip netns exec "$name" ip link set "ws8n$index" down
        echo "dropping by taking ws8n$index down (nft not installed)"
    fi
    ;;
undrop)
    name="$2"; index="$3"
    ip netns exec "$name" nft delete table inet ws8fault 2>/dev/null || true
    ip netns exec "$name" ip link set "ws8n$index" up
    ;;
shape)
    name="$2"; index="$3"; rate="$4"
    # tbf with a burst of ten MTU-sized packets: a sender sees the rate within a fraction of a second.
    tc qdisc replace dev "ws8h$index" root tbf rate "$rate" burst 15kb latency 200ms
    ip netns exec "$name" tc qdisc replace dev "ws8n$index" root tbf rate "$rate" burst 15kb latency 200ms
    ;;
sweep)
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^ws8-' || true); do
        pid="$(echo "$ns" | cut -d- -f2)"
        if ! kill -0 "$pid" 2>/dev/null; then ip netns del "$ns" 2>/dev/null || true; fi
    done
    for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^ws8h' || true); do
        # A host-side veth whose namespace is gone has no peer left: delete it.
        ip link show "$link" 2>/dev/null | grep -q 'link-netns' || ip link del "$link" 2>/dev/null || true
    done
    ;;
*)
    die "usage: netns.sh check | up NAME INDEX | down NAME INDEX | drop NAME INDEX | undrop NAME INDEX | shape NAME INDEX RATE | sweep"
    ;;
esac
