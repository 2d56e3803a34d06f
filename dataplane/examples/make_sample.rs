//! Writes `examples/sample.pcapng`: a few seconds of east-west traffic
//! between three VMs, for the demo, the README and the end-to-end tests.
//!
//! ```text
//! cargo run -p dataplane --example make_sample -- examples/sample.pcapng
//! ```

use dataplane::flow::MacAddr;
use dataplane::packet::{Meta, Packet, Pool};
use dataplane::port::pcap::PcapPort;
use dataplane::port::{Burst, Port};
use dataplane::wire::build::PacketBuilder;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

const WEB1: ([u8; 6], [u8; 4]) = ([2, 0, 0, 0, 1, 1], [10, 0, 0, 11]);
const WEB2: ([u8; 6], [u8; 4]) = ([2, 0, 0, 0, 1, 2], [10, 0, 0, 12]);
const DB1: ([u8; 6], [u8; 4]) = ([2, 0, 0, 0, 2, 1], [10, 0, 0, 21]);
const DNS: ([u8; 6], [u8; 4]) = ([2, 0, 0, 0, 0, 2], [10, 0, 0, 2]);

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;
const FIN_ACK: u8 = 0x11;

fn v4(from: ([u8; 6], [u8; 4]), to: ([u8; 6], [u8; 4])) -> PacketBuilder {
    PacketBuilder::ethernet(MacAddr(from.0), MacAddr(to.0)).ipv4(Ipv4Addr::from(from.1), Ipv4Addr::from(to.1))
}

/// A short TCP conversation with consistent sequence numbers: handshake, a
/// request, a response, close.
fn tcp_conversation(
    out: &mut Vec<Vec<u8>>,
    c: ([u8; 6], [u8; 4]),
    s: ([u8; 6], [u8; 4]),
    cport: u16,
    sport: u16,
    req: &[u8],
    resp: &[u8],
) {
    let (ci, si) = (1_000u32, 5_000u32);
    let (rq, rs) = (req.len() as u32, resp.len() as u32);
    let to_s = |flags: u8, seq: u32, ack: u32| v4(c, s).tcp(cport, sport).tcp_flags(flags).tcp_seq_ack(seq, ack);
    let to_c = |flags: u8, seq: u32, ack: u32| v4(s, c).tcp(sport, cport).tcp_flags(flags).tcp_seq_ack(seq, ack);
    out.push(to_s(SYN, ci, 0).pad_to(60).build());
    out.push(to_c(SYN | ACK, si, ci + 1).pad_to(60).build());
    out.push(to_s(ACK, ci + 1, si + 1).pad_to(60).build());
    out.push(to_s(PSH_ACK, ci + 1, si + 1).payload(req).build());
    out.push(to_c(PSH_ACK, si + 1, ci + 1 + rq).payload(resp).build());
    out.push(to_s(FIN_ACK, ci + 1 + rq, si + 1 + rs).pad_to(60).build());
    out.push(to_c(FIN_ACK, si + 1 + rs, ci + 2 + rq).pad_to(60).build());
    out.push(to_s(ACK, ci + 2 + rq, si + 2 + rs).pad_to(60).build());
}

