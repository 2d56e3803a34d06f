//! The pcapng sink read back by tshark: interface names are port names, the
//! packet comment names the rule and chain, sliced copies keep their wire
//! length, timestamps keep their nanoseconds.

use chains::sink::pcapng::PcapngSink;
use chains::sink::{CopyRecord, Names, Sink};
use dataplane::packet::{Meta, Packet};
use std::path::Path;
use std::process::Command;

const T0: u64 = 1_700_000_000_123_456_789;

/// An Ethernet/IPv4/UDP frame of `len` bytes (at least 42) from MAC 02:00:00:00:00:<src>.
fn frame(src: u8, len: usize) -> Vec<u8> {
    assert!(len >= 42);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xee]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, src]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, src]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 200]);
    let mut sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&1000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&53u16.to_be_bytes());
    udp[4..6].copy_from_slice(&((len - 34) as u16).to_be_bytes());
    f
}

/// Runs tshark on `path` and returns one row of `fields` per frame. Fails the
/// test when tshark is missing: these tests exist to prove tshark reads the files.
fn tshark(path: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(path).args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "tshark is required by these tests and could not be run ({e}); install it (Debian: apt-get install tshark)"
        )
    });
    assert!(out.status.success(), "tshark failed on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| l.split('|').map(str::to_string).collect()).collect()
}

fn copy(port: u16, data: &[u8], orig_len: u32, ts_ns: u64, rule: u32, chain: u16) -> CopyRecord {
    CopyRecord { pkt: Packet::from_slice(data, Meta { port, ts_ns, orig_len }), rule, chain }
}

#[test]
fn tshark_shows_ports_rules_lengths_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copies.pcapng");
    let names = Names {
        ports: vec!["vm-web-1".into(), "vm-db-1".into()],
        rules: vec!["web-to-db".to_string(), "dns".to_string()].into(),
        chains: vec!["c0".into(), "inspect".into(), "audit".into()],
    };
    let full = frame(1, 98);
    let big = frame(2, 1514);
    let mut sink = PcapngSink::create("capture-0", &path).unwrap();
    assert_eq!(sink.name(), "capture-0");
    // A whole copy, a copy sliced to 64 bytes, a second copy from the first
    // port, and ids the names table does not know.
    sink.write(&copy(0, &full, 0, T0, 0, 2), &names).unwrap();
    sink.write(&copy(1, &big[..64], 1514, T0 + 1, 1, 5), &names).unwrap();
    sink.write(&copy(0, &full, 0, T0 + 3_000_000_000, 0, 2), &names).unwrap();
    sink.write(&copy(7, &full, 0, T0 + 4_000_000_000, 9, 1), &names).unwrap();
    sink.flush().unwrap();

    let rows = tshark(
        &path,
        &[
            "frame.interface_id",
            "frame.interface_name",
            "frame.comment",
            "frame.len",
            "frame.cap_len",
            "eth.src",
            "frame.time_epoch",
        ],
    );
    assert_eq!(
        rows,
        [
            [
                "0",
                "vm-web-1",
                "flowsteer rule=web-to-db chain=audit",
                "98",
                "98",
                "02:00:00:00:00:01",
                "1700000000.123456789"
            ],
            [
                "1",
                "vm-db-1",
                "flowsteer rule=dns chain=chain5",
                "1514",
                "64",
                "02:00:00:00:00:02",
                "1700000000.123456790"
            ],
            [
                "0",
                "vm-web-1",
                "flowsteer rule=web-to-db chain=audit",
                "98",
                "98",
                "02:00:00:00:00:01",
                "1700000003.123456789"
            ],
            [
                "2",
                "port7",
                "flowsteer rule=rule9 chain=inspect",
                "98",
                "98",
                "02:00:00:00:00:01",
                "1700000004.123456789"
            ],
        ]
    );
}

#[test]
fn a_sink_without_copies_is_still_a_valid_capture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.pcapng");
    let mut sink = PcapngSink::create("idle", &path).unwrap();
    sink.flush().unwrap();
    assert!(tshark(&path, &["frame.len"]).is_empty());
}

#[test]
fn dropping_the_sink_flushes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dropped.pcapng");
    let mut sink = PcapngSink::create("s", &path).unwrap();
    sink.write(&copy(0, &frame(3, 60), 0, T0, 0, 0), &Names::default()).unwrap();
    drop(sink);
    let rows = tshark(&path, &["frame.interface_name", "frame.comment"]);
    assert_eq!(rows, [["port0", "flowsteer rule=rule0 chain=chain0"]]);
}
