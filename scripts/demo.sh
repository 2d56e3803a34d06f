#!/usr/bin/env bash
# flowsteer on its built-in default: the VM lab.
#
# Three "VMs" (network namespaces web1, web2, db1) and a monitoring tool
# (namespace tool) hang off veth pairs whose host ends flowsteer owns
# (AF_PACKET, busy polled, a MAC-learning bridge between the VMs). Rules in
# examples/lab.yaml steer web-to-database TCP through a chain that copies it
# to the tool's interface and to a pcapng file; everything else takes the
# fast path. The demo sends real traffic (ping, UDP, a TCP transfer), shows
# the counters and what the tool received, then removes everything it made.
#
#   scripts/demo.sh           show it
#   scripts/demo.sh --check   also assert the outcome (used by scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
[[ "${1:-}" == "--check" ]] && check=1

LAB=fsdemo
source scripts/lab-session.sh
lab_config "$work/lab.yaml"

echo "== flowsteer run -c examples/lab.yaml"
start_flowsteer "$work/lab.yaml" flowsteer

ip netns exec "$LAB-tool" tshark -n -i eth0 -w "$work/tool.pcapng" >/dev/null 2>"$work/tshark.err" &
pids+=($!); tshark_pid=$!
for _ in $(seq 100); do grep -q "Capturing on" "$work/tshark.err" && break; sleep 0.1; done
sleep 0.5

inns() { ip netns exec "$LAB-$1" "${@:2}"; }
echo "== traffic: ping web1 -> db1, web1 -> web2; UDP web2 -> db1; a 1 MB TCP transfer web1 -> db1:5432"
inns web1 ping -c 3 -i 0.2 10.77.0.21 | tail -2
inns web1 ping -c 3 -i 0.2 10.77.0.12 | tail -1
inns web2 /usr/bin/python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'hello db', ('10.77.0.21', 9999)) for _ in range(10)]"
inns db1 /usr/bin/python3 -c "
import socket, hashlib
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(('10.77.0.21', 5432)); l.listen(1)
c, _ = l.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b); n += len(b)
print('db1 received', n, 'bytes, sha256', h.hexdigest())" >"$work/server.out" &
pids+=($!); srv_pid=$!
sleep 0.3
inns web1 /usr/bin/python3 -c "
import socket, hashlib
data = bytes((i * 7 + 3) % 251 for i in range(1_000_000))
c = socket.create_connection(('10.77.0.21', 5432), timeout=20); c.sendall(data); c.close()
print('web1 sent    ', len(data), 'bytes, sha256', hashlib.sha256(data).hexdigest())" | tee "$work/client.out"
wait "$srv_pid" || true
cat "$work/server.out"
sleep 0.5

kill -INT "$tshark_pid"; wait "$tshark_pid" 2>/dev/null || true
kill -INT "$fs_pid"; wait "$fs_pid" || { echo "flowsteer failed:" >&2; cat "$work/flowsteer.err" >&2; exit 1; }

echo
echo "== flowsteer's counters"
cat "$work/flowsteer.out"

echo
echo "== what the monitoring tool received on its interface (first 12 of $(tshark -r "$work/tool.pcapng" 2>/dev/null | wc -l))"
tshark -n -r "$work/tool.pcapng" -c 12 2>/dev/null

echo
echo "== the pcapng sink, with the rule in each packet's comment (first 6)"
tshark -n -r "$work/lab.pcapng" -T fields -E separator=' | ' -e frame.number -e frame.interface_name \
  -e ip.src -e ip.dst -e tcp.srcport -e tcp.dstport -e frame.comment -c 6 2>/dev/null

if ((check)); then
  sent=$(awk '{print $NF}' "$work/client.out"); got=$(awk '{print $NF}' "$work/server.out")
  [[ -n "$sent" && "$sent" == "$got" ]] || { echo "demo check: transfer corrupted ($sent vs $got)" >&2; exit 1; }
  other=$(tshark -n -r "$work/tool.pcapng" -Y '!(tcp.port == 5432 && ip.addr == 10.77.0.21)' 2>/dev/null | wc -l)
  steered=$(tshark -n -r "$work/tool.pcapng" -Y 'tcp.port == 5432' 2>/dev/null | wc -l)
  [[ "$other" -eq 0 && "$steered" -gt 0 ]] || { echo "demo check: tool saw $steered steered and $other other packets" >&2; exit 1; }
  echo "demo check: ok (transfer intact; the tool saw $steered packets of the steered flow and nothing else)"
fi
