//! The MAC-learning bridge end to end in a worker over in-memory ports:
//! learning, flooding, hairpins, ageing, moves, a full table, an empty flood
//! pool, and links beside a bridge in the same worker.
//!
//! With bridges, conservation reads `rx + flood_copies == tx + dropped`:
//! every received packet leaves at least once or is counted as dropped, and
//! every copy a flood made is accounted for too.

// One module so that `cargo test -p dataplane bridge` selects every test here.
mod bridge {
    use dataplane::classifier::{Action, ChainId, Match, Rule, RuleId, RuleSet};
    use dataplane::flow::{proto, FlowKey, MacAddr};
    use dataplane::forward::{BridgeConfig, Forwarding, Links};
    use dataplane::packet::{Meta, Packet, PortId};
    use dataplane::port::mem::{MemPeer, MemPort};
    use dataplane::port::Port;
    use dataplane::publish::RuleTable;
    use dataplane::stats::{DropReason, WorkerStats};
    use dataplane::wire::build::PacketBuilder;
    use dataplane::worker::{ChainVerdict, Chains, Worker, WorkerConfig, WorkerError};
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::time::Duration;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    /// A UDP frame from VM `src` to VM `dst` (MACs 02:..:src, 02:..:dst), tagged with `tag`.
    fn frame(src: u8, dst: MacAddr, tag: u16) -> Vec<u8> {
        PacketBuilder::ethernet(mac(src), dst)
            .ipv4(Ipv4Addr::new(10, 0, 0, src), Ipv4Addr::new(10, 0, 0, dst.0[5]))
            .udp(1000 + tag, 53)
            .pad_to(60)
            .build()
    }

    /// An ARP request from VM `src`: broadcast.
    fn arp(src: u8) -> Vec<u8> {
        PacketBuilder::ethernet(mac(src), MacAddr::BROADCAST).ethertype(0x0806).payload(&[0; 28]).build()
    }

    /// Counts the packets each chain is shown; forwards every original.
    #[derive(Default)]
    struct Count(usize);

    impl Chains for Count {
        fn run(&mut self, _: ChainId, _: RuleId, _: &Packet, _: &FlowKey, _: u64) -> ChainVerdict {
            self.0 += 1;
            ChainVerdict::Forward
        }
    }

    /// A worker over `n` ports (ids 0..n, port i's VM has MAC 02:..:i+1).
    struct Rig {
        worker: Worker<Count>,
        peers: Vec<MemPeer>,
    }

    impl Rig {
        fn new(n: u16, fwd: Forwarding, rules: RuleSet) -> Rig {
            Rig::with_ring(n, fwd, rules, 256)
        }

        fn with_ring(n: u16, fwd: Forwarding, rules: RuleSet, cap: usize) -> Rig {
            let (ports, peers): (Vec<Box<dyn Port>>, Vec<MemPeer>) = (0..n)
                .map(|i| {
                    let (p, peer) = MemPort::new(&format!("vm{i}"), i, cap);
                    (Box::new(p) as Box<dyn Port>, peer)
                })
                .unzip();
            let stats = Arc::new(WorkerStats::new(n as usize, 4));
            let table = RuleTable::new(Arc::new(rules));
            let worker = Worker::new(WorkerConfig::default(), ports, &fwd, table, Count::default(), stats)
                .unwrap_or_else(|e| panic!("{e}"));
            Rig { worker, peers }
        }

        /// Three VM ports on one bridge.
        fn three(cfg: impl FnOnce(BridgeConfig) -> BridgeConfig) -> Rig {
            let fwd = Forwarding::new(Links::new(3, &[]).unwrap(), vec![cfg(BridgeConfig::new(vec![0, 1, 2]))]);
            Rig::new(3, fwd.unwrap(), RuleSet::empty())
        }

        fn stats(&self) -> &WorkerStats {
            self.worker.stats()
        }

