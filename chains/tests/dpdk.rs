//! Copies of packets in DPDK mbufs: whole copies are refcount clones (no
//! copy) up to the share limit and pool copies beyond it, sliced copies are
//! pool copies, a DPDK tool port transmits clones without copying, and the
//! mbuf pool is full again once everything is dropped. One test: the EAL
//! can be initialised once per process.
#![cfg(feature = "dpdk")]

use chains::sink::port::PortSink;
use chains::sink::{CopyRecord, Names, Sink, SinkQueue};
use chains::stage::StageSpec;
use chains::{ChainSet, ChainSpec, OnFailure};
use dataplane::flow::FlowKey;
use dataplane::packet::{Meta, Packet, Pool, ShareLimit};
use dataplane::port::dpdk::dpdk::{DeviceConfig, Eal, EalConfig, EthDev, Mempool, RxBurst, TxBurst};
use dataplane::port::dpdk::DpdkPort;
use dataplane::worker::{ChainVerdict, Chains};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Removes the EAL's runtime directory for the prefix, also when the test fails.
struct RuntimeDir(String);

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.0));
    }
}

fn frame(i: u8) -> Vec<u8> {
    (0..200u8).map(|k| k ^ i).collect()
}

#[test]
fn mbuf_copies_are_bounded_clones_and_the_pool_refills() {
    let prefix = format!("fs-chains-test-{}", std::process::id());
    let _dir = RuntimeDir(prefix.clone());
    let cfg = EalConfig {
        file_prefix: prefix,
        memory_mb: 128,
        no_huge: true,
        in_memory: true,
        vdevs: vec!["net_ring0".into(), "net_ring1".into()],
        extra: vec!["--log-level=lib.eal:warning".into(), "--no-telemetry".into()],
        ..EalConfig::default()
    };
    let eal = Eal::init(&cfg).unwrap();
    let pool = Mempool::new(&eal, "chains_test", 1023, 0, 2048).unwrap();
    let dc = DeviceConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_descriptors: 128,
        tx_descriptors: 128,
        mtu: None,
        promiscuous: true,
    };
    // net_ring0 loops what is sent back: the originals arrive as received mbufs.
    let ring = EthDev::open(&eal, &pool, "net_ring0", &dc).unwrap();
    let (mut rxq, mut txq) = (ring.rx_queue(0).unwrap(), ring.tx_queue(0).unwrap());
    let mut tx = TxBurst::default();
    for i in 0..4u8 {
        let mut seg = pool.alloc().unwrap();
        seg.fill(&frame(i)).unwrap();
        tx.push(seg.into_mbuf(), 200).unwrap();
    }
    assert_eq!(txq.tx_burst(&mut tx).packets, 4);
    let mut rx = RxBurst::default();
    assert_eq!(rxq.rx_burst(&mut rx, 32), 4);
    let originals: Vec<Packet> =
        rx.drain().map(|s| Packet::from_mbuf(s, Meta { port: 0, ts_ns: 5, orig_len: 0 })).collect();
    assert!(originals.iter().all(Packet::is_mbuf));
    assert_eq!(pool.in_use(), 4);

    let sinks = vec![Arc::new(SinkQueue::new("a", 16))];
    let whole = ChainSpec {
        name: "whole".into(),
        on_failure: OnFailure::FailOpen,
        stages: vec![StageSpec::Copy { to: vec![0] }],
    };
    let sliced = ChainSpec {
        name: "sliced".into(),
        on_failure: OnFailure::FailOpen,
        stages: vec![StageSpec::Slice { snaplen: 64 }, StageSpec::Copy { to: vec![0] }],
    };
    let copy_pool = Pool::new(8, 2048);
    let limit = ShareLimit::new(2);
    let mut set = ChainSet::new(&[whole, sliced], &sinks, &copy_pool, 0, 1).with_share_limit(&limit);
    let key = FlowKey::default();
    for p in &originals[..3] {
        assert_eq!(set.run(0, 0, p, &key, 1), ChainVerdict::Forward);
    }
    assert_eq!(set.run(1, 1, &originals[3], &key, 1), ChainVerdict::Forward);
    // Two clones (the limit), then a pool copy; no mbuf was allocated for any copy.
    assert_eq!((limit.outstanding(), pool.in_use(), copy_pool.available()), (2, 4, 6));
    let recs: Vec<CopyRecord> = std::iter::from_fn(|| sinks[0].pop()).collect();
    assert_eq!(recs.len(), 4);
    let kinds: Vec<(bool, usize)> = recs.iter().map(|r| (r.pkt.is_mbuf(), r.pkt.len())).collect();
    assert_eq!(kinds, [(true, 200), (true, 200), (false, 200), (false, 64)]);
    for (r, o) in recs.iter().zip(&originals) {
        assert_eq!(r.pkt.data(), &o.data()[..r.pkt.len()]);
        assert_eq!((r.pkt.meta.ts_ns, r.pkt.wire_len()), (5, 200));
    }
    // Shared bytes are read-only, through the clone and through the original.
    let mut o0 = originals.into_iter();
    let mut first = o0.next().unwrap();
    assert!(first.data_mut().is_empty() && recs[0].pkt.capacity() == 0);
    let mut recs = recs.into_iter();
    let mut clone = recs.next().unwrap();
    clone.pkt.truncate(10);
    assert_eq!(clone.pkt.len(), 200, "a shared mbuf keeps its length");
    drop(clone);
    assert_eq!(limit.outstanding(), 1);
    assert_eq!(first.data_mut().len(), 200, "writable again once the clone is gone");

    // A DPDK tool port transmits a clone as it is, and copies a heap copy into an mbuf.
    let tool_dev = EthDev::open(&eal, &pool, "net_ring1", &dc).unwrap();
    let tool = DpdkPort::new("ids", 2, &tool_dev, &[], 0, Arc::clone(&pool), true).unwrap();
    let copied = tool.copied_in();
    let mut sink = PortSink::new("tool", Box::new(tool), None, Pool::new(4, 2048));
    let names = Names::default();
    let clone = recs.next().unwrap();
    assert!(clone.pkt.is_mbuf());
    sink.write(&clone, &names).unwrap();
    sink.flush().unwrap();
    assert_eq!(copied.load(Ordering::Relaxed), 0, "a clone goes out without a copy");
    let heap = recs.next().unwrap();
    sink.write(&heap, &names).unwrap();
    sink.flush().unwrap();
    assert_eq!(copied.load(Ordering::Relaxed), 1);
    let mut trx = tool_dev.rx_queue(0).unwrap();
    let mut rx = RxBurst::default();
    assert_eq!(trx.rx_burst(&mut rx, 32), 2);
    let out: Vec<Vec<u8>> = rx.drain().map(|s| s.bytes().to_vec()).collect();
    assert_eq!(out, [frame(1), frame(2)]);

    drop((clone, heap, recs, first, o0, sink, trx, rxq, txq, set));
    assert_eq!(limit.outstanding(), 0);
    drop((ring, tool_dev));
    assert_eq!(pool.available(), pool.capacity(), "{} mbufs leaked", pool.in_use());
    drop(pool);
    drop(eal);
}