fn frames() -> Vec<Vec<u8>> {
    let mut f = Vec::new();
    // ARP: web-1 asks for db-1, db-1 answers.
    let arp_req = [0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 1, 1, 10, 0, 0, 11, 0, 0, 0, 0, 0, 0, 10, 0, 0, 21];
    f.push(
        PacketBuilder::ethernet(MacAddr(WEB1.0), MacAddr::BROADCAST)
            .ethertype(0x0806)
            .payload(&arp_req)
            .pad_to(60)
            .build(),
    );
    let arp_rep = [0, 1, 8, 0, 6, 4, 0, 2, 2, 0, 0, 0, 2, 1, 10, 0, 0, 21, 2, 0, 0, 0, 1, 1, 10, 0, 0, 11];
    f.push(
        PacketBuilder::ethernet(MacAddr(DB1.0), MacAddr(WEB1.0)).ethertype(0x0806).payload(&arp_rep).pad_to(60).build(),
    );
    // web-1 -> db-1 PostgreSQL (steered, both directions).
    tcp_conversation(
        &mut f,
        WEB1,
        DB1,
        40_001,
        5432,
        b"Q\x00\x00\x00\x1aSELECT * FROM orders;\x00",
        b"Z\x00\x00\x00\x05I",
    );
    // web-1 -> web-2 HTTP (not steered).
    tcp_conversation(
        &mut f,
        WEB1,
        WEB2,
        40_002,
        80,
        b"GET / HTTP/1.1\r\nHost: web-2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    // DNS (not steered).
    f.push(
        v4(WEB1, DNS)
            .udp(53_001, 53)
            .payload(&[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 4, b'd', b'b', b'-', b'1', 0, 0, 1, 0, 1])
            .build(),
    );
    f.push(
        v4(DNS, WEB1)
            .udp(53, 53_001)
            .payload(&[
                0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 4, b'd', b'b', b'-', b'1', 0, 0, 1, 0, 1, 0xc0, 12, 0,
                1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 21,
            ])
            .build(),
    );
    // Ping web-1 -> db-1 (steered by icmp-audit).
    f.push(v4(WEB1, DB1).icmp(8, 0).payload(&[0, 1, 0, 1, b'p', b'i', b'n', b'g']).pad_to(60).build());
    f.push(v4(DB1, WEB1).icmp(0, 0).payload(&[0, 1, 0, 1, b'p', b'i', b'n', b'g']).pad_to(60).build());
    // web-2 -> db-1 PostgreSQL (steered).
    tcp_conversation(&mut f, WEB2, DB1, 40_003, 5432, b"Q\x00\x00\x00\x0eSELECT 1;\x00", b"Z\x00\x00\x00\x05I");
    // IPv6 web-1 -> db-1 PostgreSQL (steered by web-to-db-v6).
    let (a6, d6): (Ipv6Addr, Ipv6Addr) = ("fd00::11".parse().unwrap(), "fd00::21".parse().unwrap());
    f.push(
        PacketBuilder::ethernet(MacAddr(WEB1.0), MacAddr(DB1.0)).ipv6(a6, d6).tcp(40_004, 5432).tcp_flags(SYN).build(),
    );
    f.push(
        PacketBuilder::ethernet(MacAddr(DB1.0), MacAddr(WEB1.0))
            .ipv6(d6, a6)
            .tcp(5432, 40_004)
            .tcp_flags(SYN | ACK)
            .build(),
    );
    // VLAN 100 UDP syslog web-2 -> 10.0.0.30 (not steered).
    f.push(
        PacketBuilder::ethernet(MacAddr(WEB2.0), MacAddr([2, 0, 0, 0, 3, 1]))
            .vlan(100)
            .ipv4(Ipv4Addr::from(WEB2.1), Ipv4Addr::new(10, 0, 0, 30))
            .udp(514, 514)
            .payload(b"<14>web-2: hello")
            .build(),
    );
    // A malformed frame: IPv4 header cut short (counted and forwarded).
    let mut bad = v4(WEB1, DB1).tcp(40_005, 5432).build();
    bad.truncate(14 + 12);
    f.push(bad);
    f
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "examples/sample.pcapng".into()));
    let pool = Pool::new(16, 2048);
    let mut port = PcapPort::open("vm-web-1", 0, None, Some(&path), pool)?;
    let mut burst = Burst::new();
    // A fixed start time and 1 ms between packets: the file is the same on every run.
    let t0: u64 = 1_700_000_000_000_000_000;
    let frames = frames();
    for (i, f) in frames.iter().enumerate() {
        burst.push(Packet::from_slice(f, Meta { port: 0, ts_ns: t0 + i as u64 * 1_000_000, orig_len: 0 }));
        if burst.is_full() {
            port.tx_burst(&mut burst);
        }
    }
    port.tx_burst(&mut burst);
    port.flush()?;
    println!("wrote {} packets to {}", frames.len(), path.display());
    Ok(())
}