        /// Sends `f` into port `port`, polls once, and returns what each port transmitted.
        fn step(&mut self, port: PortId, f: &[u8]) -> Vec<Vec<Vec<u8>>> {
            self.send(port, f);
            self.worker.poll();
            self.worker.finish();
            self.received()
        }

        fn send(&self, port: PortId, f: &[u8]) {
            self.peers[port as usize].send(Packet::from_slice(f, Meta::default())).expect("input ring has room");
        }

        fn received(&self) -> Vec<Vec<Vec<u8>>> {
            self.peers.iter().map(|p| std::iter::from_fn(|| p.recv()).map(|p| p.data().to_vec()).collect()).collect()
        }

        fn drops(&self, r: DropReason) -> u64 {
            self.stats().drops[r as usize].get()
        }

        fn conserved(&self) {
            let s = self.stats();
            assert_eq!(
                s.rx.get() + s.bridge.flood_copies.get(),
                s.tx.get() + s.dropped(),
                "rx + flood copies == tx + drops: {s:?}"
            );
        }
    }

    /// Which ports got exactly `f` (once), and that no port got anything else.
    fn got(out: &[Vec<Vec<u8>>], f: &[u8]) -> Vec<usize> {
        for o in out {
            assert!(o.iter().all(|x| x == f), "only the sent frame leaves");
            assert!(o.len() <= 1, "at most once per port");
        }
        out.iter().enumerate().filter(|(_, o)| !o.is_empty()).map(|(i, _)| i).collect()
    }

    #[test]
    fn unknown_unicast_floods_then_learned_macs_go_to_one_port() {
        let mut rig = Rig::three(|c| c);
        let ab = frame(1, mac(2), 0);
        assert_eq!(got(&rig.step(0, &ab), &ab), [1, 2], "B unknown: flooded to B and C, not back to A");
        let ba = frame(2, mac(1), 1);
        assert_eq!(got(&rig.step(1, &ba), &ba), [0], "A was learned from its first frame");
        assert_eq!(got(&rig.step(0, &ab), &ab), [1], "B was learned from its reply");
        let b = &rig.stats().bridge;
        assert_eq!((b.learned.get(), b.flooded.get(), b.flood_copies.get()), (2, 1, 1));
        assert_eq!(rig.stats().tx.get(), 4);
        rig.conserved();
    }

