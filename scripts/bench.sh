#!/usr/bin/env bash
# Throughput benchmark: flowsteer's harness (a real worker over in-process
# rings, 64-byte packets, 100,000 flows) beside dpdk-testpmd `io` forwarding
# on two net_null vdevs, measured in the same run on the same core, so the
# ratio holds even when the shared machine's absolute speed drifts.
#
#   scripts/bench.sh [SECONDS_PER_SCENARIO]     (default 5)
#
# Busy-polls core 1 (and uses core 0 for testpmd's main thread and the sink
# thread): do not run it beside other busy-polling work.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}

scripts/deps.sh bench
cargo build --release --quiet -p benches --bin throughput

echo "== dpdk-testpmd io forwarding, net_null0 <-> net_null1, forwarding lcore 1, ${secs}s"
out=$(mktemp /tmp/flowsteer-testpmd.XXXXXX)
prefix="flowsteer-bench-$$"
trap 'rm -f "$out"; rm -rf "/var/run/dpdk/$prefix"' EXIT
# Non-interactive: auto-start, stats every second; SIGINT after the run.
timeout -s INT $((secs + 3)) dpdk-testpmd --no-huge -m 1024 -l 0,1 --no-pci \
  --vdev net_null0 --vdev net_null1 --file-prefix "$prefix" --log-level=lib.eal:error -- \
  --forward-mode=io --auto-start --stats-period 1 --nb-cores=1 --burst=32 >"$out" 2>&1 || true
# Sum the two ports' Tx-pps per stats block; take the median of the full-rate blocks.
ref=$(awk '/Tx-pps:/ { s += $2; n++; if (n % 2 == 0) { print s; s = 0 } }' "$out" | awk '$1 > 0' | sort -n |
  awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else print v[int((NR + 1) / 2)] / 1e6 }')
printf "testpmd-io   %7.2f Mpps\n" "$ref"

echo "== flowsteer throughput harness, worker on core 1, ${secs}s per scenario"
target/release/throughput --seconds "$secs" --scenario all | tee /dev/stderr |
  awk -v ref="$ref" '/Mpps/ && $1 != "flowsteer" { printf "%-12s %7.2f Mpps   ratio to testpmd io: %.2f\n", $1, $2, ($2 / ref) }' >"$out.sum"
echo "== summary (same run)"
printf "%-12s %7.2f Mpps\n" testpmd-io "$ref"
cat "$out.sum"
rm -f "$out.sum"
