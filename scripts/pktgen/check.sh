#!/usr/bin/env bash
# Checks that flows.lua and flows.pkt configure the same ranges, without
# Pktgen-DPDK (not packaged in Debian 12): flows.lua runs under Lua 5.4
# against a stand-in `pktgen` table that prints each range call in the .pkt
# command syntax, and the result must equal the range lines of flows.pkt.
# Also checks the Lua syntax. Exits non-zero on any difference.
set -euo pipefail
cd "$(dirname "$0")"
command -v lua5.4 >/dev/null 2>&1 || {
  echo "pktgen/check: lua5.4 is required (apt-get install lua5.4)" >&2
  exit 1
}

stub=$(mktemp /tmp/flowsteer-pktgen-stub.XXXXXX.lua)
trap 'rm -f "$stub"' EXIT
cat >"$stub" <<'LUA'
-- Stand-in for Pktgen's Lua API: range calls become .pkt command lines.
local out = {}
local names = { src_ip = "src ip", dst_ip = "dst ip", src_port = "src port", dst_port = "dst port",
                src_mac = "src mac", dst_mac = "dst mac", pkt_size = "size" }
pktgen = { range = {} }
for fn, words in pairs(names) do
  pktgen.range[fn] = function(port, what, value)
    out[#out + 1] = string.format("range %s %s %s %s", port, words, what, tostring(value))
  end
end
function pktgen.set_proto(ports, proto)
  for _, p in ipairs(ports == "all" and { "0", "1" } or { ports }) do
    out[#out + 1] = string.format("range %s proto %s", p, proto)
  end
end
local ignored = { "set", "set_range", "start", "stop", "delay", "clr" }
for _, fn in ipairs(ignored) do pktgen[fn] = function() end end
function pktgen.portStats() return { [0] = { opackets = 0, ipackets = 0, ierrors = 0 }, [1] = { opackets = 0, ipackets = 0, ierrors = 0 } } end
function printf() end
package.preload["Pktgen"] = function() return true end
dofile(arg[1])
table.sort(out)
for _, l in ipairs(out) do print(l) end
LUA
luac5.4 -p flows.lua
from_lua=$(lua5.4 "$stub" flows.lua)
from_pkt=$(grep '^range ' flows.pkt | sort)
if [[ "$from_lua" != "$from_pkt" ]]; then
  echo "pktgen/check: flows.lua and flows.pkt differ (< lua, > pkt):" >&2
  diff <(echo "$from_lua") <(echo "$from_pkt") >&2 || true
  exit 1
fi
grep -q '^enable all range' flows.pkt || { echo "pktgen/check: flows.pkt does not enable range mode" >&2; exit 1; }
grep -q 'set_range("all", "on")' flows.lua || { echo "pktgen/check: flows.lua does not enable range mode" >&2; exit 1; }
echo "pktgen/check: flows.lua and flows.pkt set the same $(echo "$from_pkt" | wc -l) range values"
