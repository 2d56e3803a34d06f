//! Throughput harness: a real worker over `mem` ports, pre-built 64-byte
//! packets across many flows, one headline Mpps figure per scenario.
//!
//! Two ports are linked; their rings are wired so that what the worker
//! transmits on one port is received again on the other, so the packets
//! circulate with no generator thread and the figure is the worker's own
//! per-core rate (as testpmd `io` forwarding on `net_null` measures its own).
//! Copies go through the real copy stage and sink queue to a sink thread on
//! another core that discards them.
//!
//! ```text
//! cargo run --release -p benches --bin throughput -- [--flows 100000] [--seconds 5] [--core 1] [--scenario all]
//! ```

use benches::{flows, rule_copy_all, rule_copy_tenth, rule_matching_nothing};
use chains::sink::{CopyRecord, Names, Sink, SinkError, SinkQueue, SinkThread};
use chains::stage::StageSpec;
use chains::{ChainSet, ChainSpec, OnFailure};
use dataplane::classifier::RuleSet;
use dataplane::forward::Links;
use dataplane::packet::{Meta, Packet, Pool};
use dataplane::port::mem::{ring, MemPort};
use dataplane::port::Port;
use dataplane::publish::RuleTable;
use dataplane::stats::WorkerStats;
use dataplane::worker::{Worker, WorkerConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A sink that discards copies: the harness measures the worker, not a disk.
struct Discard;

impl Sink for Discard {
    fn name(&self) -> &str {
        "discard"
    }
    fn write(&mut self, _: &CopyRecord, _: &Names) -> Result<(), SinkError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// The scenarios, in the order `all` runs them:
/// `no-rules`: an empty rule set (parse and forward only);
/// `no-match`: one rule that no flow matches (every packet parsed and looked up);
/// `copy-10pct`: a rule steering a tenth of the flows through a copy chain;
/// `copy-100pct`: a rule steering every flow through it;
/// `chain-mix`: every flow through slice(128) + sample(1 in 10 packets) +
/// budget(1 Mpps) + copy, the chain a monitoring team would deploy.
const SCENARIOS: [&str; 5] = ["no-rules", "no-match", "copy-10pct", "copy-100pct", "chain-mix"];

struct Args {
    flows: usize,
    seconds: f64,
    core: Option<usize>,
    scenarios: Vec<&'static str>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { flows: 100_000, seconds: 5.0, core: Some(1), scenarios: SCENARIOS.to_vec() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--flows" => a.flows = val()?.parse().map_err(|e| format!("--flows: {e}"))?,
            "--seconds" => a.seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--core" => a.core = parse_core(&val()?)?,
            "--scenario" => {
                a.scenarios = match val()?.as_str() {
                    "all" => SCENARIOS.to_vec(),
                    one => match SCENARIOS.iter().find(|s| **s == one) {
                        Some(s) => vec![*s],
                        None => return Err(format!("unknown scenario `{one}` (all, {})", SCENARIOS.join(", "))),
                    },
                }
            }
            "--bench" => {} // passed by `cargo bench`
            "-h" | "--help" => {
                println!("throughput [--flows N] [--seconds S] [--core C|none] [--scenario all|no-rules|no-match|copy-10pct|copy-100pct|chain-mix]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(a)
}

fn parse_core(s: &str) -> Result<Option<usize>, String> {
    if s == "none" {
        Ok(None)
    } else {
        s.parse().map(Some).map_err(|e| format!("core `{s}`: {e}"))
    }
}

struct Outcome {
    mpps: f64,
    forwarded: u64,
    copies: u64,
    copies_lost: u64,
    copies_shed: u64,
    dropped: u64,
}

fn run(scenario: &str, args: &Args, frames: &[Vec<u8>]) -> Outcome {
    let rules = match scenario {
        "no-rules" => Ok(RuleSet::empty()),
        "no-match" => RuleSet::new(vec![rule_matching_nothing()]),
        "copy-10pct" => RuleSet::new(vec![rule_copy_tenth()]),
        _ => RuleSet::new(vec![rule_copy_all()]),
    }
    .expect("harness rules compile");
    let table = RuleTable::new(Arc::new(rules));

    // Ring r1 feeds port a; port b transmits into r1, so packets circulate a -> b -> a.
    let cap = frames.len().next_power_of_two();
    let (r1, r2) = (ring(cap), ring(cap));
    let a = MemPort::with_rings("a", 0, Arc::clone(&r1), Arc::clone(&r2));
    let b = MemPort::with_rings("b", 1, r2, Arc::clone(&r1));
    for f in frames {
        // Cannot fail: the ring holds every frame.
        let _ = r1.push(Packet::from_slice(f, Meta::default()));
    }

    let names = Arc::new(Names {
        ports: vec!["a".into(), "b".into()],
        rules: vec!["copy".to_string()].into(),
        chains: vec!["copy".into()],
    });
    let queue = Arc::new(SinkQueue::new("discard", 8192));
    let pool = Pool::new(16_384, 2048);
    // The sink thread is not pinned: it sleeps when idle and the OS keeps it off the busy worker core.
    let sink = SinkThread::spawn(Box::new(Discard), Arc::clone(&queue), names).expect("start sink thread");
    let stages = match scenario {
        "chain-mix" => vec![
            StageSpec::Slice { snaplen: 128 },
            StageSpec::Sample { one_in: 10, per_flow: false, seed: 1 },
            StageSpec::Budget { pps: Some(1_000_000), bps: None },
            StageSpec::Copy { to: vec![0] },
        ],
        _ => vec![StageSpec::Copy { to: vec![0] }],
    };
    let spec = ChainSpec { name: "copy".into(), on_failure: OnFailure::FailOpen, stages };
    let chains = ChainSet::new(&[spec], &[Arc::clone(&queue)], &pool, 0, 1);
    let chain_stats = chains.stats();
    let stats = Arc::new(WorkerStats::new(2, 1));
    let links = Links::new(2, &[(0, 1)]).expect("link a-b");
    let ports: Vec<Box<dyn Port>> = vec![Box::new(a), Box::new(b)];
    let cfg = WorkerConfig { flow_cache: args.flows.next_power_of_two() * 2, ..WorkerConfig::default() };
    let mut worker = Worker::new(cfg, ports, &links, table, chains, Arc::clone(&stats)).expect("worker");

    let stop = Arc::new(AtomicBool::new(false));
    let core = args.core;
    let stop2 = Arc::clone(&stop);
    let seconds = args.seconds;
    let handle = std::thread::spawn(move || {
        if let Some(c) = core {
            core_affinity::set_for_current(core_affinity::CoreId { id: c });
        }
        // Warm-up: one pass over every flow fills the flow cache.
        let warm = Instant::now();
        while warm.elapsed() < Duration::from_millis(300) {
            worker.poll();
        }
        let tx0 = worker.stats().tx.get();
        let t0 = Instant::now();
        while !stop2.load(Ordering::Relaxed) {
            for _ in 0..1024 {
                worker.poll();
            }
            if t0.elapsed().as_secs_f64() >= seconds {
                break;
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        let tx = worker.stats().tx.get() - tx0;
        worker.finish();
        (tx, dt)
    });
    let (tx, dt) = handle.join().expect("worker thread");
    stop.store(true, Ordering::Relaxed);
    sink.stop();
    let chain = &chain_stats[0];
    // The copy stage is the last; the ones before it shed on purpose.
    let st = chain.stages.last().expect("a chain has a copy stage");
    Outcome {
        mpps: tx as f64 / dt / 1e6,
        forwarded: stats.tx.get(),
        copies: queue.written(),
        copies_lost: st.dropped.get() + st.errors.get(),
        copies_shed: chain.stages.iter().map(|s| s.shed.get()).sum(),
        dropped: stats.dropped(),
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("throughput: {e}");
            std::process::exit(2);
        }
    };
    let frames = flows(args.flows);
    println!(
        "flowsteer throughput harness: {} flows, {} packets of {} bytes in flight, worker on core {}, {} s per scenario",
        args.flows,
        frames.len(),
        frames[0].len(),
        args.core.map_or("any".into(), |c| c.to_string()),
        args.seconds
    );
    for s in &args.scenarios {
        let o = run(s, &args, &frames);
        println!(
            "{:<12} {:>7.2} Mpps  (forwarded {} packets, copies written {}, copies lost {}, copies shed {}, originals dropped {})",
            s, o.mpps, o.forwarded, o.copies, o.copies_lost, o.copies_shed, o.dropped
        );
    }
}
