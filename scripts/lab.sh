#!/usr/bin/env bash
# The VM lab: network namespaces as VMs, their veth host ends owned by flowsteer.
#
#   scripts/lab.sh up|down|status
#   scripts/lab.sh linux-bridge on|off   (the kernel bridge instead of flowsteer, for comparisons)
#
# VMs (namespace  address        MAC                interface on the host side):
#   ${LAB}-web1   10.77.0.11/24  02:00:0a:4d:00:0b  ${LAB}-web1
#   ${LAB}-web2   10.77.0.12/24  02:00:0a:4d:00:0c  ${LAB}-web2
#   ${LAB}-db1    10.77.0.21/24  02:00:0a:4d:00:15  ${LAB}-db1
#   ${LAB}-tool   (no address: a monitoring tool capturing what it is sent)  ${LAB}-tool
# LAB defaults to "fs"; tests use their own prefix so labs never collide.
# The host ends have no addresses and IPv6 off: nothing the VMs send can leave
# the lab except through the dataplane, and the dataplane only joins lab ports.
set -euo pipefail
LAB=${LAB:-fs}
VMS=(web1:10.77.0.11:02:00:0a:4d:00:0b web2:10.77.0.12:02:00:0a:4d:00:0c db1:10.77.0.21:02:00:0a:4d:00:15 tool::02:00:0a:4d:00:63)

ns_of() { echo "$LAB-$1"; }

up() {
  for vm in "${VMS[@]}"; do
    name=${vm%%:*}; rest=${vm#*:}; ip=${rest%%:*}; mac=${rest#*:}
    ns=$(ns_of "$name"); host="$LAB-$name"
    ip netns add "$ns"
    ip link add "$host" type veth peer name eth0 netns "$ns"
    sysctl -qw "net.ipv6.conf.$host.disable_ipv6=1"
    ip link set "$host" up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 address "$mac"
    [[ -n "$ip" ]] && ip -n "$ns" addr add "$ip/24" dev eth0
    # The dataplane forwards whole frames: no segmentation offload or deferred
    # checksums from the VMs (as with a real NIC between them).
    ip netns exec "$ns" ethtool -K eth0 tx off tso off gso off >/dev/null 2>&1 || true
    ip -n "$ns" link set eth0 up
  done
  echo "lab $LAB up: $(for v in "${VMS[@]}"; do printf '%s ' "$LAB-${v%%:*}"; done)"
}

down() {
  local rc=0
  linux_bridge off
  for vm in "${VMS[@]}"; do
    ns=$(ns_of "${vm%%:*}")
    if ip netns list | grep -qw "$ns"; then ip netns del "$ns" || rc=1; fi
    # The host end goes with its peer; remove it if it survived on its own.
    if ip link show "$LAB-${vm%%:*}" >/dev/null 2>&1; then ip link del "$LAB-${vm%%:*}" || rc=1; fi
  done
  echo "lab $LAB down"
  return $rc
}

status() {
  for vm in "${VMS[@]}"; do
    name=${vm%%:*}; ns=$(ns_of "$name")
    if ip netns list | grep -qw "$ns"; then
      printf '%-10s %-10s %s\n' "$ns" "$(ip -br link show "$LAB-$name" 2>/dev/null | awk '{print $2}')" \
        "$(ip -n "$ns" -br addr show eth0 2>/dev/null | awk '{print $3, $4}')"
    else
      printf '%-10s absent\n' "$ns"
    fi
  done
}

# A plain Linux bridge over the host ends, for comparing flowsteer with the
# kernel's own forwarding on the same veths (run one or the other, not both).
linux_bridge() {
  local br="$LAB-br"
  case "$1" in
    on)
      ip link add "$br" type bridge
      sysctl -qw "net.ipv6.conf.$br.disable_ipv6=1"
      for vm in "${VMS[@]}"; do ip link set "$LAB-${vm%%:*}" master "$br"; done
      ip link set "$br" up ;;
    off) ip link del "$br" 2>/dev/null || true ;;
  esac
}

case "${1:-}" in
  linux-bridge) linux_bridge "${2:?on or off}" ;;
  up) trap 'echo "lab: set-up failed, removing what was made" >&2; down >/dev/null 2>&1 || true' ERR; up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: LAB=prefix $0 up|down|status|linux-bridge on|off" >&2; exit 2 ;;
esac
