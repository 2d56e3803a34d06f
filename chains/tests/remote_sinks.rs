//! The remote sinks (VXLAN, L2 GRE, ERSPAN II/III) send real packets over
//! loopback (127.0.0.1 and ::1 only), captured by `tshark -i lo` and decoded
//! by tshark's own dissectors: what Wireshark users will see.
//!
//! Each test captures with its own filter (its own UDP port or GRE protocol
//! type and IP version), so the tests can run at the same time. Inner frames
//! carry this process's id in their source MAC and the decoder keeps only
//! those, so another run of these tests at the same time cannot disturb them.

use chains::sink::erspan::{ErspanSink, ErspanVersion};
use chains::sink::gre::GreSink;
use chains::sink::remote::RemoteCfg;
use chains::sink::vxlan::VxlanSink;
use chains::sink::{CopyRecord, Names, Sink, SinkError};
use dataplane::flow::MacAddr;
use dataplane::packet::{Meta, Packet};
use dataplane::wire::build::PacketBuilder;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TSHARK: &str = "/usr/bin/tshark";
const T0: u64 = 1_700_000_000_123_456_789;
const LO4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LO6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

fn tshark_present() {
    assert!(
        Path::new(TSHARK).exists(),
        "{TSHARK} is required by these tests (they prove tshark decodes the sinks' output); \
         install it (Debian: apt-get install tshark)"
    );
}

