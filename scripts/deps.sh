#!/usr/bin/env bash
# Installs what flowsteer's scripts need on Debian 12, and nothing that is
# already there. Usage: scripts/deps.sh [test|demo|bench]
set -euo pipefail

want=(pkg-config)
command -v tshark >/dev/null 2>&1 || want+=(tshark)
# DPDK 22.11 LTS: the library and headers (the `dpdk` cargo feature, found with
# pkg-config) for the tests, testpmd for the benchmarks.
case "${1:-test}" in
  test | bench) want+=(dpdk dpdk-dev libdpdk-dev) ;;
esac
# Lua 5.4 checks the Pktgen-DPDK scripts (scripts/pktgen/check.sh).
case "${1:-test}" in
  test) want+=(lua5.4) ;;
esac
# The VM lab (demo, tests, lab benchmark): namespaces, ping, iperf3, python3.
case "${1:-test}" in
  lab | test | bench) want+=(iproute2 iputils-ping iperf3 python3 ethtool) ;;
esac
# The control API's end-to-end test: curl --unix-socket, promtool check metrics, setpriv.
case "${1:-test}" in
  test) want+=(curl prometheus util-linux) ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo is not installed; install Rust (https://rustup.rs) and run again" >&2
  exit 1
fi
