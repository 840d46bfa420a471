#!/usr/bin/env bash
# A private "cluster" network namespace that the root namespace (the "laptop") can reach only
# through an sshd inside it, for the hpclaunch SSH-tunnel tests. Needs root and iproute2.
#
#   root ns ("laptop")                          netns NAME ("login node" + "compute network")
#   veth  10.77.0.<4k+1>/30   <--- veth --->    10.77.0.<4k+2>/30, sshd on it (PORT)
#   route 10.78.0.0/24 unreachable              lo: 127.0.0.1 and 10.78.0.1/32 (cluster-only)
#
# The unreachable route makes laptop -> 10.78.0.1 fail at once (EHOSTUNREACH) instead of
# following the default route off the machine. Nothing here leaves the machine. Each run picks a
# free /30 and its own interface names, so two test runs on one machine do not collide.
#
#   scripts/netns.sh up NAME STATE_DIR PORT     writes STATE_DIR/netns.env (shell variables:
#                                               NS LAPTOP_IP LOGIN_IP CLUSTER_IP SSH_PORT
#                                               SSH_KEY VETH ROUTE_OWNED)
#   scripts/netns.sh down STATE_DIR             stop that sshd, delete the veth, namespace, route
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
say() { printf 'netns: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

down() {
    local state=$1 NS='' VETH='' ROUTE_OWNED=0
    [ -f "$state/netns.env" ] || return 0
    # shellcheck disable=SC1091
    . "$state/netns.env"
    bash "$HERE/sshd-setup.sh" --stop "$state/sshd"
    [ -n "$VETH" ] && ip link del "$VETH" 2>/dev/null || true      # deletes the peer too
    [ -n "$NS" ] && ip netns del "$NS" 2>/dev/null || true
    if [ "$ROUTE_OWNED" = 1 ]; then ip route del unreachable 10.78.0.0/24 2>/dev/null || true; fi
    rm -f "$state/netns.env"
}

case "${1:-}" in
  down) down "${2:?usage: netns.sh down STATE_DIR}"; exit 0 ;;
  up) ;;
  *) die "usage: netns.sh up NAME STATE_DIR PORT | netns.sh down STATE_DIR" ;;
esac
NS=${2:?usage: netns.sh up NAME STATE_DIR PORT}; STATE=${3:?STATE_DIR}; PORT=${4:?PORT}
[ "$(id -u)" -eq 0 ] || die "needs root to create network namespaces"
command -v ip >/dev/null || die "needs iproute2 (the ip command)"
mkdir -p "$STATE"; chmod 700 "$STATE"

used=$(ip -4 -o addr show | awk '{print $4}' | cut -d/ -f1)
K=''
for k in $(seq 8 62); do
    a="10.77.0.$((4 * k + 1))"; b="10.77.0.$((4 * k + 2))"
    if ! grep -qxF -e "$a" -e "$b" <<<"$used" && [ -z "$(ip route show "10.77.0.$((4 * k))/30")" ]; then
        K=$k; break
    fi
done
[ -n "$K" ] || die "no free /30 left in 10.77.0.0/24"
LAPTOP_IP="10.77.0.$((4 * K + 1))"; LOGIN_IP="10.77.0.$((4 * K + 2))"
VETH="hlv$$"; PEER="hlc$$"

ROUTE_OWNED=0
cat > "$STATE/netns.env" <<ENV
NS=$NS
VETH=$VETH
ROUTE_OWNED=0
ENV
trap 'down "$STATE"' ERR
ip netns add "$NS"
ip link add "$VETH" type veth peer name "$PEER"
ip link set "$PEER" netns "$NS"
ip addr add "$LAPTOP_IP/30" dev "$VETH"
ip link set "$VETH" up
ip -n "$NS" addr add "$LOGIN_IP/30" dev "$PEER"
ip -n "$NS" link set "$PEER" up
ip -n "$NS" link set lo up
ip -n "$NS" addr add 10.78.0.1/32 dev lo
if [ -z "$(ip route show 10.78.0.0/24)" ]; then
    ip route add unreachable 10.78.0.0/24 && ROUTE_OWNED=1
fi
cat > "$STATE/netns.env" <<ENV
NS=$NS
LAPTOP_IP=$LAPTOP_IP
LOGIN_IP=$LOGIN_IP
CLUSTER_IP=10.78.0.1
SSH_PORT=$PORT
SSH_KEY=$STATE/sshd/id_ed25519
VETH=$VETH
ROUTE_OWNED=$ROUTE_OWNED
ENV
ip netns exec "$NS" bash "$HERE/sshd-setup.sh" "$STATE/sshd" "$PORT" "$LOGIN_IP"
trap - ERR
say "namespace $NS up: login node $LOGIN_IP:$PORT, cluster-only address 10.78.0.1"
