//! Bounding monitoring's cost over in-memory ports: the monitoring budget and
//! overload shedding skip chain work, never an original; the counters say
//! how many chains were skipped and why, and fail-closed chains always run.

mod monitor {
    use dataplane::classifier::{Action, ChainId, Match, Rule, RuleId, RuleSet};
    use dataplane::flow::{FlowKey, MacAddr};
    use dataplane::forward::{Forwarding, Links};
    use dataplane::packet::{Meta, Packet};
    use dataplane::port::mem::{MemPeer, MemPort};
    use dataplane::port::Port;
    use dataplane::publish::RuleTable;
    use dataplane::stats::WorkerStats;
    use dataplane::wire::build::PacketBuilder;
    use dataplane::worker::{ChainVerdict, Chains, Worker, WorkerConfig};
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A chain that busy-waits `cost` per packet (an expensive stage), and
    /// counts what it was shown; `closed` chains say they cannot be shed.
    struct Costly {
        cost: Duration,
        closed: bool,
        runs: u64,
    }

    impl Chains for Costly {
        fn run(&mut self, _: ChainId, _: RuleId, _: &Packet, _: &FlowKey, _: u64) -> ChainVerdict {
            let t = Instant::now();
            while t.elapsed() < self.cost {
                std::hint::spin_loop();
            }
            self.runs += 1;
            ChainVerdict::Forward
        }

        fn sheddable(&self, _: ChainId) -> bool {
            !self.closed
        }
    }

    /// Every packet matches a rule steering it into chain 0.
    fn worker(cfg: WorkerConfig, chains: Costly, cap: usize) -> (Worker<Costly>, MemPeer, MemPeer) {
        let (pa, a) = MemPort::new("a", 0, cap);
        let (pb, b) = MemPort::new("b", 1, cap);
        let rule = Rule {
            name: "all".into(),
            priority: 1,
            matches: Match::default(),
            symmetric: false,
            action: Action::Chain(0),
        };
        let table = RuleTable::new(Arc::new(RuleSet::new(vec![rule]).unwrap()));
        let fwd = Forwarding::from(Links::new(2, &[(0, 1)]).unwrap());
        let ports: Vec<Box<dyn Port>> = vec![Box::new(pa), Box::new(pb)];
        let stats = Arc::new(WorkerStats::new(2, 1));
        (Worker::new(cfg, ports, &fwd, table, chains, stats).unwrap(), a, b)
    }

    /// Frame number `n` (in the UDP source port and the payload).
    fn frame(n: u32) -> Packet {
        let mut f = PacketBuilder::ethernet(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]))
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
            .udp(1000 + (n % 1000) as u16, 9)
            .pad_to(64)
            .build();
        f[60..64].copy_from_slice(&n.to_be_bytes());
        Packet::from_slice(&f, Meta::default())
    }

    fn number(p: &Packet) -> u32 {
        u32::from_be_bytes(p.data()[60..64].try_into().unwrap())
    }

    /// Every original arrived on `b`, once and in order.
    fn all_delivered(b: &MemPeer, sent: u32) {
        let got: Vec<u32> = std::iter::from_fn(|| b.recv()).map(|p| number(&p)).collect();
        assert_eq!(got, (0..sent).collect::<Vec<_>>(), "every original, in order");
    }

    #[test]
    fn busy_poll_over_the_budget_chains_are_skipped_and_counted_and_every_original_passes() {
        // Chains costing 50 us per packet, packets every ~100 us: monitoring would take
        // about half the core; the budget allows a fifth.
        let cfg = WorkerConfig { monitor_budget: Some(0.2), ..WorkerConfig::default() };
        let (mut w, a, b) = worker(cfg, Costly { cost: Duration::from_micros(50), closed: false, runs: 0 }, 4096);
        let t0 = Instant::now();
        let mut sent = 0u32;
        while t0.elapsed() < Duration::from_millis(400) {
            let due = (t0.elapsed().as_micros() / 100) as u32;
            while sent < due {
                a.send(frame(sent)).unwrap();
                sent += 1;
            }
            w.poll();
        }
        while w.poll() > 0 {}
        let wall = t0.elapsed();
        w.finish();
        all_delivered(&b, sent);
        let s = w.stats();
        let (runs, shed) = (w.chains().runs, s.shed_monitor_budget.get());
        assert_eq!(runs + shed, u64::from(sent), "every matched packet ran its chain or was counted as shed");
        assert!(shed > 0 && runs > 0, "runs {runs} shed {shed}");
        assert_eq!((s.tx.get(), s.dropped(), s.shed_overload.get()), (u64::from(sent), 0, 0));
        // The chains' own work (runs x 50 us) took at most the budget, plus the budget's depth
        // (10 ms x 0.2), over the run. (The measured `monitor_ns` can be higher on a loaded
        // machine: it is wall time, preemption included; a burst is charged at most the
        // budget's depth beyond its balance, and each admitted burst's work is below that.)
        let work = runs as f64 * 50e-6 / wall.as_secs_f64();
        assert!(work < 0.2 + 0.03, "the chains' work took {work:.3} of the worker's time");
        assert!(s.monitor_ns.get() >= runs * 50_000, "the measured chain time covers the chains' work");
    }

    #[test]
    fn fail_closed_chains_are_never_shed() {
        let cfg = WorkerConfig { monitor_budget: Some(0.01), overload_bursts: Some(1), ..WorkerConfig::default() };
        let (mut w, a, b) = worker(cfg, Costly { cost: Duration::from_micros(200), closed: true, runs: 0 }, 256);
        for n in 0..200 {
            a.send(frame(n)).unwrap();
        }
        while w.poll() > 0 {}
        w.finish();
        all_delivered(&b, 200);
        let s = w.stats();
        assert_eq!(w.chains().runs, 200, "a fail-closed chain saw every packet");
        assert_eq!((s.shed_monitor_budget.get(), s.shed_overload.get()), (0, 0));
    }

    #[test]
    fn a_backlog_sheds_chain_work_until_a_burst_comes_back_short() {
        // 1000 packets waiting: bursts 1..=3 are full and run their chains; from the 4th
        // full burst on the port counts as overloaded; the last, short burst (1000 = 31 x 32
        // + 8) runs its chains again.
        let cfg = WorkerConfig { overload_bursts: Some(4), ..WorkerConfig::default() };
        let (mut w, a, b) = worker(cfg, Costly { cost: Duration::ZERO, closed: false, runs: 0 }, 2048);
        for n in 0..1000 {
            a.send(frame(n)).unwrap();
        }
        while w.poll() > 0 {}
        w.finish();
        all_delivered(&b, 1000);
        let s = w.stats();
        assert_eq!(s.shed_overload.get(), 28 * 32, "full bursts 4..=31 shed their chain work");
        assert_eq!(w.chains().runs, 3 * 32 + 8);
        assert_eq!((s.tx.get(), s.dropped(), s.shed_monitor_budget.get()), (1000, 0, 0));
    }
}
