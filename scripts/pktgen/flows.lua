-- Pktgen-DPDK Lua script: the ranges of flows.pkt, then a timed run that
-- prints what each port sent and received and the rate flowsteer forwarded.
--
--   pktgen ... -- -P -m "1.0, 2.1" -f scripts/pktgen/flows.lua
--
-- Port 0 sends 10.254.0.0-255 -> 10.253.0.0-10.253.1.255, UDP 1000-1099 ->
-- 5001 into flowsteer port a; port 1 sends the replies into port b. 64-byte
-- frames (with FCS), 12,800 flows per direction; a symmetric rule on
-- src_port 1000-1009 steers exactly 10% (examples/dpdk-memif.yaml).
package.path = package.path .. ";?.lua;test/?.lua;app/?.lua;"
require "Pktgen"

local seconds = 10      -- measured run
local warmup_ms = 2000  -- traffic before the counters are cleared

local function range(port, src_ip, dst_ip, src_port, dst_port)
    pktgen.range.pkt_size(port, "start", 64)
    pktgen.range.pkt_size(port, "min", 64)
    pktgen.range.pkt_size(port, "max", 64)
    pktgen.range.pkt_size(port, "inc", 0)
    -- Each field: { start = min, max, increment per packet }.
    local fields = { src_ip = src_ip, dst_ip = dst_ip, src_port = src_port, dst_port = dst_port }
    for field, r in pairs(fields) do
        pktgen.range[field](port, "start", r[1])
        pktgen.range[field](port, "min", r[1])
        pktgen.range[field](port, "max", r[2])
        pktgen.range[field](port, "inc", r[3])
    end
end

pktgen.set("all", "count", 0)
pktgen.set("all", "rate", 100)
pktgen.set("all", "burst", 32)
pktgen.set_proto("all", "udp")
pktgen.range.dst_mac("0", "start", "02:00:00:00:0b:00")
pktgen.range.src_mac("0", "start", "02:00:00:00:0a:00")
pktgen.range.dst_mac("1", "start", "02:00:00:00:0a:00")
pktgen.range.src_mac("1", "start", "02:00:00:00:0b:00")
range("0", { "10.254.0.0", "10.254.0.255", "0.0.0.1" }, { "10.253.0.0", "10.253.1.255", "0.0.0.1" },
      { 1000, 1099, 1 }, { 5001, 5001, 0 })
range("1", { "10.253.0.0", "10.253.1.255", "0.0.0.1" }, { "10.254.0.0", "10.254.0.255", "0.0.0.1" },
      { 5001, 5001, 0 }, { 1000, 1099, 1 })
pktgen.set_range("all", "on")

pktgen.start("all")
pktgen.delay(warmup_ms)
pktgen.clr()
pktgen.delay(seconds * 1000)
pktgen.stop("all")
pktgen.delay(500)   -- what is still in flight arrives

local s = pktgen.portStats("all", "port")
local rx, tx = 0, 0
for port = 0, 1 do
    printf("port %d: sent %d received %d rx-errors %d rx-missed %d\n", port,
           s[port].opackets, s[port].ipackets, s[port].ierrors, s[port].imissed or 0)
    rx = rx + s[port].ipackets
    tx = tx + s[port].opackets
end
printf("offered %.2f Mpps, forwarded (received back) %.2f Mpps over %d s\n",
       tx / seconds / 1e6, rx / seconds / 1e6, seconds)
