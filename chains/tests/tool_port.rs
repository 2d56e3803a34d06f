//! The tool-port sink: copies leave through a dataplane port byte for byte,
//! or with an 802.1Q tag pushed after the MACs; a full TX ring and an empty
//! pool lose the copies concerned (counted) without marking the sink down;
//! tshark decodes the VLAN of copies
//! sent out of a capture-file port.

use chains::sink::port::PortSink;
use chains::sink::{CopyRecord, Names, Sink, SinkQueue, SinkThread};
use dataplane::flow::MacAddr;
use dataplane::packet::{Meta, Packet, Pool};
use dataplane::port::mem::MemPort;
use dataplane::port::pcap::PcapPort;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: u64 = 1_700_000_000_000_000_000;

fn frame(i: u16, len: usize) -> Vec<u8> {
    dataplane::wire::build::PacketBuilder::ethernet(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]))
        .ipv4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        .udp(1000 + i, 53)
        .pad_to(len)
        .build()
}

fn copy(i: u16, len: usize) -> CopyRecord {
    CopyRecord {
        pkt: Packet::from_slice(&frame(i, len), Meta { port: 1, ts_ns: T0 + u64::from(i), orig_len: 0 }),
        rule: 0,
        chain: 0,
    }
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

#[test]
fn untagged_copies_leave_byte_identical_with_their_metadata() {
    let (port, peer) = MemPort::new("ids", 4, 64);
    let pool = Pool::new(64, 2048);
    let mut sink = PortSink::new("ids", Box::new(port), None, Arc::clone(&pool));
    for i in 0..3 {
        sink.write(&copy(i, 60 + usize::from(i) * 100), &Names::default()).unwrap();
    }
    assert!(peer.recv().is_none(), "copies wait for a flush or a full burst");
    sink.flush().unwrap();
    for i in 0..3 {
        let got = peer.recv().unwrap();
        assert_eq!(got.data(), frame(i, 60 + usize::from(i) * 100));
        assert_eq!(got.meta.ts_ns, T0 + u64::from(i));
    }
    assert!(peer.recv().is_none());
}

#[test]
fn the_vlan_tag_goes_after_the_macs_and_nothing_else_changes() {
    let (port, peer) = MemPort::new("ids", 4, 64);
    let pool = Pool::new(64, 2048);
    let mut sink = PortSink::new("ids", Box::new(port), Some(4095), Arc::clone(&pool));
    // 32 waiting copies go out without a flush.
    for i in 0..32 {
        sink.write(&copy(i, 100), &Names::default()).unwrap();
    }
    for i in 0..32 {
        let sent = frame(i, 100);
        let got = peer.recv().unwrap_or_else(|| panic!("copy {i} was transmitted when 32 were waiting"));
        assert_eq!(got.len(), sent.len() + 4);
        assert_eq!(got.data()[..12], sent[..12], "MACs");
        assert_eq!(got.data()[12..16], [0x81, 0x00, 0x0f, 0xff], "TPID 0x8100, priority 0, VID 4095");
        assert_eq!(got.data()[16..], sent[12..], "ethertype and payload");
    }
    drop(sink);
    assert_eq!(pool.available(), pool.capacity(), "buffers come back once the tool port is done with them");
}

#[test]
fn a_full_tx_ring_loses_only_what_did_not_fit_and_the_sink_stays_up() {
    // The tool never reads: its ring holds 4 frames.
    let (port, peer) = MemPort::new("ids", 4, 4);
    let pool = Pool::new(64, 2048);
    let q = Arc::new(SinkQueue::new("ids", 64));
    let sink = PortSink::new("ids", Box::new(port), Some(10), Arc::clone(&pool));
    let thread = SinkThread::spawn(Box::new(sink), Arc::clone(&q), Arc::new(Names::default())).unwrap();
    for i in 0..10 {
        q.push(copy(i, 60)).unwrap();
    }
    assert!(wait_until(Duration::from_secs(2), || q.errors() > 0), "the dropped copies are counted");
    assert!(q.is_up(), "a congested tool port is not a broken one: fail-closed chains keep flowing");
    thread.stop();
    let mut delivered = 0;
    while peer.recv().is_some() {
        delivered += 1;
    }
    assert_eq!(delivered, 4, "the ring took what it could");
    assert_eq!((q.written(), q.errors(), q.lost_down()), (4, 6, 0), "written = delivered, errors = dropped");
}

#[test]
fn an_empty_pool_or_a_copy_too_big_loses_that_copy_and_the_sink_stays_up() {
    let (port, peer) = MemPort::new("ids", 4, 64);
    let pool = Pool::new(2, 128);
    let mut sink = PortSink::new("ids", Box::new(port), Some(1), Arc::clone(&pool));
    let names = Names::default();
    // Too big once tagged: that copy is lost, counted, not an error of the sink.
    sink.write(&copy(0, 125), &names).unwrap();
    assert_eq!(sink.take_lost(), 1);
    sink.write(&copy(0, 124), &names).unwrap();
    sink.write(&copy(1, 60), &names).unwrap();
    // No buffer left: likewise.
    sink.write(&copy(2, 60), &names).unwrap();
    assert_eq!(sink.take_lost(), 1);
    sink.flush().unwrap();
    assert_eq!(sink.take_lost(), 0);
    // The tool reads its frames: their buffers return to the pool.
    let mut got = 0;
    while peer.recv().is_some() {
        got += 1;
    }
    assert_eq!(got, 2);
    sink.write(&copy(3, 60), &names).unwrap();
    assert_eq!(sink.take_lost(), 0);
}

#[test]
#[should_panic(expected = "VLAN id 4096")]
fn vlan_ids_above_4095_are_refused() {
    let (port, _peer) = MemPort::new("ids", 4, 4);
    let _ = PortSink::new("ids", Box::new(port), Some(4096), Pool::new(1, 64));
}

#[test]
fn tshark_decodes_the_vlan_of_copies_sent_out_of_a_capture_port() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.pcap");
    let pool = Pool::new(64, 2048);
    let port = PcapPort::open("ids", 9, None, Some(&path), Arc::clone(&pool)).unwrap();
    let mut sink = PortSink::new("ids", Box::new(port), Some(42), Arc::clone(&pool));
    for i in 0..5 {
        sink.write(&copy(i, 80), &Names::default()).unwrap();
    }
    sink.flush().unwrap();
    drop(sink);

    let out = Command::new("/usr/bin/tshark")
        .arg("-r")
        .arg(&path)
        .args([
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "vlan.id",
            "-e",
            "vlan.etype",
            "-e",
            "udp.srcport",
            "-e",
            "frame.len",
        ])
        .output()
        .unwrap_or_else(|e| panic!("/usr/bin/tshark is required by this test and could not be run ({e})"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    let want: Vec<String> = (0..5).map(|i| format!("42|0x0800|{}|84", 1000 + i)).collect();
    assert_eq!(rows, want);
}
