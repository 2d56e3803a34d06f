//! Rule updates under load: whole rule sets replaced, through the control
//! module's one entry point ([`RuleBook::apply`]) and through reloads of the
//! YAML file, while two busy-polling workers forward traffic over `mem`
//! ports as fast as a generator can feed them.
//!
//! What is checked, per packet: it leaves by the link peer exactly once and
//! in order (a sequence number in every packet: nothing lost, nothing
//! duplicated), and the rule that classified it belongs to the old or the
//! new set and is the one that set has for the packet's flow. Per update:
//! the latency from the request until every worker runs the new generation
//! (printed; recorded in docs/PERFORMANCE.md). A rule that keeps its name in
//! every set keeps its counters.

use chains::sink::Names;
use control::reload::Reloader;
use control::rules::{RuleBook, RuleOp};
use dataplane::classifier::{Action, ChainId, Match, PortRange, Rule, RuleId, RuleSet};
use dataplane::flow::{proto, FlowKey, MacAddr};
use dataplane::forward::Links;
use dataplane::packet::{Packet, Pool, PortId};
use dataplane::port::mem::{MemPeer, MemPort};
use dataplane::port::Port;
use dataplane::publish::RuleTable;
use dataplane::stats::WorkerStats;
use dataplane::wire::build::PacketBuilder;
use dataplane::worker::{ChainVerdict, Chains, Worker, WorkerConfig};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rules per set.
const RULES: u16 = 10_000;
/// UDP destination port of the flow the rule that is in every set matches.
const KEEPER_PORT: u16 = 20_000;
/// Packets in flight per worker: less than a ring holds, so the generator,
/// not a full ring, sets the pace and the dataplane never has to drop.
const WINDOW: u64 = 2_048;
const RING: usize = 4_096;
/// Offset of the sequence number in the frames (the UDP payload).
const SEQ_AT: usize = 14 + 20 + 8;

/// The set `letter` (`a` or `b`): rule `{letter}{p}` matches UDP to port
/// `p` for every `p < RULES`, with chain 0 for `a` and 1 for `b`; and rule
/// `keeper` (the same in both) matches port [`KEEPER_PORT`].
fn set(letter: char) -> Vec<Rule> {
    let chain = if letter == 'a' { 0 } else { 1 };
    let mut v: Vec<Rule> = (0..RULES)
        .map(|p| Rule {
            name: format!("{letter}{p}"),
            priority: u32::from(p) + 10,
            matches: Match { proto: Some(proto::UDP), dst_port: Some(PortRange::single(p)), ..Match::default() },
            symmetric: false,
            action: Action::Chain(chain),
        })
        .collect();
    v.push(Rule {
        name: "keeper".into(),
        priority: 1,
        matches: Match { proto: Some(proto::UDP), dst_port: Some(PortRange::single(KEEPER_PORT)), ..Match::default() },
        symmetric: false,
        action: Action::Chain(chain),
    });
    v
}

/// Checks each packet's classification: the rule (by its slot's name) must
/// be the one the chain's set has for the packet's destination port.
struct Verify {
    names: Arc<Names>,
    /// The names as last loaded (refreshed when a slot is not found in them).
    cache: Arc<Vec<String>>,
    keeper: u64,
    wrong: Arc<AtomicU64>,
    /// Times the set that classified consecutive packets changed.
    switches: u64,
    last: Option<ChainId>,
    /// Classified packets and switches, published for the test thread.
    out: Arc<(AtomicU64, AtomicU64, AtomicU64)>,
}

impl Verify {
    fn name_ok(name: &str, letter: char, port: u16) -> bool {
        if port == KEEPER_PORT {
            return name == "keeper";
        }
        name.strip_prefix(letter).and_then(|n| n.parse::<u16>().ok()) == Some(port)
    }
}

impl Chains for Verify {
    fn run(&mut self, chain: ChainId, rule: RuleId, _pkt: &Packet, key: &FlowKey, _now: u64) -> ChainVerdict {
        let letter = if chain == 0 { 'a' } else { 'b' };
        let mut ok = self.cache.get(rule as usize).is_some_and(|n| Verify::name_ok(n, letter, key.dst_port));
        if !ok {
            self.cache = self.names.rules.get();
            ok = self.cache.get(rule as usize).is_some_and(|n| Verify::name_ok(n, letter, key.dst_port));
        }
        if !ok {
            self.wrong.fetch_add(1, Ordering::Relaxed);
        }
        if key.dst_port == KEEPER_PORT {
            self.keeper += 1;
        }
        if self.last.is_some_and(|l| l != chain) {
            self.switches += 1;
        }
        self.last = Some(chain);
        ChainVerdict::Forward
    }