    #[test]
    fn broadcast_and_multicast_flood_to_every_other_port() {
        let mut rig = Rig::three(|c| c);
        // Learn everyone first: group destinations flood regardless.
        for p in 0..3u8 {
            rig.step(p.into(), &arp(p + 1));
        }
        let a = arp(2);
        assert_eq!(got(&rig.step(1, &a), &a), [0, 2]);
        let m = frame(3, MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]), 0);
        assert_eq!(got(&rig.step(2, &m), &m), [0, 1]);
        assert_eq!(rig.stats().bridge.flooded.get(), 5);
        assert_eq!(rig.stats().bridge.learned.get(), 3, "group destinations teach nothing beyond their source");
        rig.conserved();
    }

    #[test]
    fn a_frame_for_a_mac_behind_its_own_ingress_port_is_dropped_as_hairpin() {
        let mut rig = Rig::three(|c| c);
        rig.step(0, &arp(1));
        // Another host behind port 0 (say a nested VM) talks to A: A is on port 0 already.
        let f = frame(9, mac(1), 0);
        assert!(got(&rig.step(0, &f), &f).is_empty(), "never back out of the ingress port");
        assert_eq!(rig.drops(DropReason::Hairpin), 1);
        rig.conserved();
    }

    #[test]
    fn aged_entries_are_forgotten_and_traffic_floods_again() {
        let mut rig = Rig::three(|c| BridgeConfig { ageing: Duration::from_millis(20), ..c });
        let (ab, ba) = (frame(1, mac(2), 0), frame(2, mac(1), 0));
        rig.step(0, &ab);
        rig.step(1, &ba);
        assert_eq!(got(&rig.step(0, &ab), &ab), [1]);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(got(&rig.step(0, &ab), &ab), [1, 2], "B aged out: flood");
        assert!(rig.stats().bridge.aged.get() >= 1);
        assert_eq!(got(&rig.step(1, &ba), &ba), [0], "A was re-learned by that very frame");
        rig.conserved();
    }

    #[test]
    fn a_mac_moving_to_another_port_is_followed() {
        let mut rig = Rig::three(|c| c);
        rig.step(0, &arp(1));
        let ba = frame(2, mac(1), 0);
        assert_eq!(got(&rig.step(1, &ba), &ba), [0]);
        // VM A migrates behind port 2 and announces itself.
        rig.step(2, &arp(1));
        assert_eq!(rig.stats().bridge.moved.get(), 1);
        assert_eq!(got(&rig.step(1, &ba), &ba), [2]);
        rig.conserved();
    }

    #[test]
    fn a_full_table_evicts_the_oldest_mac_and_traffic_to_it_floods() {
        let mut rig = Rig::three(|c| BridgeConfig { table_size: 2, ..c });
        rig.step(0, &arp(1));
        rig.step(1, &arp(2));
        rig.step(2, &arp(3));
        let b = &rig.stats().bridge;
        assert_eq!((b.learned.get(), b.table_full.get()), (3, 1));
        // MAC 1 (the oldest) was evicted; MAC 3 is known.
        let to3 = frame(2, mac(3), 0);
        assert_eq!(got(&rig.step(1, &to3), &to3), [2]);
        let to1 = frame(3, mac(1), 0);
        assert_eq!(got(&rig.step(2, &to1), &to1), [0, 1], "evicted: flood, still delivered");
        rig.conserved();
    }

    #[test]
    fn an_empty_flood_pool_skips_copies_and_still_sends_the_original() {
        // Four ports: each flood needs two copies. Two buffers, held in the
        // peers' rings until they read, so the third copy finds the pool empty.
        let fwd = Forwarding::new(Links::new(4, &[]).unwrap(), vec![BridgeConfig::new(vec![0, 1, 2, 3])])
            .and_then(|f| f.with_flood_pool(2, 2048))
            .unwrap();
        let mut rig = Rig::new(4, fwd, RuleSet::empty());
        for _ in 0..10 {
            rig.send(0, &arp(1));
        }
        // Larger than a flood buffer: only the original goes, to one port.
        let jumbo = PacketBuilder::ethernet(mac(1), MacAddr::BROADCAST).ethertype(0x88b5).pad_to(3000).build();
        rig.send(0, &jumbo);
        rig.worker.poll();
        rig.worker.finish();
        let b = &rig.stats().bridge;
        assert_eq!((b.flooded.get(), b.flood_copies.get(), b.flood_no_buffer.get()), (11, 2, 18));
        assert_eq!(b.flood_too_big.get(), 2);
        let out = rig.received();
        assert!(out[0].is_empty());
        assert_eq!(out[3].len(), 11, "every original leaves by the last port");
        assert_eq!(out[1].len() + out[2].len(), 2);
        assert_eq!(rig.drops(DropReason::TxFull), 0);
        rig.conserved();
        // Copies were freed when read: the pool serves the next flood.
        rig.send(0, &arp(1));
        rig.worker.poll();
        rig.worker.finish();
        assert_eq!(rig.received().iter().map(Vec::len).collect::<Vec<_>>(), [0, 1, 1, 1]);
        rig.conserved();
    }

    #[test]
    fn links_and_a_bridge_work_side_by_side_in_one_worker() {
        // Ports 0-1 are a link; 2, 3, 4 a bridge.
        let fwd = Forwarding::new(Links::new(5, &[(0, 1)]).unwrap(), vec![BridgeConfig::new(vec![2, 3, 4])]).unwrap();
        let mut rig = Rig::new(5, fwd, RuleSet::empty());
        // The link ignores MACs entirely, even the bridge's learned ones.
        let l = frame(3, mac(4), 0);
        rig.step(2, &arp(3));
        assert_eq!(got(&rig.step(0, &l), &l), [1]);
        assert_eq!(got(&rig.step(1, &l), &l), [0]);
        let b = frame(4, mac(3), 0);
        assert_eq!(got(&rig.step(3, &b), &b), [2]);
        let bc = arp(5);
        assert_eq!(got(&rig.step(4, &bc), &bc), [2, 3], "a flood stays inside the bridge");
        assert_eq!(rig.stats().bridge.learned.get(), 3);
        rig.conserved();
    }

    #[test]
    fn chains_see_each_bridged_original_once_and_copies_are_not_rerun() {
        let copy_udp = Rule {
            name: "udp".into(),
            priority: 1,
            matches: Match { proto: Some(proto::UDP), ..Match::default() },
            symmetric: false,
            action: Action::Chain(0),
        };
        let fwd = Forwarding::new(Links::new(3, &[]).unwrap(), vec![BridgeConfig::new(vec![0, 1, 2])]).unwrap();
        let mut rig = Rig::new(3, fwd, RuleSet::new(vec![copy_udp]).unwrap());
        let ab = frame(1, mac(2), 0);
        assert_eq!(got(&rig.step(0, &ab), &ab), [1, 2]);
        rig.step(0, &arp(1));
        assert_eq!(rig.worker.chains().0, 1, "the ARP is not UDP; the flooded UDP frame ran its chain once");
        assert_eq!((rig.stats().matched.get(), rig.stats().unmatched.get()), (1, 1));
        rig.conserved();
    }

    #[test]
    fn runts_on_a_bridge_port_are_dropped_and_counted() {
        let mut rig = Rig::three(|c| c);
        assert!(got(&rig.step(0, &[0xff; 10]), &[0xff; 10]).is_empty());
        assert_eq!(rig.drops(DropReason::Runt), 1);
        rig.conserved();
    }

    #[test]
    fn mixed_traffic_is_conserved_with_every_frame_leaving_at_least_once() {
        let mut rig = Rig::three(|c| BridgeConfig { table_size: 4, ..c });
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut sent = 0u64;
        for round in 0..40 {
            for _ in 0..(next() % 40) {
                let r = next();
                let port = (r % 3) as PortId;
                // Sources 1..=6 (more than the table holds), some broadcasts, some hairpins.
                let src = 1 + (r >> 8) as u8 % 6;
                let f = match (r >> 16) % 5 {
                    0 => arp(src),
                    _ => frame(src, mac(1 + (r >> 24) as u8 % 6), round),
                };
                rig.send(port, &f);
                sent += 1;
            }
            rig.worker.poll();
            rig.received();
        }
        rig.worker.finish();
        let s = rig.stats();
        assert_eq!(s.rx.get(), sent);
        assert_eq!(s.dropped(), s.drops[DropReason::Hairpin as usize].get(), "no other drop reason here");
        assert!(s.bridge.table_full.get() > 0 && s.bridge.moved.get() > 0);
        rig.conserved();
    }

    #[test]
    fn a_bridge_split_across_workers_is_refused() {
        let fwd = Forwarding::new(Links::new(3, &[]).unwrap(), vec![BridgeConfig::new(vec![0, 1, 2])]).unwrap();
        let ports: Vec<Box<dyn Port>> = (0..2).map(|i| Box::new(MemPort::new("vm", i, 4).0) as Box<dyn Port>).collect();
        let err = Worker::new(
            WorkerConfig::default(),
            ports,
            &fwd,
            RuleTable::new(Arc::new(RuleSet::empty())),
            Count::default(),
            Arc::new(WorkerStats::new(3, 0)),
        )
        .err()
        .expect("port 2 is not owned by this worker");
        assert_eq!(err, WorkerError::BridgeSplit { port: "vm".into(), bridge: 0, missing: 2 });
    }
}
