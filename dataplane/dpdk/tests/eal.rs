//! The binding against a real EAL (no hugepages, nothing on disk): net_ring
//! loopback bursts, net_null receive, refcount clones, and a pool that is
//! full again once everything is dropped. One test, because the EAL can be
//! initialised once per process.

use dpdk::{DeviceConfig, DeviceSpec, Eal, EalConfig, Error, EthDev, Mempool, RxBurst, Sent, TxBurst};

fn frame(i: u8, len: usize) -> Vec<u8> {
    (0..len).map(|k| (k as u8).wrapping_mul(7) ^ i).collect()
}

/// Removes the EAL's runtime directory for the prefix, also when the test fails.
struct RuntimeDir(String);

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.0));
    }
}

#[test]
fn ring_loopback_null_rx_clones_and_pool_accounting() {
    let prefix = format!("fs-dpdk-test-{}", std::process::id());
    let _dir = RuntimeDir(prefix.clone());
    let cfg = EalConfig {
        file_prefix: prefix.clone(),
        memory_mb: 128,
        no_huge: true,
        in_memory: true,
        vdevs: vec!["net_ring0".into(), "net_null0".into()],
        extra: vec!["--log-level=lib.eal:warning".into(), "--no-telemetry".into()],
        ..EalConfig::default()
    };
    let eal = Eal::init(&cfg).expect("EAL init with --no-huge --in-memory");
    assert!(matches!(Eal::init(&cfg), Err(Error::AlreadyInitialised)));
    let lcore = eal.register_thread().expect("register the test thread");
    assert!(lcore.id() > 0, "registered threads get an lcore id of their own");

    let pool = Mempool::new(&eal, "test_pool", 1023, 32, 2048).unwrap();
    assert_eq!((pool.capacity(), pool.available(), pool.data_room()), (1023, 1023, 2048));
    let dev_cfg = DeviceConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_descriptors: 128,
        tx_descriptors: 128,
        mtu: None,
        promiscuous: true,
    };
    let ring = EthDev::open(&eal, &pool, DeviceSpec::parse("net_ring0").unwrap().name(), &dev_cfg).unwrap();
    assert_eq!(ring.info().driver, "net_ring");
    assert!(ring.link_up().is_some());
    let mut rxq = ring.rx_queue(0).unwrap();
    let mut txq = ring.tx_queue(0).unwrap();
    assert!(ring.rx_queue(0).is_err(), "a queue is handed out once");
    assert!(ring.tx_queue(1).is_err(), "there is no tx queue 1");

    // Transmit three frames (one shortened after filling), receive them back
    // from the ring: same bytes, same lengths.
    let mut tx = TxBurst::default();
    let mut want = Vec::new();
    for i in 0..3u8 {
        let mut seg = pool.alloc().expect("an mbuf");
        assert!(seg.room() >= 2048);
        let f = frame(i, 60 + i as usize * 100);
        assert_eq!(seg.fill(&f), Some(f.len()));
        let len = if i == 2 { 64 } else { f.len() };
        want.push(f[..len].to_vec());
        assert!(tx.push(seg.into_mbuf(), len as u32).is_ok());
    }
    assert_eq!(pool.in_use(), 3);
    let bytes = want.iter().map(|f| f.len() as u64).sum();
    assert_eq!(txq.tx_burst(&mut tx), Sent { packets: 3, bytes });
    assert!(tx.is_empty());
    let mut rx = RxBurst::default();
    assert_eq!(rxq.rx_burst(&mut rx, 32), 3);
    let got: Vec<_> = rx.drain().collect();
    assert_eq!(got.iter().map(|s| s.bytes().to_vec()).collect::<Vec<_>>(), want);

    // A refcount clone shares the bytes: nothing is allocated, the buffer is
    // read-only while shared, and it returns to the pool after the last drop.
    let seg = got.into_iter().next().unwrap();
    let in_use = pool.in_use();
    let clone = seg.mbuf().clone();
    assert_eq!((seg.mbuf().refcnt(), clone.refcnt(), pool.in_use()), (2, 2, in_use));
    let mut seg = seg;
    assert_eq!(seg.fill(b"no"), None, "a shared buffer is not written");
    // A partial copy (a slice of the packet) goes into an mbuf of its own.
    let mut part = pool.alloc().unwrap();
    assert_eq!(part.fill(&seg.bytes()[..20]), Some(20));
    assert_eq!(part.bytes(), &want[0][..20]);
    assert_eq!((part.mbuf().refcnt(), pool.in_use()), (1, in_use + 1));
    drop(part);
    drop(clone);
    assert_eq!(seg.mbuf().refcnt(), 1);
    assert_eq!(seg.fill(b"ok"), Some(2));
    drop(seg);
    assert_eq!(pool.in_use(), 0, "every received mbuf went back: {}", pool.in_use());

    // A length past the end of the buffer is cut to the mbuf's room on
    // transmit: the device never reads beyond the buffer.
    let mut seg = pool.alloc().unwrap();
    let room = seg.room() as usize;
    assert_eq!(seg.fill(&frame(9, 60)), Some(60));
    assert!(tx.push(seg.into_mbuf(), u32::MAX).is_ok());
    assert_eq!(txq.tx_burst(&mut tx), Sent { packets: 1, bytes: room as u64 }, "the bytes that went out are counted");
    assert_eq!(rxq.rx_burst(&mut rx, 32), 1);
    let long = rx.drain().next().unwrap();
    assert_eq!((long.len() as usize, &long.bytes()[..60]), (room, &frame(9, 60)[..]));
    drop(long);
    assert_eq!(pool.in_use(), 0);

    // A full tx burst gives the mbuf back; dropping a burst frees what it holds.
    let mut full = TxBurst::default();
    while !full.is_full() {
        assert!(full.push(pool.alloc().unwrap().into_mbuf(), 60).is_ok());
    }
    assert!(full.push(pool.alloc().unwrap().into_mbuf(), 60).is_err());
    drop(full);
    assert_eq!(pool.in_use(), 0);

    // An iterator that panics part-way through a fill leaves what it gave in
    // the burst, and dropping the burst frees it.
    let mut part = TxBurst::default();
    let filled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut items = (0..3).map(|i| {
            assert!(i < 2, "the third item fails");
            (pool.alloc().unwrap().into_mbuf(), 60)
        });
        part.fill(&mut items)
    }));
    assert!(filled.is_err());
    assert_eq!((part.len(), pool.in_use()), (2, 2));
    drop(part);
    assert_eq!(pool.in_use(), 0);

    // net_null receives as fast as it is polled, from our pool.
    let null = EthDev::open(&eal, &pool, "net_null0", &dev_cfg).unwrap();
    let mut nq = null.rx_queue(0).unwrap();
    let mut rx = RxBurst::default();
    assert_eq!(nq.rx_burst(&mut rx, 16), 16);
    assert_eq!(rx.len(), 16);
    assert!(pool.in_use() >= 16);
    let stats = null.stats().unwrap();
    assert_eq!(stats.ipackets, 16);
    drop(rx);

    // Devices stopped and closed: every mbuf (also those parked in device rings) is back.
    drop((rxq, txq, nq));
    drop((ring, null));
    assert_eq!(pool.available(), pool.capacity(), "pool not full after shutdown: {} in use", pool.in_use());
    drop(lcore);
    drop(pool);
    drop(eal);
}
