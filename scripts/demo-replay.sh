#!/usr/bin/env bash
# flowsteer on its built-in default: sample east-west traffic of three VMs
# (examples/sample.pcapng) goes through the steering rules of
# examples/demo.yaml; the copies are decoded with tshark, the forwarded
# traffic is compared with the input, and the counters are shown.
#
#   scripts/demo-replay.sh           show it
#   scripts/demo-replay.sh --check   also assert the outcome (used by scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
[[ "${1:-}" == "--check" ]] && check=1

scripts/deps.sh demo
echo "== building flowsteer (release)"
cargo build --release --quiet -p control
bin=target/release/flowsteer

work=$(mktemp -d /tmp/flowsteer-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== flowsteer check -c examples/demo.yaml"
"$bin" check -c examples/demo.yaml

echo
echo "== the input: examples/sample.pcapng as tshark sees it"
tshark -r examples/sample.pcapng 2>/dev/null

echo
echo "== flowsteer replay -c examples/demo.yaml -i examples/sample.pcapng -o copies.pcapng -f forwarded.pcapng"
"$bin" replay -c examples/demo.yaml -i examples/sample.pcapng -o "$work/copies.pcapng" -f "$work/forwarded.pcapng" | tee "$work/report.txt"

echo
echo "== the copies, as the IDS sees them (rule in the packet comment)"
tshark -r "$work/copies.pcapng" -T fields -E header=y -E separator=' | ' \
  -e frame.number -e frame.interface_name -e ip.src -e ipv6.src -e ip.dst -e ipv6.dst \
  -e _ws.col.Protocol -e _ws.col.Info -e frame.comment 2>/dev/null

# The forwarded capture must be the input, packet for packet: compare the
# hex dumps and timestamps tshark gives of both.
dump() { tshark -r "$1" -T fields -e frame.time_epoch -e frame.len 2>/dev/null; tshark -r "$1" -x 2>/dev/null | grep -E '^[0-9a-f]{4}  '; }
echo
if diff <(dump examples/sample.pcapng) <(dump "$work/forwarded.pcapng") >/dev/null; then
  echo "== forwarded traffic: identical to the input ($(tshark -r "$work/forwarded.pcapng" 2>/dev/null | wc -l) packets, same bytes, same timestamps)"
else
  echo "== forwarded traffic DIFFERS from the input" >&2
  exit 1
fi

if ((check)); then
  copies=$(tshark -r "$work/copies.pcapng" 2>/dev/null | wc -l)
  expected=$(tshark -r examples/sample.pcapng -Y '(ip.src==10.0.0.8/29 && ip.dst==10.0.0.21 && tcp.dstport==5432) || (ip.dst==10.0.0.8/29 && ip.src==10.0.0.21 && tcp.srcport==5432) || (ipv6.addr==fd00::21 && tcp.port==5432) || icmp' 2>/dev/null | wc -l)
  [[ "$copies" -eq "$expected" && "$copies" -gt 0 ]] || { echo "demo check: $copies copies, expected $expected" >&2; exit 1; }
  grep -q "^web-to-db  *16 " "$work/report.txt" || { echo "demo check: web-to-db count wrong" >&2; exit 1; }
  bad=$(tshark -r "$work/copies.pcapng" -T fields -e frame.comment 2>/dev/null | grep -vc '^flowsteer rule=[a-z0-9-]* chain=inspect$' || true)
  [[ "$bad" -eq 0 ]] || { echo "demo check: $bad copies without a rule comment" >&2; exit 1; }
  echo "demo check: ok ($copies copies, all annotated; forwarded == input)"
fi