    fn end_burst(&mut self) {
        self.out.1.store(self.switches, Ordering::Relaxed);
        self.out.2.store(self.keeper, Ordering::Relaxed);
    }
}

/// Two workers, each forwarding between its own pair of linked `mem` ports,
/// the rules' book, and the generator that feeds them.
struct Rig {
    book: Arc<RuleBook>,
    stats: Vec<Arc<WorkerStats>>,
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    traffic: Option<std::thread::JoinHandle<Traffic>>,
    traffic_stop: Arc<AtomicBool>,
    wrong: Arc<AtomicU64>,
    verify: Vec<Arc<(AtomicU64, AtomicU64, AtomicU64)>>,
}

/// What the generator saw.
#[derive(Debug, Default)]
struct Traffic {
    sent: [u64; 2],
    received: [u64; 2],
    out_of_order: u64,
}

impl Rig {
    fn start(initial: Vec<Rule>, max_rules: usize) -> Rig {
        let set = RuleSet::new(initial).expect("initial set");
        let table = RuleTable::new(Arc::new(set));
        let names = Arc::new(Names {
            ports: (0..4).map(|i| format!("p{i}")).collect(),
            rules: Vec::new().into(),
            chains: vec!["a".into(), "b".into()],
        });
        let links = Links::new(4, &[(0, 1), (2, 3)]).expect("links");
        let stop = Arc::new(AtomicBool::new(false));
        let wrong = Arc::new(AtomicU64::new(0));
        let mut stats = Vec::new();
        let mut workers = Vec::new();
        let mut peers: Vec<MemPeer> = Vec::new();
        let mut verify = Vec::new();
        let mut built = Vec::new();
        for w in 0..2u16 {
            let (a, pa) = MemPort::new(&format!("p{}", 2 * w), 2 * w as PortId, RING);
            let (b, pb) = MemPort::new(&format!("p{}", 2 * w + 1), (2 * w + 1) as PortId, RING);
            // Traffic enters by the first port and leaves by its link peer.
            peers.push(MemPeer { to_port: pa.to_port, from_port: pb.from_port });
            let st = Arc::new(WorkerStats::new(4, max_rules * 2));
            let out = Arc::new((AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)));
            let chains = Verify {
                names: Arc::clone(&names),
                cache: Arc::new(Vec::new()),
                keeper: 0,
                wrong: Arc::clone(&wrong),
                switches: 0,
                last: None,
                out: Arc::clone(&out),
            };
            let ports: Vec<Box<dyn Port>> = vec![Box::new(a), Box::new(b)];
            let cfg = WorkerConfig { id: w as usize, ..WorkerConfig::default() };
            let worker = Worker::new(cfg, ports, &links, Arc::clone(&table), chains, Arc::clone(&st)).expect("worker");
            stats.push(st);
            verify.push(out);
            built.push(worker);
        }
        // The book before the workers start: it hands out the names the checks read.
        let book = Arc::new(RuleBook::new(Arc::clone(&table), stats.clone(), names, max_rules, max_rules * 2));
        for (w, mut worker) in built.into_iter().enumerate() {
            let stop = Arc::clone(&stop);
            workers.push(
                std::thread::Builder::new()
                    .name(format!("worker-{w}"))
                    .spawn(move || worker.run(&stop))
                    .expect("worker thread"),
            );
        }
        let traffic_stop = Arc::new(AtomicBool::new(false));
        let ts = Arc::clone(&traffic_stop);
        let traffic = std::thread::spawn(move || generate(&peers, &ts));
        Rig { book, stats, stop, workers, traffic: Some(traffic), traffic_stop, wrong, verify }
    }

    /// Stops the traffic (every packet in flight is received), then the workers.
    fn finish(mut self) -> Finished {
        self.traffic_stop.store(true, Ordering::Relaxed);
        let t = self.traffic.take().map(|h| h.join().expect("traffic thread")).unwrap_or_default();
        self.stop.store(true, Ordering::Relaxed);
        for h in self.workers.drain(..) {
            h.join().expect("worker thread");
        }
        let verify = self.verify.iter().map(|o| (o.1.load(Ordering::Relaxed), o.2.load(Ordering::Relaxed))).collect();
        Finished { traffic: t, stats: std::mem::take(&mut self.stats), verify, book: Arc::clone(&self.book) }
    }
}

/// What a rig leaves when it is finished.
struct Finished {
    traffic: Traffic,
    stats: Vec<Arc<WorkerStats>>,
    /// Per worker: switches between sets, packets of the keeper rule's flow.
    verify: Vec<(u64, u64)>,
    book: Arc<RuleBook>,
}