/// A running `tshark -i lo -w FILE -f FILTER`; killed if the test fails before [`Capture::stop`].
struct Capture {
    child: Child,
    file: PathBuf,
    stderr: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Capture {
    /// Starts capturing and returns once tshark says it is capturing.
    fn start(filter: &str) -> Capture {
        tshark_present();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lo.pcapng");
        let mut child = Command::new(TSHARK)
            .args(["-i", "lo", "-f", filter, "-w"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {TSHARK}: {e}"));
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        // Drains stderr for tshark's whole life, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let cap = Capture { child, file, stderr, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match cap.stderr.recv_timeout(left) {
                Ok(line) if line.contains("Capturing on") => break,
                Ok(line) => seen.push(line),
                Err(_) => panic!("tshark did not start capturing on lo with filter {filter:?}: {seen:?}"),
            }
        }
        // "Capturing on" comes before dumpcap has its filter in place and
        // has flushed its ring: packets sent at once are lost. tshark 4.x
        // then logs "Capture started"; wait for it when it comes, and
        // settle a little either way.
        let until = Instant::now() + Duration::from_secs(2);
        while let Ok(line) = cap.stderr.recv_timeout(until.saturating_duration_since(Instant::now())) {
            if line.contains("Capture started") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        cap
    }

    /// Stops tshark with SIGINT, waits for it, and returns the capture file.
    fn stop(&mut self) -> &Path {
        // Let the last packets reach the capture before asking tshark to stop.
        std::thread::sleep(Duration::from_millis(300));
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(ok.success(), "kill -INT {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "tshark exited with {status} after SIGINT");
                return &self.file;
            }
            assert!(Instant::now() < deadline, "tshark did not stop after SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One decoded packet: for each requested field, all its occurrences (outer first).
type Row = Vec<Vec<String>>;

/// Decodes `file` with tshark, checks no packet of ours is malformed, and returns the rows whose last `eth.src` (the
/// inner frame's) is one of this process's MACs. `eth.src` must be the first field.
fn decode(file: &Path, decode_as: &[&str], fields: &[&str]) -> Vec<Row> {
    assert_eq!(fields[0], "eth.src");
    let mut cmd = Command::new(TSHARK);
    cmd.arg("-r").arg(file).args(["-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"]);
    for d in decode_as {
        cmd.args(["-d", d]);
    }
    for f in fields {
        cmd.args(["-e", f]);
    }
    // Last column: set when a dissector found the packet malformed.
    cmd.args(["-e", "_ws.malformed"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "tshark -r failed: {}", String::from_utf8_lossy(&out.stderr));
    let prefix = mac_prefix();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('|').map(|f| f.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()).collect())
        .filter(|row: &Row| row[0].last().is_some_and(|m| m.starts_with(&prefix)))
        .inspect(|row| assert!(row[fields.len()].is_empty(), "tshark found a malformed packet: {row:?}"))
        .collect()
}

/// The first five bytes of this process's inner source MACs, as tshark prints them.
fn mac_prefix() -> String {
    let m = mac(0);
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:", m.0[0], m.0[1], m.0[2], m.0[3], m.0[4])
}

/// A locally administered MAC carrying this process's id, ending in `last`.
fn mac(last: u8) -> MacAddr {
    let pid = std::process::id().to_be_bytes();
    MacAddr([0x02, pid[0], pid[1], pid[2], pid[3], last])
}

fn mac_str(last: u8) -> String {
    format!("{}{last:02x}", mac_prefix())
}

/// Sets the TOS byte of an untagged IPv4 frame and refreshes the header checksum.
fn set_tos(frame: &mut [u8], tos: u8) {
    let ip = &mut frame[14..34];
    ip[1] = tos;
    ip[10..12].fill(0);
    let mut sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// The test copies: UDP/IPv4 with TOS 0xb8 (EF, precedence 5); TCP/IPv6 tagged VLAN 100 with priority 0
/// (PacketBuilder's tags have PCP 0); TCP/IPv4 sliced to 60 bytes of 200.
fn copies() -> Vec<CopyRecord> {
    let mut udp4 = PacketBuilder::ethernet(mac(1), MacAddr([2, 0, 0, 0, 0, 0xee]))
        .ipv4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        .udp(1000, 7)
        .payload(b"echo")
        .build();
    set_tos(&mut udp4, 0xb8);
    let tcp6 = PacketBuilder::ethernet(mac(2), MacAddr([2, 0, 0, 0, 0, 0xee]))
        .vlan(100)
        .ipv6("fd00::2".parse().unwrap(), "fd00::3".parse().unwrap())
        .tcp(40000, 80)
        .payload(b"GET / HTTP/1.1\r\n")
        .build();
    let big = PacketBuilder::ethernet(mac(3), MacAddr([2, 0, 0, 0, 0, 0xee]))
        .ipv4("10.0.0.3".parse().unwrap(), "10.0.0.4".parse().unwrap())
        .tcp(40001, 443)
        .pad_to(200)
        .build();
    let rec = |data: &[u8], port, ts_ns, orig_len| CopyRecord {
        pkt: Packet::from_slice(data, Meta { port, ts_ns, orig_len }),
        rule: 0,
        chain: 0,
    };
    vec![rec(&udp4, 1, T0, 0), rec(&tcp6, 2, T0 + 1_000, 0), rec(&big[..60], 3, T0 + 2_000_000_000, 200)]
}

fn send_all(sink: &mut dyn Sink) -> Vec<CopyRecord> {
    let copies = copies();
    for c in &copies {
        sink.write(c, &Names::default()).unwrap();
    }
    sink.flush().unwrap();
    copies
}

fn first(row: &Row, i: usize) -> &str {
    row[i].first().map_or("", String::as_str)
}

fn last(row: &Row, i: usize) -> &str {
    row[i].last().map_or("", String::as_str)
}

/// Checks the inner frames of the decoded rows against [`copies`]: MACs,
/// inner IPv4/IPv6 source. Fields 0..3 must be `eth.src`, `ip.src`, `ipv6.src`.
fn assert_inner_frames(rows: &[Row]) {
    assert_eq!(rows.len(), 3, "expected the 3 copies, got {rows:?}");
    assert_eq!(last(&rows[0], 0), mac_str(1));
    assert_eq!(last(&rows[0], 1), "10.0.0.1");
    assert_eq!(last(&rows[1], 0), mac_str(2));
    assert_eq!(last(&rows[1], 2), "fd00::2");
    assert_eq!(last(&rows[2], 0), mac_str(3));
    assert_eq!(last(&rows[2], 1), "10.0.0.3");
}

fn cfg(destination: IpAddr) -> RemoteCfg {
    RemoteCfg { destination, source: None }
}

/// A VXLAN receiver on loopback: a bound socket, so no "port unreachable" comes back.
fn vxlan_receiver(addr: IpAddr) -> (UdpSocket, u16) {
    let rx = UdpSocket::bind((addr, 0)).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let port = rx.local_addr().unwrap().port();
    (rx, port)
}

fn vxlan_round_trip(addr: IpAddr) {
    let (rx, port) = vxlan_receiver(addr);
    let mut cap = Capture::start(&format!("udp dst port {port}"));
    let mut sink = VxlanSink::new("vx", cfg(addr), 0x12_3456, port).unwrap();
    assert_eq!(sink.name(), "vx");
    assert_eq!(sink.source(), addr, "source taken from the route to loopback");
    let copies = send_all(&mut sink);
    // Byte-exact datagrams at the receiver: VXLAN header, then the copy.
    let mut buf = [0u8; 2048];
    for c in &copies {
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..8], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(&buf[8..n], c.pkt.data());
    }
    let file = cap.stop();
    let fields = ["eth.src", "ip.src", "ipv6.src", "udp.dstport", "vxlan.vni", "vxlan.flags"];
    let rows = decode(file, &[&format!("udp.port=={port},vxlan")], &fields);
    assert_inner_frames(&rows);
    for r in &rows {
        assert_eq!(first(r, 3), port.to_string(), "outer UDP destination port");
        assert_eq!(first(r, 4), (0x12_3456).to_string());
        assert_eq!(first(r, 5), "0x0800", "VXLAN flags: VNI valid");
    }
}

#[test]
fn remote_vxlan_ipv4_decoded_by_tshark() {
    vxlan_round_trip(LO4);
}

#[test]
fn remote_vxlan_ipv6_decoded_by_tshark() {
    vxlan_round_trip(LO6);
}

#[test]
fn remote_vxlan_closed_port_is_an_io_error() {
    // A port nobody listens on: bind to get a free one, then release it.
    let port = UdpSocket::bind((LO4, 0)).unwrap().local_addr().unwrap().port();
    let mut sink = VxlanSink::new("vx-closed", cfg(LO4), 7, port).unwrap();
    let copy = &copies()[0];
    let names = Names::default();
    let mut result = Ok(());
    // The first send goes out; the ICMP port unreachable it provokes fails a later one.
    for _ in 0..20 {
        result = sink.write(copy, &names);
        if result.is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    match result {
        Err(SinkError::Io { sink, source }) => {
            assert_eq!(sink, "vx-closed");
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused, "{source}");
        }
        other => panic!("expected an I/O error from a closed port, got {other:?}"),
    }
    // The failed send cleared the error: the next one (the sink thread's retry) goes out.
    assert!(sink.write(copy, &names).is_ok());
}

/// Capture filter for GRE with protocol type `proto` over IPv4 or IPv6 (no options/extensions).
fn gre_filter(addr: IpAddr, proto: u16) -> String {
    match addr {
        IpAddr::V4(_) => format!("ip proto 47 and ip[22:2] = {proto:#06x}"),
        IpAddr::V6(_) => format!("ip6 proto 47 and ip6[42:2] = {proto:#06x}"),
    }
}

fn gre_round_trip(addr: IpAddr) {
    let mut cap = Capture::start(&gre_filter(addr, 0x6558));
    let mut sink = GreSink::new("gre", cfg(addr)).unwrap();
    assert_eq!(sink.source(), addr);
    send_all(&mut sink);
    let file = cap.stop();
    let rows = decode(file, &[], &["eth.src", "ip.src", "ipv6.src", "gre.proto", "gre.flags_and_version"]);
    assert_inner_frames(&rows);
    for r in &rows {
        assert_eq!(first(r, 3), "0x6558");
        assert_eq!(first(r, 4), "0x0000");
    }
}

#[test]
fn remote_gre_teb_ipv4_decoded_by_tshark() {
    gre_round_trip(LO4);
}

#[test]
fn remote_gre_teb_ipv6_decoded_by_tshark() {
    gre_round_trip(LO6);
}

const ERSPAN_FIELDS: [&str; 18] = [
    "eth.src",
    "ip.src",
    "ipv6.src",
    "gre.proto",
    "gre.sequence_number",
    "erspan.version",
    "erspan.spanid",
    "erspan.vlan",
    "erspan.cos",
    "erspan.encap",
    "erspan.truncated",
    "erspan.index",
    "erspan.timestamp",
    "erspan.gra",
    "erspan.p",
    "erspan.ft",
    "erspan.o",
    "erspan.direction",
];

fn erspan_round_trip(addr: IpAddr, version: ErspanVersion) -> Vec<Row> {
    let proto = if version == ErspanVersion::II { 0x88be } else { 0x22eb };
    let mut cap = Capture::start(&gre_filter(addr, proto));
    let mut sink = ErspanSink::new("erspan", cfg(addr), version, 1000).unwrap();
    assert_eq!(sink.source(), addr);
    send_all(&mut sink);
    let file = cap.stop();
    let rows = decode(file, &[], &ERSPAN_FIELDS);
    assert_inner_frames(&rows);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(first(r, 3), format!("{proto:#06x}"));
        assert_eq!(first(r, 4), i.to_string(), "GRE sequence number counts copies");
        assert_eq!(first(r, 6), "1000", "session id");
    }
    // The tagged copy carries its VLAN; the sliced one is marked truncated.
    assert_eq!(first(&rows[0], 7), "0");
    assert_eq!(first(&rows[1], 7), "100");
    assert_eq!(first(&rows[0], 10), "0");
    assert_eq!(first(&rows[1], 10), "0");
    assert_eq!(first(&rows[2], 10), "1");
    // COS: IP precedence of the untagged IPv4 copy, the tag's priority of the tagged one.
    assert_eq!(first(&rows[0], 8), "5");
    assert_eq!(first(&rows[1], 8), "0");
    assert_eq!(first(&rows[2], 8), "0");
    rows
}

#[test]
fn remote_erspan_ii_ipv4_decoded_by_tshark() {
    let rows = erspan_round_trip(LO4, ErspanVersion::II);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(first(r, 5), "1", "ERSPAN version field of type II");
        assert_eq!(first(r, 11), (i + 1).to_string(), "index = ingress port");
        assert_eq!(first(r, 12), "", "type II has no timestamp");
    }
    assert_eq!(first(&rows[0], 9), "0", "untagged");
    assert_eq!(first(&rows[1], 9), "3", "VLAN tag preserved in frame");
}

fn erspan_iii(addr: IpAddr) {
    let rows = erspan_round_trip(addr, ErspanVersion::III);
    let ts = [T0, T0 + 1_000, T0 + 2_000_000_000].map(|t| ((t / 100) & 0xffff_ffff).to_string());
    for (r, ts) in rows.iter().zip(ts) {
        assert_eq!(first(r, 5), "2", "ERSPAN version field of type III");
        assert_eq!(first(r, 12), ts, "timestamp in 100 ns units, modulo 2^32");
        assert_eq!(first(r, 13), "1", "granularity 100 ns");
        assert_eq!(first(r, 14), "1", "P: Ethernet frame follows");
        assert_eq!(first(r, 15), "0", "frame type Ethernet");
        assert_eq!(first(r, 16), "0", "no optional sub-header");
    }
}

#[test]
fn remote_erspan_iii_ipv4_decoded_by_tshark() {
    erspan_iii(LO4);
}

#[test]
fn remote_erspan_iii_ipv6_decoded_by_tshark() {
    erspan_iii(LO6);
}

#[test]
fn remote_config_errors_and_explicit_source() {
    let invalid = |r: Result<(), SinkError>| match r {
        Err(SinkError::Io { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput, "{source}"),
        other => panic!("expected a configuration error, got {other:?}"),
    };
    invalid(ErspanSink::new("e", cfg(LO4), ErspanVersion::II, 1024).map(drop));
    invalid(VxlanSink::new("v", cfg(LO4), 1 << 24, 4789).map(drop));
    invalid(VxlanSink::new("v", cfg(LO4), 1, 0).map(drop));
    invalid(GreSink::new("g", RemoteCfg { destination: LO4, source: Some(LO6) }).map(drop));
    invalid(GreSink::new("g", cfg(IpAddr::V4(Ipv4Addr::UNSPECIFIED))).map(drop));
    let sink = GreSink::new("g", RemoteCfg { destination: LO6, source: Some(LO6) }).unwrap();
    assert_eq!(sink.source(), LO6);
    let sink = ErspanSink::new("e", RemoteCfg { destination: LO4, source: Some(LO4) }, ErspanVersion::III, 0).unwrap();
    assert_eq!(sink.source(), LO4);
}
