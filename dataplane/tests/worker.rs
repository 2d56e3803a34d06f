//! The worker end to end over in-memory ports: bytes on the wire, counters,
//! chains, drops by reason, rule publication, buffer conservation.
//!
//! Every test drives the worker with `poll` / `finish` only, and checks the
//! invariant the design promises: every received packet is either
//! transmitted or counted under a drop reason (`rx == tx + dropped`).

// One module so that `cargo test -p dataplane worker` selects every test here.
mod worker {
    use dataplane::bypass::Bypass;
    use dataplane::classifier::{naive, Action, ChainId, IpNet, Match, PortRange, Rule, RuleId, RuleSet};
    use dataplane::flow::{proto, FlowKey, MacAddr};
    use dataplane::forward::{Forwarding, Links};
    use dataplane::packet::{Meta, Packet, Pool, PortId};
    use dataplane::parser::{parse, Malformed};
    use dataplane::port::mem::{ring, MemPeer, MemPort};
    use dataplane::port::Port;
    use dataplane::publish::RuleTable;
    use dataplane::stats::{DropReason, WorkerStats};
    use dataplane::wire::build::PacketBuilder;
    use dataplane::worker::{ChainVerdict, Chains, MalformedPolicy, Worker, WorkerConfig, WorkerError};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    const MAC_A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    /// One call of [`Chains::run`], as the test chain saw it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Seen {
        chain: ChainId,
        rule: RuleId,
        port: PortId,
        bytes: Vec<u8>,
    }

    /// Records every packet it is shown; drops the originals of the chains in `drop`.
    #[derive(Default)]
    struct Recorder {
        seen: Vec<Seen>,
        drop: Vec<ChainId>,
        bursts: usize,
    }

    impl Chains for Recorder {
        fn run(&mut self, chain: ChainId, rule: RuleId, pkt: &Packet, _key: &FlowKey, _now_ns: u64) -> ChainVerdict {
            self.seen.push(Seen { chain, rule, port: pkt.meta.port, bytes: pkt.data().to_vec() });
            if self.drop.contains(&chain) {
                ChainVerdict::Drop
            } else {
                ChainVerdict::Forward
            }
        }

        fn end_burst(&mut self) {
            self.bursts += 1;
        }
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    fn udp(src: u8, dst: u8, sport: u16, dport: u16, len: usize) -> Vec<u8> {
        PacketBuilder::ethernet(MAC_A, MAC_B).ipv4(ip(src), ip(dst)).udp(sport, dport).pad_to(len).build()
    }

    fn tcp(src: u8, dst: u8, sport: u16, dport: u16) -> Vec<u8> {
        PacketBuilder::ethernet(MAC_A, MAC_B).ipv4(ip(src), ip(dst)).tcp(sport, dport).pad_to(60).build()
    }

    fn net(last: u8) -> Option<IpNet> {
        Some(IpNet::new(ip(last).into(), 32).unwrap())
    }

    fn rule(name: &str, priority: u32, matches: Match, symmetric: bool, action: Action) -> Rule {
        Rule { name: name.into(), priority, matches, symmetric, action }
    }

    fn set(rules: Vec<Rule>) -> Arc<RuleSet> {
        Arc::new(RuleSet::new(rules).expect("valid rule set"))
    }

    /// A worker over ports `a` (id 0) and `b` (id 1), linked, with rings of `cap`.
    struct Rig {
        worker: Worker<Recorder>,
        a: MemPeer,
        b: MemPeer,
        table: Arc<RuleTable>,
    }

    impl Rig {
        fn new(rules: Arc<RuleSet>, cfg: WorkerConfig, cap: usize) -> Rig {
            Rig::with_chains(rules, cfg, cap, Recorder::default())
        }

        fn with_chains(rules: Arc<RuleSet>, cfg: WorkerConfig, cap: usize, chains: Recorder) -> Rig {
            let (pa, a) = MemPort::new("a", 0, cap);
            let (pb, b) = MemPort::new("b", 1, cap);
            Rig::with_ports(rules, cfg, pa, pb, a, b, chains)
        }

        fn with_ports(
            rules: Arc<RuleSet>,
            cfg: WorkerConfig,
            pa: MemPort,
            pb: MemPort,
            a: MemPeer,
            b: MemPeer,
            chains: Recorder,
        ) -> Rig {
            let fwd = Forwarding::from(Links::new(2, &[(0, 1)]).unwrap());
            let table = RuleTable::new(rules);
            let stats = Arc::new(WorkerStats::new(2, 16));
            let ports: Vec<Box<dyn Port>> = vec![Box::new(pa), Box::new(pb)];
            let worker =
                Worker::new(cfg, ports, &fwd, Arc::clone(&table), chains, stats).unwrap_or_else(|e| panic!("{e}"));
            Rig { worker, a, b, table }
        }

        fn stats(&self) -> &WorkerStats {
            self.worker.stats()
        }

        fn drop_count(&self, r: DropReason) -> u64 {
            self.stats().drops[r as usize].get()
        }

        /// Polls until the input rings are empty (bounded), then finishes.
        fn run(&mut self) {
            for _ in 0..10_000 {
                if self.worker.poll() == 0 && self.a.to_port.is_empty() && self.b.to_port.is_empty() {
                    break;
                }
            }
            self.worker.finish();
        }

        fn conserved(&self) {
            let s = self.stats();
            assert_eq!(s.rx.get(), s.tx.get() + s.dropped(), "rx == tx + drops: {s:?}");
            let classified = s.matched.get() + s.unmatched.get() + s.bypassed.get();
            assert_eq!(s.rx.get(), classified + s.drops[DropReason::Malformed as usize].get());
        }
    }

    fn send(peer: &MemPeer, frames: &[Vec<u8>]) {
        for f in frames {
            peer.send(Packet::from_slice(f, Meta::default())).expect("input ring has room");
        }
    }

    fn recv_all(peer: &MemPeer) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| peer.recv()).map(|p| p.data().to_vec()).collect()
    }

    /// 70 frames per direction (more than two bursts), of varied flows and lengths.
    fn traffic(src: u8, dst: u8) -> Vec<Vec<u8>> {
        (0..70u16)
            .map(|i| match i % 3 {
                0 => udp(src, dst, 1000 + i, 53, 60 + usize::from(i)),
                1 => tcp(src, dst, 40000 + i, 80),
                _ => udp(src, dst, 2000, 5000 + i, 1514),
            })
            .collect()
    }

    fn forwards_untouched(rules: Arc<RuleSet>) -> Rig {
        let mut rig = Rig::new(rules, WorkerConfig::default(), 256);
        let (ab, ba) = (traffic(1, 2), traffic(2, 1));
        send(&rig.a, &ab);
        send(&rig.b, &ba);
        rig.run();
        assert_eq!(recv_all(&rig.b), ab, "a -> b: same bytes, same order");
        assert_eq!(recv_all(&rig.a), ba, "b -> a: same bytes, same order");
        let s = rig.stats();
        assert_eq!((s.rx.get(), s.tx.get(), s.dropped()), (140, 140, 0));
        rig.conserved();
        rig
    }

    #[test]
    fn fast_path_forwards_every_packet_byte_identical_and_in_order() {
        let rig = forwards_untouched(Arc::new(RuleSet::empty()));
        assert_eq!(rig.stats().unmatched.get(), 140);
        assert!(rig.worker.chains().seen.is_empty());
        // Ports' own counters are mirrored at finish.
        let p = rig.stats().ports[0].snapshot();
        assert_eq!((p.rx_packets, p.tx_packets), (70, 70));
    }

    #[test]
    fn rules_do_not_change_what_is_forwarded() {
        let rules = set(vec![rule(
            "web",
            10,
            Match { proto: Some(proto::TCP), dst_port: Some(PortRange::single(80)), ..Match::default() },
            false,
            Action::Chain(3),
        )]);
        let rig = forwards_untouched(rules);
        let s = rig.stats();
        // A third of each direction is TCP to port 80.
        assert_eq!((s.matched.get(), s.unmatched.get()), (46, 94));
        assert_eq!(rig.worker.chains().seen.len(), 46);
        assert!(rig.worker.chains().seen.iter().all(|c| c.chain == 3 && c.rule == 0));
    }

    #[test]
    fn matched_packets_reach_their_chain_with_rule_and_chain_ids() {
        let rules = set(vec![
            // One direction only: web clients on 10.0.0.1 to port 80.
            rule(
                "web",
                10,
                Match {
                    src_ip: net(1),
                    proto: Some(proto::TCP),
                    dst_port: Some(PortRange::single(80)),
                    ..Match::default()
                },
                false,
                Action::Chain(2),
            ),
            // Both directions of 10.0.0.1 -> 10.0.0.3:5432.
            rule(
                "db",
                20,
                Match {
                    src_ip: net(1),
                    dst_ip: net(3),
                    proto: Some(proto::UDP),
                    dst_port: Some(PortRange::single(5432)),
                    ..Match::default()
                },
                true,
                Action::Chain(5),
            ),
        ]);
        let mut rig = Rig::new(rules, WorkerConfig::default(), 64);
        let web = tcp(1, 2, 40000, 80);
        let web_reply = tcp(2, 1, 80, 40000);
        let db = udp(1, 3, 33000, 5432, 60);
        let db_reply = udp(3, 1, 5432, 33000, 60);
        let other = udp(1, 3, 33000, 5433, 60);
        send(&rig.a, &[web.clone(), db.clone(), other.clone()]);
        send(&rig.b, &[web_reply.clone(), db_reply.clone()]);
        rig.run();
        let seen = &rig.worker.chains().seen;
        let expect = [
            Seen { chain: 2, rule: 0, port: 0, bytes: web.clone() },
            Seen { chain: 5, rule: 1, port: 0, bytes: db.clone() },
            Seen { chain: 5, rule: 1, port: 1, bytes: db_reply.clone() },
        ];
        assert_eq!(seen, &expect);
        let s = rig.stats();
        assert_eq!((s.matched.get(), s.unmatched.get()), (3, 2));
        assert_eq!((s.rules[0].packets.get(), s.rules[1].packets.get()), (1, 2));
        assert_eq!(s.rules[1].bytes.get(), 120);
        assert_eq!(recv_all(&rig.b), [web, db, other]);
        assert_eq!(recv_all(&rig.a), [web_reply, db_reply]);
        rig.conserved();
    }

    #[test]
    fn rule_drop_and_fail_closed_chain_drop_are_counted_by_reason() {
        let rules = set(vec![
            rule(
                "deny",
                30,
                Match { dst_port: Some(PortRange::single(23)), proto: Some(proto::TCP), ..Match::default() },
                false,
                Action::Drop,
            ),
            rule("closed", 20, Match { proto: Some(proto::UDP), ..Match::default() }, false, Action::Chain(7)),
            rule("open", 10, Match { proto: Some(proto::TCP), ..Match::default() }, false, Action::Chain(1)),
        ]);
        // Chain 7 is fail-closed and cannot monitor: it refuses its originals.
        let chains = Recorder { drop: vec![7], ..Recorder::default() };
        let mut rig = Rig::with_chains(rules, WorkerConfig::default(), 64, chains);
        let telnet = tcp(1, 2, 40000, 23);
        let dns = udp(1, 2, 40000, 53, 60);
        let ssh = tcp(1, 2, 40000, 22);
        send(&rig.a, &[telnet.clone(), dns.clone(), ssh.clone(), telnet, dns]);
        rig.run();
        assert_eq!(recv_all(&rig.b), [ssh], "only the fail-open chain's packet is forwarded");
        assert_eq!(rig.drop_count(DropReason::RuleDrop), 2);
        assert_eq!(rig.drop_count(DropReason::ChainClosed), 2);
        assert_eq!(rig.stats().tx.get(), 1);
        // Rule-dropped packets never reach a chain; chain-dropped ones did.
        let chains: Vec<_> = rig.worker.chains().seen.iter().map(|s| s.chain).collect();
        assert_eq!(chains, [7, 1, 7]);
        assert_eq!(rig.stats().rules[0].packets.get(), 2);
        rig.conserved();
    }

    #[test]
    fn bypass_forwards_everything_unclassified_from_the_next_poll_until_turned_off() {
        let rules = set(vec![
            rule("deny", 30, Match { proto: Some(proto::TCP), ..Match::default() }, false, Action::Drop),
            rule("closed", 20, Match { proto: Some(proto::UDP), ..Match::default() }, false, Action::Chain(7)),
        ]);
        let chains = Recorder { drop: vec![7], ..Recorder::default() };
        let mut rig = Rig::with_chains(rules, WorkerConfig::default(), 256, chains);
        let bypass = Arc::new(Bypass::new());
        rig.worker = rig.worker.with_bypass(Arc::clone(&bypass));
        let (tcp_in, udp_in) = (tcp(1, 2, 40000, 23), udp(1, 2, 40000, 53, 60));

        bypass.set(true);
        let during: Vec<_> = (0..40).map(|i| if i % 2 == 0 { tcp_in.clone() } else { udp_in.clone() }).collect();
        send(&rig.a, &during);
        rig.run();
        assert_eq!(recv_all(&rig.b), during, "every packet forwarded, in order, untouched");
        assert!(rig.worker.chains().seen.is_empty(), "no chain runs while bypassed");
        let s = rig.stats();
        assert_eq!((s.bypassed.get(), s.matched.get(), s.dropped()), (40, 0, 0));
        assert_eq!(s.rules[0].packets.get(), 0);

        bypass.set(false);
        send(&rig.a, &[tcp_in, udp_in]);
        rig.run();
        assert!(recv_all(&rig.b).is_empty(), "rules apply again: one rule drop, one fail-closed drop");
        assert_eq!((rig.drop_count(DropReason::RuleDrop), rig.drop_count(DropReason::ChainClosed)), (1, 1));
        assert_eq!(rig.stats().bypassed.get(), 40);
        rig.conserved();
    }

    /// Frames cut short at each layer, with the reason the parser gives.
    fn malformed_frames() -> Vec<(Vec<u8>, Malformed)> {
        let full = tcp(1, 2, 40000, 80);
        vec![
            (full[..10].to_vec(), Malformed::TruncatedEthernet),
            (full[..14 + 12].to_vec(), Malformed::TruncatedIpv4),
            // An IPv4 header whose total length promises more than the frame holds.
            (full[..14 + 20 + 10].to_vec(), Malformed::BadIpv4TotalLength),
            // A consistent IPv4 datagram whose TCP header is only 4 bytes.
            (
                PacketBuilder::ethernet(MAC_A, MAC_B).ipv4(ip(1), ip(2)).ip_proto(proto::TCP).payload(&[0; 4]).build(),
                Malformed::TruncatedL4,
            ),
        ]
    }

    #[test]
    fn malformed_frames_are_counted_by_reason_and_forwarded_by_default() {
        let frames = malformed_frames();
        for (f, reason) in &frames {
            assert_eq!(parse(f, 0).1, Some(*reason), "fixture for {reason:?}");
        }
        let mut rig = Rig::new(Arc::new(RuleSet::empty()), WorkerConfig::default(), 64);
        let bytes: Vec<_> = frames.iter().map(|(f, _)| f.clone()).collect();
        send(&rig.a, &bytes);
        rig.run();
        assert_eq!(recv_all(&rig.b), bytes);
        for (_, reason) in &frames {
            assert_eq!(rig.stats().malformed[*reason as usize].get(), 1, "{reason:?}");
        }
        assert_eq!(rig.stats().malformed_total(), 4);
        assert_eq!(rig.stats().dropped(), 0);
        rig.conserved();
    }

    #[test]
    fn malformed_frames_are_dropped_and_counted_under_policy_drop() {
        let frames = malformed_frames();
        let cfg = WorkerConfig { malformed: MalformedPolicy::Drop, ..WorkerConfig::default() };
        let mut rig = Rig::new(Arc::new(RuleSet::empty()), cfg, 64);
        let good = udp(1, 2, 1, 2, 60);
        send(&rig.a, &frames.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>());
        send(&rig.a, std::slice::from_ref(&good));
        rig.run();
        assert_eq!(recv_all(&rig.b), [good]);
        assert_eq!(rig.drop_count(DropReason::Malformed), 4);
        for (_, reason) in &frames {
            assert_eq!(rig.stats().malformed[*reason as usize].get(), 1, "{reason:?}");
        }
        rig.conserved();
    }

    #[test]
    fn full_tx_ring_drops_and_counts_tx_full() {
        // Port b's transmit ring holds 4 and nobody drains it.
        let (a_rx, a_tx, b_rx, b_tx) = (ring(128), ring(128), ring(128), ring(4));
        let a = MemPeer { to_port: Arc::clone(&a_rx), from_port: Arc::clone(&a_tx) };
        let b = MemPeer { to_port: Arc::clone(&b_rx), from_port: Arc::clone(&b_tx) };
        let pa = MemPort::with_rings("a", 0, a_rx, a_tx);
        let pb = MemPort::with_rings("b", 1, b_rx, b_tx);
        let rules = set(vec![rule(
            "all-udp",
            1,
            Match { proto: Some(proto::UDP), ..Match::default() },
            false,
            Action::Chain(0),
        )]);
        let mut rig = Rig::with_ports(rules, WorkerConfig::default(), pa, pb, a, b, Recorder::default());
        let frames: Vec<_> = (0..100u16).map(|i| udp(1, 2, i, 9, 60)).collect();
        send(&rig.a, &frames);
        rig.run();
        assert_eq!(rig.stats().tx.get(), 4);
        assert_eq!(rig.drop_count(DropReason::TxFull), 96);
        assert_eq!(rig.stats().ports[1].snapshot().tx_dropped, 96, "the port's own counter agrees");
        assert_eq!(recv_all(&rig.b), frames[..4]);
        rig.conserved();
    }

    #[test]
    fn published_rules_apply_from_the_next_poll_and_cached_verdicts_go_stale() {
        let dns_rule = rule(
            "dns",
            10,
            Match { proto: Some(proto::UDP), dst_port: Some(PortRange::single(53)), ..Match::default() },
            false,
            Action::Chain(1),
        );
        let mut rig = Rig::new(set(vec![dns_rule]), WorkerConfig::default(), 64);
        let http = udp(1, 2, 5000, 80, 60);
        let dns = udp(1, 2, 5000, 53, 60);
        send(&rig.a, &[http.clone(), dns.clone()]);
        assert_eq!(rig.worker.poll(), 2);
        assert_eq!(rig.stats().generation.get(), 1);
        assert_eq!(rig.worker.chains().seen.len(), 1, "gen 1: only dns matches; http is cached as unmatched");

        let http_rule = rule(
            "http",
            10,
            Match { proto: Some(proto::UDP), dst_port: Some(PortRange::single(80)), ..Match::default() },
            false,
            Action::Chain(2),
        );
        let generation = rig.table.publish(set(vec![http_rule]));
        assert_eq!(generation, 2);
        // The same flows again, in mid-stream.
        send(&rig.a, &[http.clone(), dns.clone()]);
        assert_eq!(rig.worker.poll(), 2);
        assert_eq!(rig.stats().generation.get(), 2);
        assert_eq!(rig.worker.generation(), 2);
        rig.run();
        let seen: Vec<_> = rig.worker.chains().seen.iter().map(|s| (s.chain, s.rule, s.bytes.clone())).collect();
        assert_eq!(seen, [(1, 0, dns.clone()), (2, 0, http.clone())], "gen 2: http matches, dns no longer does");
        assert_eq!(recv_all(&rig.b), [http.clone(), dns.clone(), http, dns], "no packet lost across the reload");
        rig.conserved();
    }

    #[test]
    fn a_port_without_a_link_counts_no_egress() {
        let (pa, a) = MemPort::new("lonely", 0, 16);
        let rules =
            set(vec![rule("udp", 1, Match { proto: Some(proto::UDP), ..Match::default() }, false, Action::Chain(4))]);
        let ports: Vec<Box<dyn Port>> = vec![Box::new(pa)];
        let mut w = Worker::new(
            WorkerConfig::default(),
            ports,
            Links::new(1, &[]).unwrap(),
            RuleTable::new(rules),
            Recorder::default(),
            Arc::new(WorkerStats::new(1, 1)),
        )
        .unwrap();
        send(&a, &[udp(1, 2, 1, 2, 60), tcp(1, 2, 1, 2)]);
        assert_eq!(w.poll(), 2);
        w.finish();
        let s = w.stats();
        assert_eq!((s.rx.get(), s.tx.get(), s.drops[DropReason::NoEgress as usize].get()), (2, 0, 2));
        assert_eq!(w.chains().seen.len(), 1, "the chain still sees the matched packet");
        assert!(a.recv().is_none());
    }

    #[test]
    fn a_link_peer_on_another_worker_is_refused() {
        let (pa, _a) = MemPort::new("vm-a", 0, 4);
        let ports: Vec<Box<dyn Port>> = vec![Box::new(pa)];
        let err = Worker::new(
            WorkerConfig::default(),
            ports,
            Links::new(2, &[(0, 1)]).unwrap(),
            RuleTable::new(Arc::new(RuleSet::empty())),
            Recorder::default(),
            Arc::new(WorkerStats::new(2, 0)),
        )
        .err()
        .expect("port 1 is not owned by this worker");
        assert_eq!(err, WorkerError::PeerElsewhere { port: "vm-a".into(), peer: 1 });
        assert!(err.to_string().contains("vm-a"), "{err}");
    }

    #[test]
    fn every_buffer_returns_to_the_pool() {
        let pool = Pool::new(256, 2048);
        // Small b tx ring so some packets die in tx_burst; rule drops; chain drops; no-egress is separate.
        let (a_rx, a_tx, b_rx, b_tx) = (ring(256), ring(256), ring(256), ring(8));
        let a = MemPeer { to_port: Arc::clone(&a_rx), from_port: Arc::clone(&a_tx) };
        let b = MemPeer { to_port: Arc::clone(&b_rx), from_port: Arc::clone(&b_tx) };
        let rules = set(vec![
            rule(
                "deny",
                20,
                Match { dst_port: Some(PortRange::single(23)), proto: Some(proto::TCP), ..Match::default() },
                false,
                Action::Drop,
            ),
            rule("copy", 10, Match { proto: Some(proto::UDP), ..Match::default() }, true, Action::Chain(0)),
        ]);
        let cfg = WorkerConfig { malformed: MalformedPolicy::Drop, ..WorkerConfig::default() };
        let mut rig = Rig::with_ports(
            rules,
            cfg,
            MemPort::with_rings("a", 0, a_rx, a_tx),
            MemPort::with_rings("b", 1, b_rx, b_tx),
            a,
            b,
            Recorder::default(),
        );
        let frames = [udp(1, 2, 1, 2, 1514), tcp(1, 2, 1, 23), tcp(1, 2, 1, 80), vec![0u8; 8]];
        for i in 0..200 {
            let mut p = pool.alloc().expect("pool has room");
            p.fill_from(&frames[i % frames.len()]);
            let peer = if i % 2 == 0 { &rig.a } else { &rig.b };
            peer.send(p).unwrap();
        }
        assert_eq!(pool.available(), 56);
        rig.run();
        rig.conserved();
        let s = rig.stats();
        assert!(s.drops[DropReason::TxFull as usize].get() > 0 && s.drops[DropReason::RuleDrop as usize].get() > 0);
        let out = recv_all(&rig.a).len() + recv_all(&rig.b).len();
        assert_eq!(out as u64, s.tx.get());
        drop(rig);
        assert_eq!(pool.available(), pool.capacity(), "no buffer leaked");
        assert_eq!(pool.empty_count(), 0);
    }

    // ---- Property: conservation and agreement with the reference classifier. ----

    fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
        (
            0u8..3,
            1u8..4,
            1u8..4,
            prop::sample::select(vec![22u16, 53, 80, 443, 5432]),
            1000u16..1003,
            any::<bool>(),
            0usize..80,
        )
            .prop_map(|(l4, s, d, dport, sport, cut, at)| {
                let f = match l4 {
                    0 => udp(s, d, sport, dport, 60),
                    1 => tcp(s, d, sport, dport),
                    _ => PacketBuilder::ethernet(MAC_A, MAC_B).ipv4(ip(s), ip(d)).icmp(8, 0).build(),
                };
                if cut {
                    f[..at.min(f.len())].to_vec()
                } else {
                    f
                }
            })
    }

    fn arb_rule() -> impl Strategy<Value = (Match, bool, Option<ChainId>)> {
        (
            prop::option::of(1u8..4),
            prop::option::of(1u8..4),
            prop::option::of(prop::sample::select(vec![proto::TCP, proto::UDP, proto::ICMP])),
            prop::option::of((0u16..600, 0u16..600).prop_map(|(a, b)| PortRange { lo: a.min(b), hi: a.max(b) })),
            prop::option::of(0u16..2),
            any::<bool>(),
            prop::option::of(0u16..3),
        )
            .prop_map(|(s, d, p, dport, in_port, symmetric, chain)| {
                let m = Match {
                    src_ip: s.and_then(net),
                    dst_ip: d.and_then(net),
                    proto: p,
                    dst_port: dport,
                    in_port,
                    ..Match::default()
                };
                (m, symmetric, chain)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn conserves_packets_and_agrees_with_the_reference_classifier(
            frames in prop::collection::vec((arb_frame(), any::<bool>()), 1..150),
            specs in prop::collection::vec(arb_rule(), 0..6),
            drop_malformed in any::<bool>(),
            cache in 1usize..8,
        ) {
            // Distinct priorities: a valid set never has an equal-priority overlap.
            let rules: Vec<Rule> = specs.into_iter().enumerate().map(|(i, (m, sym, chain))| {
                let action = chain.map_or(Action::Drop, Action::Chain);
                rule(&format!("r{i}"), i as u32 * 10, m, sym, action)
            }).collect();
            let malformed = if drop_malformed { MalformedPolicy::Drop } else { MalformedPolicy::Forward };
            let cfg = WorkerConfig { flow_cache: cache, malformed, ..WorkerConfig::default() };
            // Chain 2 is fail-closed.
            let chains = Recorder { drop: vec![2], ..Recorder::default() };
            let mut rig = Rig::with_chains(set(rules.clone()), cfg, 256, chains);

            let mut expect_out: [Vec<Vec<u8>>; 2] = Default::default();
            let mut expect_seen: [Vec<Seen>; 2] = Default::default();
            let mut expect_drops = [0u64; DropReason::COUNT];
            for (f, to_b) in &frames {
                let port: PortId = if *to_b { 0 } else { 1 };
                let peer = if *to_b { &rig.a } else { &rig.b };
                peer.send(Packet::from_slice(f, Meta::default())).unwrap();
                let (key, bad) = parse(f, port);
                if bad.is_some() && drop_malformed {
                    expect_drops[DropReason::Malformed as usize] += 1;
                    continue;
                }
                match naive::classify(&rules, &key) {
                    None => expect_out[port as usize].push(f.clone()),
                    Some(v) => match v.action {
                        Action::Drop => expect_drops[DropReason::RuleDrop as usize] += 1,
                        Action::Chain(c) => {
                            expect_seen[port as usize].push(Seen { chain: c, rule: v.rule, port, bytes: f.clone() });
                            if c == 2 {
                                expect_drops[DropReason::ChainClosed as usize] += 1;
                            } else {
                                expect_out[port as usize].push(f.clone());
                            }
                        }
                    },
                }
            }
            rig.run();
            rig.conserved();
            let s = rig.stats();
            prop_assert_eq!(s.rx.get(), frames.len() as u64);
            for r in DropReason::ALL {
                prop_assert_eq!(s.drops[r as usize].get(), expect_drops[r as usize], "{:?}", r);
            }
            prop_assert_eq!(recv_all(&rig.b), std::mem::take(&mut expect_out[0]));
            prop_assert_eq!(recv_all(&rig.a), std::mem::take(&mut expect_out[1]));
            for p in 0..2u16 {
                let seen: Vec<_> = rig.worker.chains().seen.iter().filter(|c| c.port == p).cloned().collect();
                prop_assert_eq!(&seen, &expect_seen[p as usize]);
            }
        }
    }
}