/// Feeds both workers' first ports with UDP packets to ports 0..RULES and
/// [`KEEPER_PORT`] in turn, each with a sequence number, keeping at most
/// [`WINDOW`] in flight per worker, and checks what leaves the second ports.
fn generate(peers: &[MemPeer], stop: &AtomicBool) -> Traffic {
    let frames: Vec<Vec<u8>> = (0..=RULES)
        .map(|p| {
            let port = if p == RULES { KEEPER_PORT } else { p };
            PacketBuilder::ethernet(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]))
                .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
                .udp(40_000, port)
                .payload(&[0; 8])
                .build()
        })
        .collect();
    let pool = Pool::new(peers.len() * RING * 2, 128);
    let mut t = Traffic::default();
    let mut expect = [0u64; 2];
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        for (w, peer) in peers.iter().enumerate() {
            while !stopping && t.sent[w] - t.received[w] < WINDOW {
                let seq = t.sent[w];
                let Some(mut pkt) = pool.alloc() else { break };
                pkt.fill_from(&frames[(seq % (u64::from(RULES) + 1)) as usize]);
                pkt.data_mut()[SEQ_AT..SEQ_AT + 8].copy_from_slice(&seq.to_be_bytes());
                if peer.send(pkt).is_err() {
                    break;
                }
                t.sent[w] += 1;
            }
            while let Some(pkt) = peer.recv() {
                let seq = u64::from_be_bytes(pkt.data()[SEQ_AT..SEQ_AT + 8].try_into().unwrap_or_default());
                if seq != expect[w] {
                    t.out_of_order += 1;
                }
                expect[w] = seq + 1;
                t.received[w] += 1;
            }
        }
        if stopping && (0..peers.len()).all(|w| t.received[w] == t.sent[w]) {
            return t;
        }
        if stopping && t.out_of_order > 0 {
            // Something was lost: do not wait for it forever.
            std::thread::sleep(Duration::from_millis(200));
            for (w, peer) in peers.iter().enumerate() {
                while peer.recv().is_some() {
                    t.received[w] += 1;
                }
            }
            return t;
        }
    }
}

/// Median, 99th percentile and maximum, in microseconds.
fn summary(mut v: Vec<Duration>) -> (u128, u128, u128) {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_micros();
    (at(0.5), at(0.99), at(1.0))
}

/// What every test checks at the end: traffic conserved, every packet
/// classified by the right rule of one of the sets, the keeper's counters
/// intact, and the sets actually alternating under traffic.
fn check_end(rig: Rig, updates: usize) {
    let wrong = Arc::clone(&rig.wrong);
    let Finished { traffic: t, stats, verify, book } = rig.finish();
    let total: u64 = t.sent.iter().sum();
    eprintln!("traffic: {t:?}; switches/keeper per worker: {verify:?}");
    assert!(total > 100_000, "too little traffic to say anything: {t:?}");
    assert_eq!(t.sent, t.received, "packets lost or duplicated: {t:?}");
    assert_eq!(t.out_of_order, 0, "packets out of order, lost or duplicated: {t:?}");
    assert_eq!(wrong.load(Ordering::Relaxed), 0, "packets classified by a rule of neither set");
    for (w, s) in stats.iter().enumerate() {
        assert_eq!(s.rx.get(), t.sent[w], "worker {w} rx");
        assert_eq!(s.tx.get(), t.sent[w], "worker {w} tx");
        assert_eq!((s.unmatched.get(), s.dropped()), (0, 0), "worker {w}: unmatched or dropped packets");
        assert_eq!(s.matched.get(), t.sent[w], "worker {w} matched");
    }
    let switches: u64 = verify.iter().map(|v| v.0).sum();
    assert!(switches >= updates as u64 / 2, "traffic hardly saw the updates: {switches} switches for {updates}");
    assert!(switches <= updates as u64 * 2, "{switches} switches between sets for {updates} updates");
    let keeper: u64 = verify.iter().map(|v| v.1).sum();
    let counts = book.counts();
    let kept = counts.iter().find(|(n, _, _)| n == "keeper").expect("keeper rule");
    assert_eq!(kept.1, keeper, "the keeper rule's counter lost packets across updates");
    let all: u64 = counts.iter().map(|c| c.1).sum();
    assert!(all <= total, "counted more than was sent");
}

