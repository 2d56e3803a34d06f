//! The worker over DPDK ports: a capture enters through a net_pcap vdev,
//! is forwarded as mbufs (no copy) to another net_pcap vdev, and comes out
//! byte for byte; afterwards every mbuf is back in the pool. One test: the
//! EAL can be initialised once per process.
#![cfg(feature = "dpdk")]

use dataplane::classifier::RuleSet;
use dataplane::forward::Links;
use dataplane::packet::{Meta, Packet, PortId};
use dataplane::port::dpdk::dpdk::{DeviceConfig, Eal, EalConfig, EthDev, Mempool};
use dataplane::port::dpdk::DpdkPort;
use dataplane::port::{Burst, Port};
use dataplane::publish::RuleTable;
use dataplane::stats::WorkerStats;
use dataplane::worker::{NoChains, Worker, WorkerConfig};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Removes the EAL's runtime directory for the prefix, also when the test fails.
struct RuntimeDir(String);

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.0));
    }
}

fn frame(i: u16, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|k| (k as u16).wrapping_add(i) as u8).collect();
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f
}

#[test]
fn worker_forwards_mbufs_between_pcap_vdevs() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.pcap"), dir.path().join("out.pcap"));
    let output2 = dir.path().join("out2.pcap");
    let frames: Vec<Vec<u8>> = (0..300u16).map(|i| frame(i, 60 + (i as usize * 37) % 1454)).collect();
    let mut w = PcapWriter::new(File::create(&input).unwrap()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(Duration::from_micros(i as u64), f.len() as u32, f)).unwrap();
    }
    drop(w);

    let prefix = format!("fs-dp-test-{}", std::process::id());
    let _dir = RuntimeDir(prefix.clone());
    let cfg = EalConfig {
        file_prefix: prefix,
        memory_mb: 128,
        no_huge: true,
        in_memory: true,
        vdevs: vec![
            format!("net_pcap0,rx_pcap={}", input.display()),
            // One tx queue per tx_pcap: queue 1 writes the second file.
            format!("net_pcap1,tx_pcap={},tx_pcap={}", output.display(), output2.display()),
        ],
        extra: vec!["--log-level=lib.eal:warning".into(), "--no-telemetry".into()],
        ..EalConfig::default()
    };
    let eal = Eal::init(&cfg).expect("EAL init");
    let pool = Mempool::new(&eal, "dp_test", 2047, 32, 2048).unwrap();
    let dc = DeviceConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_descriptors: 256,
        tx_descriptors: 256,
        mtu: None,
        promiscuous: true,
    };
    let a = EthDev::open(&eal, &pool, "net_pcap0", &dc).unwrap();
    let b = EthDev::open(&eal, &pool, "net_pcap1", &DeviceConfig { tx_queues: 2, ..dc.clone() }).unwrap();
    let pa = DpdkPort::new("a", 0, &a, &[0], 0, Arc::clone(&pool), true).unwrap();
    let pb = DpdkPort::new("b", 1, &b, &[0], 0, Arc::clone(&pool), true).unwrap();
    let copied = pb.copied_in();
    let ports: Vec<Box<dyn Port>> = vec![Box::new(pa), Box::new(pb)];
    let links = Links::new(2, &[(0 as PortId, 1 as PortId)]).unwrap();
    let stats = Arc::new(WorkerStats::new(2, 0));
    let table = RuleTable::new(Arc::new(RuleSet::empty()));
    let mut worker = Worker::new(WorkerConfig::default(), ports, &links, table, NoChains, Arc::clone(&stats)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.tx.get() < frames.len() as u64 && Instant::now() < deadline {
        worker.poll();
    }
    worker.finish();
    assert_eq!(stats.tx.get(), frames.len() as u64, "forwarded");
    assert_eq!(copied.load(Ordering::Relaxed), 0, "mbufs went out as they came in, without a copy");
    let ps = worker.ports()[1].stats();
    assert_eq!((ps.tx_packets, ps.tx_dropped), (frames.len() as u64, 0));

    // A heap packet transmitted on a DPDK port is copied into an mbuf (counted).
    let mut other = DpdkPort::new("b", 1, &b, &[], 1, Arc::clone(&pool), false).unwrap();
    assert!(DpdkPort::new("b", 1, &b, &[], 1, Arc::clone(&pool), false).is_err(), "tx queue 1 is taken");
    let extra = frame(7, 100);
    let mut burst = Burst::new();
    burst.push(Packet::from_slice(&extra, Meta::default()));
    assert_eq!(other.tx_burst(&mut burst), 1);
    assert_eq!(other.copied_in().load(Ordering::Relaxed), 1);
    // One larger than an mbuf's room is dropped and counted, not sent cut short.
    burst.push(Packet::from_slice(&frame(8, 3000), Meta::default()));
    assert_eq!(other.tx_burst(&mut burst), 0);
    assert_eq!((other.copied_in().load(Ordering::Relaxed), other.stats().tx_dropped), (1, 1));
    drop((worker, other));
    drop((a, b));
    assert_eq!(pool.in_use(), 0, "mbufs leaked: {}", pool.in_use());

    let read = |path: &std::path::Path| {
        let mut r = PcapReader::new(File::open(path).unwrap()).unwrap();
        let mut out = Vec::new();
        while let Some(p) = r.next_packet() {
            out.push(p.unwrap().data.into_owned());
        }
        out
    };
    let out = read(&output);
    assert_eq!(out.len(), frames.len());
    assert!(out == frames, "forwarded frames differ from the input");
    assert_eq!(read(&output2), vec![extra]);
    drop(pool);
    drop(eal);
}
