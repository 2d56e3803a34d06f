#!/usr/bin/env bash
# Restart measurement for DPDK ports the kernel cannot take over (memif,
# vhost-user): flowsteer is killed with SIGKILL and started again by a
# supervisor, TRIALS times per setting, while numbered packets flow through
# it; prints the outage (last packet before the kill to first packet after
# the restart), the loss, duplicates, and flowsteer's start-up phases.
#
#   scripts/dpdk-restart.sh [TRIALS] [memif|vhost|both]     (default 20 both)
#
# Per mode, three settings, one after the other:
#
#   delay 0          restarted as soon as it is reaped (a supervisor at its fastest)
#   delay 100 ms     RestartSec=100ms, as examples/systemd/flowsteer.service
#   tuned            delay 0 with dpdk.memory_mb 64 and dataplane.copy_buffers 1024
#                    (the shipped defaults are 512 and 8192)
#
# The harness is benches/src/bin/restart.rs: it plays the VMs (its own DPDK
# process: two memif servers, or two virtio_user ports with server=1 that
# flowsteer's net_vhost clients connect to), sends 100,000 packets/s on core 0,
# supervises flowsteer (worker on core 1) and checks the pcapng copies of
# every start with tshark. Busy-polls both cores: do not run it beside other
# busy-polling work.
#
# Reserves 2 MB hugepages (scripts/setup-hugepages.sh) and gives back what it
# reserved; the harness stops every process it starts by PID and removes its
# sockets, files and DPDK runtime directories, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-20}
mode=${2:-both}
pages=512 # harness 256 MB + flowsteer 512 MB, 2 MB each, with room to spare

if ! [[ "$trials" =~ ^[1-9][0-9]*$ ]]; then
  echo "dpdk-restart: TRIALS must be a positive integer, got '$trials'" >&2
  exit 2
fi
case "$mode" in
  memif | vhost) modes=("$mode") ;;
  both) modes=(memif vhost) ;;
  *)
    echo "dpdk-restart: MODE must be memif, vhost or both, got '$mode'" >&2
    exit 2
    ;;
esac

scripts/deps.sh bench
command -v tshark >/dev/null || {
  echo "dpdk-restart: tshark is required (apt-get install tshark)" >&2
  exit 1
}
cargo build --release --quiet -p control --features control/dpdk
cargo build --release --quiet -p benches --features benches/dpdk --bin restart

sys=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
pages_before=$(cat "$sys")
cleanup() {
  if (($(cat "$sys") != pages_before)); then
    if ((pages_before == 0)); then
      scripts/setup-hugepages.sh --release >/dev/null
    else
      echo "$pages_before" >"$sys"
    fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if ((pages_before < pages)); then
  scripts/setup-hugepages.sh "$pages" >/dev/null
fi

# The EAL's own messages (probe notices, vhost-user negotiation) go to stderr,
# kept in a file and shown on failure; the harness's table goes to the terminal.
err=$(mktemp /tmp/flowsteer-dpdk-restart.XXXXXX)
out=$(mktemp /tmp/flowsteer-dpdk-restart.XXXXXX)
trap 'rm -f "$err" "$out"; cleanup' EXIT
summary=()
for m in "${modes[@]}"; do
  for setting in "delay 0" "delay 100 ms" "tuned"; do
    args=(--mode "$m" --trials "$trials")
    case "$setting" in
      "delay 100 ms") args+=(--delay-ms 100) ;;
      tuned) args+=(--memory-mb 64 --copy-buffers 1024) ;;
    esac
    echo "== $m, $setting: target/release/restart ${args[*]}"
    if ! target/release/restart "${args[@]}" 2>"$err" | tee "$out"; then
      echo "dpdk-restart: $m ($setting) failed; the harness said:" >&2
      grep -v '^VHOST_CONFIG' "$err" | tail -30 >&2
      exit 1
    fi
    summary+=("$(printf '%-6s %-13s' "$m" "$setting") $(awk '$1 == "outage" || $1 == "kill->1st" { printf "%s median %s worst %s   ", $1, $3, $5 }' "$out")")
  done
done
echo "== summary ($trials trials each, ms; machine: $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC'))"
printf '%s\n' "${summary[@]}"
