#!/usr/bin/env bash
# Lab throughput: iperf3 TCP between two VMs of the lab (web1 -> db1), first
# through a plain Linux bridge over the same veth host ends, then through
# flowsteer (AF_PACKET, MAC-learning bridge, examples/lab.yaml rules: this
# flow is steered and copied), in the same run.
#
#   scripts/bench-lab.sh [SECONDS]     (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}

LAB=fsbench
source scripts/lab-session.sh

ip netns exec "$LAB-db1" iperf3 -s -B 10.77.0.21 -1 -D --logfile "$work/s1.log"
# iperf3 on port 5201 is not steered by examples/lab.yaml; steer it too for the "copied" figure.
measure() { # $1 = label
  sleep 0.3
  ip netns exec "$LAB-web1" iperf3 -c 10.77.0.21 -t "$secs" -J >"$work/$1.json"
  python3 -c "import json,sys; d=json.load(open('$work/$1.json')); print('%-34s %8.2f Gbit/s' % ('$1', d['end']['sum_received']['bits_per_second']/1e9))"
}

scripts/lab.sh linux-bridge on
measure "linux-bridge"
scripts/lab.sh linux-bridge off

for mode in fast-path steered-and-copied; do
  lab_config "$work/lab.yaml" -e "s/stats_interval: 2/stats_interval: 0/"
  if [[ $mode == steered-and-copied ]]; then
    # Steer the iperf3 flow (port 5201) through the copy chain as well.
    sed -i 's/dst_port: 5432 }/dst_port: "5201-5432" }/' "$work/lab.yaml"
  fi
  start_flowsteer "$work/lab.yaml" "fs-$mode"
  fs=$fs_pid
  ip netns exec "$LAB-db1" iperf3 -s -B 10.77.0.21 -1 -D --logfile "$work/s-$mode.log"
  measure "flowsteer ($mode)"
  kill -INT "$fs"; wait "$fs" || true
  grep -E "^(total|copies|sink)" "$work/fs-$mode.out" | sed 's/^/    /'
done
