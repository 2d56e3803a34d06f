//! Watchdog timing harness: how long a stalled worker's ports go unpolled,
//! and how long fail-back takes, over many trials.
//!
//! A real worker (over two linked `mem` ports, every packet steered into a
//! chain) runs on its thread under the real watchdog and bypass forwarder;
//! a generator sends numbered packets every 100 us and a receiver records
//! their arrival. Each trial stalls the worker inside its chain for
//! `--stall-ms`, then lets it go. Per trial:
//!
//! * **detection**: stall start to the watchdog engaging the forwarder;
//! * **takeover**: engagement to the forwarder's first round with the ports;
//! * **gap**: the longest time the receiver waited for a packet (what a VM sees);
//! * **fail-back**: stall end to the ports being back with the worker.
//!
//! Prints the median and the worst of each, and the packets lost,
//! duplicated and delivered late over all trials.
//!
//! ```text
//! cargo run --release -p benches --bin failover -- [--trials 20] [--timeout-ms 100] [--check-ms 10] [--stall-ms 300]
//! ```

use dataplane::classifier::{Action, ChainId, Match, Rule, RuleId, RuleSet};
use dataplane::flow::FlowKey;
use dataplane::forward::{Forwarding, Links};
use dataplane::packet::{Meta, Packet};
use dataplane::port::mem::MemPort;
use dataplane::port::Port;
use dataplane::publish::RuleTable;
use dataplane::stats::WorkerStats;
use dataplane::watchdog::{Watchdog, WatchdogConfig, WatchdogState};
use dataplane::worker::{ChainVerdict, Chains, Worker, WorkerConfig};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A chain that holds the worker while `stall` is set.
struct Stalling(Arc<AtomicBool>);

impl Chains for Stalling {
    fn run(&mut self, _: ChainId, _: RuleId, _: &Packet, _: &FlowKey, _: u64) -> ChainVerdict {
        while self.0.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_micros(100));
        }
        ChainVerdict::Forward
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} wants a number")))
        .unwrap_or(default)
}

/// Median and worst of `v`, in ms.
fn summary(name: &str, v: &mut [Duration]) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("{name:<10} median {:8.2} ms   worst {:8.2} ms", ms(v[v.len() / 2]), ms(v[v.len() - 1]));
}

/// Waits until `f` holds (polling every 20 us), up to 5 s; returns when.
fn when(f: impl Fn() -> bool) -> Instant {
    let t = Instant::now();
    while !f() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_micros(20));
    }
    Instant::now()
}

fn main() {
    let trials = arg("--trials", 20) as usize;
    let cfg = WatchdogConfig {
        timeout: Duration::from_millis(arg("--timeout-ms", 100)),
        check: Duration::from_millis(arg("--check-ms", 10)),
    };
    let stall_for = Duration::from_millis(arg("--stall-ms", 300));

    let (pa, a) = MemPort::new("a", 0, 65_536);
    let (pb, b) = MemPort::new("b", 1, 65_536);
    let all =
        Rule { name: "all".into(), priority: 1, matches: Match::default(), symmetric: false, action: Action::Chain(0) };
    let table = RuleTable::new(Arc::new(RuleSet::new(vec![all]).expect("one rule")));
    let fwd = Forwarding::from(Links::new(2, &[(0, 1)]).expect("one link"));
    let stall = Arc::new(AtomicBool::new(false));
    let ports: Vec<Box<dyn Port>> = vec![Box::new(pa), Box::new(pb)];
    let stats = Arc::new(WorkerStats::new(2, 1));
    let w =
        Worker::new(WorkerConfig::default(), ports, &fwd, table, Stalling(Arc::clone(&stall)), stats).expect("worker");
    let (mut w, f) = w.watched(&fwd, vec![false]).expect("watched worker");
    let (dog, state): (Watchdog, Arc<WatchdogState>) = Watchdog::spawn(cfg, vec![f]).expect("watchdog");
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || w.run(&stop))
    };

    // Generator: a numbered packet every 100 us until told to stop.
    let sent = Arc::new(AtomicU32::new(0));
    let quiet = Arc::new(AtomicBool::new(false));
    let generator = {
        let (stop, sent, a) = (Arc::clone(&quiet), Arc::clone(&sent), a.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            let mut frame = vec![0u8; 64];
            frame[12..14].copy_from_slice(&[0x88, 0xb5]);
            while !stop.load(Ordering::Relaxed) {
                frame[14..18].copy_from_slice(&n.to_be_bytes());
                if a.send(Packet::from_slice(&frame, Meta::default())).is_ok() {
                    n += 1;
                    sent.store(n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        })
    };

    let x = &state.workers[0];
    let (mut detect, mut takeover, mut gaps, mut failback) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut got: Vec<u32> = Vec::new();
    let drain = |got: &mut Vec<u32>, until: Instant| -> Duration {
        // Receives until `until`, returning the longest wait between two packets.
        let (mut last, mut gap) = (Instant::now(), Duration::ZERO);
        while Instant::now() < until {
            while let Some(p) = b.recv() {
                got.push(u32::from_be_bytes(p.data()[14..18].try_into().expect("4 bytes")));
                gap = gap.max(last.elapsed());
                last = Instant::now();
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        gap
    };
    drain(&mut got, Instant::now() + Duration::from_millis(200));
    for _ in 0..trials {
        let (engaged, backs) = (x.engagements.load(Ordering::Relaxed), x.failbacks.load(Ordering::Relaxed));
        let t0 = Instant::now();
        stall.store(true, Ordering::Relaxed);
        let gap = std::thread::scope(|s| {
            let r = s.spawn(|| drain(&mut got, t0 + stall_for + Duration::from_millis(150)));
            detect.push(when(|| x.engagements.load(Ordering::Relaxed) > engaged) - t0);
            std::thread::sleep((t0 + stall_for).saturating_duration_since(Instant::now()));
            let t1 = Instant::now();
            stall.store(false, Ordering::Relaxed);
            failback.push(when(|| x.failbacks.load(Ordering::Relaxed) > backs) - t1);
            r.join().expect("receiver")
        });
        takeover.push(Duration::from_nanos(x.last_takeover_ns.load(Ordering::Relaxed)));
        gaps.push(gap);
    }
    // The generator stops first, so the worker receives everything before it stops.
    quiet.store(true, Ordering::Relaxed);
    generator.join().expect("generator");
    drain(&mut got, Instant::now() + Duration::from_millis(100));
    dog.stop();
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("worker");
    drain(&mut got, Instant::now() + Duration::from_millis(10));

    let sent = sent.load(Ordering::Relaxed) as usize;
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let (mut top, mut late) = (0u32, 0usize);
    for &n in &got {
        late += usize::from(n < top);
        top = top.max(n);
    }
    println!(
        "watchdog timeout {} ms, check {} ms, stall {} ms, {trials} trials, a packet every 100 us",
        cfg.timeout.as_millis(),
        cfg.check.as_millis(),
        stall_for.as_millis()
    );
    summary("detection", &mut detect);
    summary("takeover", &mut takeover);
    summary("gap", &mut gaps);
    summary("fail-back", &mut failback);
    println!(
        "packets: sent {sent} received {} lost {} duplicated {} late {late}; bypassed by the forwarder {}",
        got.len(),
        sent - sorted.len(),
        got.len() - sorted.len(),
        x.forwarder.rx.get()
    );
}