#[test]
fn busy_poll_replace_10000_rules_100_times_under_traffic() {
    let rig = Rig::start(set('a'), usize::from(RULES) + 1);
    let mut latency = Vec::new();
    let mut propagation = Vec::new();
    const UPDATES: usize = 100;
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..UPDATES {
        let next = if i % 2 == 0 { set('b') } else { set('a') };
        let applied = rig.book.apply(RuleOp::ReplaceAll(next)).expect("replace");
        assert!(applied.pending.is_empty(), "update {i}: workers {:?} did not take it", applied.pending);
        assert_eq!((applied.rules, applied.added, applied.removed), (usize::from(RULES) + 1, 10_000, 10_000));
        latency.push(applied.latency);
        propagation.push(applied.propagation);
    }
    let (m, p99, max) = summary(latency);
    let (pm, pp99, pmax) = summary(propagation);
    eprintln!(
        "replace {RULES}+1 rules x {UPDATES}: request to all workers: median {m} us, p99 {p99} us, max {max} us; \
         publication to all workers: median {pm} us, p99 {pp99} us, max {pmax} us"
    );
    check_end(rig, UPDATES);
}

#[test]
fn busy_poll_reload_10000_rule_files_with_invalid_ones_between() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flowsteer.yaml");
    let text = |letter: char| {
        let mut y = String::from(
            "ports:\n  - { name: p0, type: pcap, tx: /dev/null }\n  - { name: p1, type: pcap, tx: /dev/null }\n  - { name: p2, type: pcap, tx: /dev/null }\n  - { name: p3, type: pcap, tx: /dev/null }\nlinks: [[p0, p1], [p2, p3]]\ndataplane: { workers: [{}, {}] }\nsinks:\n  - { name: s, type: pcapng, path: /dev/null }\nchains:\n  - { name: a, stages: [{ copy: { to: [s] } }] }\n  - { name: b, stages: [{ copy: { to: [s] } }] }\ncontrol: { max_rules: 10001 }\nrules:\n",
        );
        for p in 0..RULES {
            y.push_str(&format!(
                "  - {{ name: {letter}{p}, priority: {}, match: {{ proto: udp, dst_port: {p} }}, chain: {letter} }}\n",
                u32::from(p) + 10
            ));
        }
        y.push_str(&format!(
            "  - {{ name: keeper, priority: 1, match: {{ proto: udp, dst_port: {KEEPER_PORT} }}, chain: {letter} }}\n"
        ));
        y
    };
    std::fs::write(&path, text('a')).expect("write config");
    let (cfg, file) = control::config::load(&path).expect("load");
    let plan = control::compile::compile(&cfg, &file).expect("compile");
    let rig = Rig::start(plan.rules.rules().to_vec(), usize::from(RULES) + 1);
    let reloader = Reloader::new(&path, &plan, Arc::clone(&rig.book));
    let a = text('a');
    let b = text('b');
    // Invalid files: a syntax error, an unknown chain, an overlap, and a changed port section.
    let broken = [
        (a.replace("  - { name: a17, priority: 27,", "  - { name: a17 priority: 27,"), ":32:25: rules[17].name: "),
        (b.replace("chain: b }\n  - { name: b5,", "chain: nope }\n  - { name: b5,"), "unknown chain `nope`"),
        (
            a.replace(
                "priority: 12, match: { proto: udp, dst_port: 2 }",
                "priority: 11, match: { proto: udp, dst_port: 1 }",
            ),
            "same priority 11",
        ),
        (b.replace("tx: /dev/null }\n  - { name: p1", "tx: /tmp/x.pcap }\n  - { name: p1"), "`ports` changed"),
    ];
    let mut latency = Vec::new();
    // 100 reloads, as many as the replacements above; each reads and compiles the 10,001-rule
    // file (seconds in the test profile, hence the longer time limit in .config/nextest.toml).
    // FLOWSTEER_RELOADS=N runs N instead.
    let updates: usize = std::env::var("FLOWSTEER_RELOADS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    std::thread::sleep(Duration::from_millis(50));
    let mut generation = rig.book.table().generation();
    for i in 0..updates {
        let (bad, why) = &broken[i % broken.len()];
        std::fs::write(&path, bad).expect("write config");
        let e = reloader.reload().expect_err("an invalid file is refused");
        assert!(e.to_string().contains(why), "update {i}: {e}");
        assert_eq!(rig.book.table().generation(), generation, "a refused reload published a set");
        std::fs::write(&path, if i % 2 == 0 { &b } else { &a }).expect("write config");
        let t0 = Instant::now();
        let applied = reloader.reload().expect("reload");
        latency.push(t0.elapsed());
        assert!(applied.pending.is_empty(), "update {i}: workers {:?} did not take it", applied.pending);
        assert_eq!(applied.generation, generation + 1);
        generation = applied.generation;
    }
    let (m, p99, max) = summary(latency);
    eprintln!("reload of a {RULES}+1 rule file x {updates} (read, parse, compile, publish, all workers): median {m} us, p99 {p99} us, max {max} us");
    check_end(rig, updates);
}
