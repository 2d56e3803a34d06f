#!/usr/bin/env bash
# Chaos trials for the process bypass (`flowsteer guard`) on the VM lab:
# kill -9 and SIGSTOP/SIGCONT of the dataplane under a numbered UDP stream
# (and a TCP stream alongside), failover and fail-back measured from what
# arrives. Needs root (namespaces, tc). Everything it makes is removed on
# exit, also when it fails.
#
#   scripts/chaos-failover.sh [TRIALS] [kill|stop|both] [link|bridge]
#
# Defaults: 20 trials, both faults, link. RATE=20000 (pps), HOLD=1.0 (s on the
# bypass), LAB=ch, HEARTBEAT_MS=2, TIMEOUT_MS=10, BIN=target/release/flowsteer.
# Prints one JSON line per trial and a summary line per fault (median, worst).
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${1:-20}
FAULTS=${2:-both}
TOPO=${3:-link}
export LAB=${LAB:-ch}
RATE=${RATE:-20000}
HOLD=${HOLD:-1.0}
BIN=${BIN:-target/release/flowsteer}
[[ -x "$BIN" ]] || cargo build --release -p control
dir=$(mktemp -d "/tmp/flowsteer-chaos.XXXXXX")
cleanup() {
  "$BIN" guard -c "$dir/cfg.yaml" --remove >/dev/null 2>&1 || true
  scripts/lab.sh down >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
scripts/lab.sh up >/dev/null
if [[ $TOPO == link ]]; then
  fwd="links:
  - [web1, db1]"
else
  fwd="bridges:
  - { name: vms, ports: [web1, web2, db1] }"
fi
cat >"$dir/cfg.yaml" <<YAML
dataplane:
  workers:
    - core: 1
  stats_interval: 0
ports:
  - { name: web1, type: af_packet, interface: $LAB-web1 }
  - { name: web2, type: af_packet, interface: $LAB-web2 }
  - { name: db1,  type: af_packet, interface: $LAB-db1 }
$fwd
guard:
  heartbeat: $dir/heartbeat.sock
  heartbeat_ms: ${HEARTBEAT_MS:-2}
  timeout_ms: ${TIMEOUT_MS:-10}
YAML
rc=0
case $FAULTS in both) faults="kill stop" ;; *) faults=$FAULTS ;; esac
for f in $faults; do
  echo "== $f: $TRIALS trials, $TOPO, $RATE pps" >&2
  python3 scripts/chaos_failover.py --lab "$LAB" --bin "$BIN" --config "$dir/cfg.yaml" --dir "$dir" \
    --fault "$f" --trials "$TRIALS" --rate "$RATE" --hold "$HOLD" || { rc=1; tail -20 "$dir/guard.log" >&2; }
  rm -f "$dir"/*.log "$dir"/*.json
done
exit $rc
