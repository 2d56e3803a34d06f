//! The worker watchdog: a stalled worker's ports go to a bypass forwarder
//! until the worker runs again (fail-back).
//!
//! # Who holds the ports
//!
//! A watched worker's ports, and its bridges' MAC tables, live in a
//! [`PortSlot`] shared with its bypass forwarder (so the forwarder knows
//! where every learned MAC is and floods no more than the worker would). The worker takes them out of the slot (one uncontended mutex
//! acquisition: two atomic operations) only to receive and, after its
//! chains have run, to stage and transmit; it puts them back before it runs
//! chains, the code most likely to stall (a stage that spins, a page fault
//! on a cold buffer, a bug), and at the end of every poll round. The
//! forwarder is a [`Worker`] over the same ports whose chains are
//! [`BypassChains`]: it classifies (the same published rules), makes no
//! copies, drops what a fail-closed chain would have to monitor (counted as
//! `chain_closed`) and forwards the rest to a link's peer or by the bridge
//! (the worker's MAC table); it runs on a thread of its own, never on the
//! worker's core unless the scheduler puts it there.
//!
//! # Heartbeat, detection, fail-back
//!
//! The worker bumps [`PortSlot::heartbeat`] at the start of every poll
//! round, whenever it puts its ports back, and while it waits for them (one
//! relaxed store each). The watchdog thread
//! reads every heartbeat every `check`; a heartbeat that has not moved for
//! `timeout` engages the forwarder (log line, `engagements` counted);
//! detection therefore takes between `timeout` and `timeout + check` after
//! the stall began. The forwarder takes the ports at its next round (the
//! *takeover* time, measured and kept in [`WorkerWatch`]). The forwarder
//! polls only while the heartbeat still shows the value the watchdog found
//! stalled ([`PortSlot::stalled_at`]): when the worker runs again and waits
//! for its ports, its heartbeat moves, the forwarder stops at the end of its
//! round and leaves the ports in the slot, so the worker never waits longer
//! than one forwarder round; the watchdog sees the heartbeat move and records
//! the fail-back (log line, time in bypass).
//!
//! # What a stall costs
//!
//! * The burst the worker held when it stalled is not lost: it is staged and
//!   sent when the worker resumes, after the packets the forwarder sent
//!   meanwhile (those originals arrive late and out of order, by at most
//!   one burst per port).
//! * Until detection (`timeout`) nothing is received on the worker's ports;
//!   the ports' receive rings buffer that time (an af_packet ring of 2048
//!   frames holds 100 ms at 20 kpps; more is dropped by the kernel and shows
//!   in the port's rx-drop counter).
//! * Packets the forwarder passes are not copied: their monitoring is lost
//!   (the forwarder's `rx`, reported as `bypassed-packets`); those of
//!   fail-closed chains are dropped (`chain_closed`).
//! * A worker stalled *while holding its ports* (inside a port's receive or
//!   transmit, in a system call at housekeeping) cannot be bypassed here:
//!   the forwarder never gets them. The watchdog logs it and counts it
//!   (`stuck_holding_ports`); the process bypass (the guard, a kernel
//!   redirect installed from outside the process) is the layer for that.

use crate::classifier::{ChainId, RuleId};
use crate::flow::FlowKey;
use crate::forward::Bridge;
use crate::packet::Packet;
use crate::port::Port;
use crate::stats::WorkerStats;
use crate::worker::{ChainVerdict, Chains, Worker};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A worker's ports, between the worker and its bypass forwarder.
///
/// Whoever polls takes the ports out of the slot (leaving it empty) and puts
/// them back; an empty slot means the other side has them.
pub struct PortSlot {
    held: Mutex<Held>,
    /// Bumped by the worker at every poll round and while it waits for its ports.
    pub heartbeat: AtomicU64,
    /// Set by the watchdog: the forwarder polls the ports.
    pub engaged: AtomicBool,
    /// The heartbeat the watchdog found stalled when it engaged the
    /// forwarder; any other value means the worker runs (again).
    pub stalled_at: AtomicU64,
}

impl PortSlot {
    /// A slot holding `ports`.
    pub(crate) fn new(ports: Vec<Box<dyn Port>>, bridges: Vec<Bridge>) -> PortSlot {
        PortSlot {
            held: Mutex::new(Held { ports, bridges }),
            heartbeat: AtomicU64::new(0),
            engaged: AtomicBool::new(false),
            stalled_at: AtomicU64::new(0),
        }
    }

    /// The slot's contents, locked. A side that panicked while holding the
    /// lock left the ports in a consistent state (a swap is all it does with
    /// them), so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the ports and bridges into empty `ports` and `bridges` if the
    /// slot has them. Returns false when the other side has them.
    pub(crate) fn take(&self, ports: &mut Vec<Box<dyn Port>>, bridges: &mut Vec<Bridge>) -> bool {
        let mut g = match self.held.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        if g.ports.is_empty() {
            return false;
        }
        std::mem::swap(&mut g.ports, ports);
        std::mem::swap(&mut g.bridges, bridges);
        true
    }

    /// Puts the ports and bridges back.
    pub(crate) fn put(&self, ports: &mut Vec<Box<dyn Port>>, bridges: &mut Vec<Bridge>) {
        let mut g = self.lock();
        std::mem::swap(&mut g.ports, ports);
        std::mem::swap(&mut g.bridges, bridges);
    }
}

/// What the slot holds while nobody polls: swapping two vectors moves them,
/// nothing is allocated or copied.
struct Held {
    ports: Vec<Box<dyn Port>>,
    bridges: Vec<Bridge>,
}

/// Watchdog timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// A heartbeat that has not moved for this long means a stalled worker.
    pub timeout: Duration,
    /// How often heartbeats are read.
    pub check: Duration,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig { timeout: Duration::from_millis(100), check: Duration::from_millis(10) }
    }
}

/// What the watchdog knows about one worker (read by control: report, stats, health).
#[derive(Debug)]
pub struct WorkerWatch {
    /// Whether the worker's ports are with the bypass forwarder now.
    pub bypassing: AtomicBool,
    /// Times the forwarder was engaged.
    pub engagements: AtomicU64,
    /// Times the ports went back to the worker.
    pub failbacks: AtomicU64,
    /// Nanoseconds in bypass, periods that ended.
    pub bypass_ns: AtomicU64,
    /// When the current bypass began (ns since the watchdog started; valid while bypassing).
    pub bypass_since_ns: AtomicU64,
    /// Stalls during which the worker held its ports, so no bypass was possible.
    pub stuck_holding_ports: AtomicU64,
    /// Last detection: ns from the last heartbeat seen moving to the engagement.
    pub last_detect_ns: AtomicU64,
    /// Last takeover: ns from the engagement to the forwarder's first round with the ports.
    pub last_takeover_ns: AtomicU64,
    /// The forwarder's counters (`rx`: packets it carried, `tx`, drops); no per-port or per-rule counters.
    pub forwarder: Arc<WorkerStats>,
}

/// Every watched worker's state, by worker index.
#[derive(Debug)]
pub struct WatchdogState {
    /// Per worker.
    pub workers: Vec<WorkerWatch>,
    /// The timing in force.
    pub config: WatchdogConfig,
    epoch: Instant,
}

impl WatchdogState {
    /// Time worker `w` has spent in bypass, the current period included.
    pub fn bypass_time(&self, w: usize) -> Duration {
        let Some(x) = self.workers.get(w) else { return Duration::ZERO };
        let mut ns = x.bypass_ns.load(Ordering::Relaxed);
        if x.bypassing.load(Ordering::Relaxed) {
            let now = self.epoch.elapsed().as_nanos() as u64;
            ns += now.saturating_sub(x.bypass_since_ns.load(Ordering::Relaxed));
        }
        Duration::from_nanos(ns)
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// The forwarder's stand-in for the chains: no copies, no stages; a
/// packet whose chain is fail-closed is dropped (it cannot be monitored, and
/// fail-closed promises that nothing unmonitored passes), any other passes.
pub struct BypassChains {
    fail_closed: Vec<bool>,
}

impl BypassChains {
    /// `fail_closed[c]`: whether chain `c` is fail-closed.
    pub fn new(fail_closed: Vec<bool>) -> BypassChains {
        BypassChains { fail_closed }
    }
}

impl Chains for BypassChains {
    #[inline]
    fn run(&mut self, chain: ChainId, _: RuleId, _: &Packet, _: &FlowKey, _: u64) -> ChainVerdict {
        if self.fail_closed.get(chain as usize).copied().unwrap_or(false) {
            ChainVerdict::Drop
        } else {
            ChainVerdict::Forward
        }
    }
}

/// A worker's bypass forwarder, ready to be handed to [`Watchdog::spawn`].
pub struct Forwarder {
    slot: Arc<PortSlot>,
    worker: Worker<BypassChains>,
}

impl Forwarder {
    pub(crate) fn new(slot: Arc<PortSlot>, worker: Worker<BypassChains>) -> Forwarder {
        Forwarder { slot, worker }
    }
}

/// The watchdog thread and the forwarders' threads.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    forwarders: Vec<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts one forwarder thread per watched worker (parked until engaged)
    /// and the watchdog thread reading their heartbeats.
    pub fn spawn(cfg: WatchdogConfig, forwarders: Vec<Forwarder>) -> std::io::Result<(Watchdog, Arc<WatchdogState>)> {
        let state = Arc::new(WatchdogState {
            workers: forwarders
                .iter()
                .map(|f| WorkerWatch {
                    bypassing: AtomicBool::new(false),
                    engagements: AtomicU64::new(0),
                    failbacks: AtomicU64::new(0),
                    bypass_ns: AtomicU64::new(0),
                    bypass_since_ns: AtomicU64::new(0),
                    stuck_holding_ports: AtomicU64::new(0),
                    last_detect_ns: AtomicU64::new(0),
                    last_takeover_ns: AtomicU64::new(0),
                    forwarder: Arc::clone(f.worker.stats()),
                })
                .collect(),
            config: cfg,
            epoch: Instant::now(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut dog = Watchdog { stop: Arc::clone(&stop), thread: None, forwarders: Vec::new() };
        let mut slots = Vec::new();
        for (w, f) in forwarders.into_iter().enumerate() {
            slots.push(Arc::clone(&f.slot));
            let (stop, state) = (Arc::clone(&stop), Arc::clone(&state));
            let h = std::thread::Builder::new()
                .name(format!("bypass-{w}"))
                .spawn(move || forward(w, f, &stop, &state, cfg.check))?;
            dog.forwarders.push(h);
        }
        let threads: Vec<std::thread::Thread> = dog.forwarders.iter().map(|h| h.thread().clone()).collect();
        let st = Arc::clone(&state);
        dog.thread = Some(
            std::thread::Builder::new()
                .name("watchdog".into())
                .spawn(move || watch(cfg, &slots, &threads, &stop, &st))?,
        );
        Ok((dog, state))
    }

    /// Stops the watchdog and the forwarders; the ports stay with (or go back
    /// to) their workers, which can then drain and stop.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("watchdog: its thread panicked");
            }
        }
        for (w, f) in self.forwarders.drain(..).enumerate() {
            f.thread().unpark();
            if f.join().is_err() {
                log::error!("worker {w}: its bypass forwarder panicked");
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The watchdog thread: reads heartbeats, engages and releases forwarders.
fn watch(
    cfg: WatchdogConfig,
    slots: &[Arc<PortSlot>],
    forwarders: &[std::thread::Thread],
    stop: &AtomicBool,
    state: &WatchdogState,
) {
    let start = Instant::now();
    let mut seen: Vec<(u64, Instant)> = slots.iter().map(|s| (s.heartbeat.load(Ordering::Relaxed), start)).collect();
    let mut warned_holding = vec![false; slots.len()];
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(cfg.check);
        let now = Instant::now();
        for (w, slot) in slots.iter().enumerate() {
            let x = &state.workers[w];
            let hb = slot.heartbeat.load(Ordering::Relaxed);
            let engaged = slot.engaged.load(Ordering::Relaxed);
            if hb != seen[w].0 {
                seen[w] = (hb, now);
                if engaged {
                    slot.engaged.store(false, Ordering::Relaxed);
                    let since = x.bypass_since_ns.load(Ordering::Relaxed);
                    let spent = state.now_ns().saturating_sub(since);
                    x.bypass_ns.fetch_add(spent, Ordering::Relaxed);
                    x.bypassing.store(false, Ordering::Relaxed);
                    x.failbacks.fetch_add(1, Ordering::Relaxed);
                    warned_holding[w] = false;
                    log::info!(
                        "worker {w}: heartbeat again; fail-back: its ports are back with it after {:.1} ms in bypass",
                        spent as f64 / 1e6
                    );
                }
                continue;
            }
            let quiet = now.duration_since(seen[w].1);
            if !engaged && quiet >= cfg.timeout {
                x.bypass_since_ns.store(state.now_ns(), Ordering::Relaxed);
                x.last_detect_ns.store(quiet.as_nanos() as u64, Ordering::Relaxed);
                x.bypassing.store(true, Ordering::Relaxed);
                x.engagements.fetch_add(1, Ordering::Relaxed);
                slot.stalled_at.store(hb, Ordering::Relaxed);
                slot.engaged.store(true, Ordering::Release);
                forwarders[w].unpark();
                log::warn!(
                    "worker {w}: no heartbeat for {:.1} ms (timeout {} ms): its ports go to the bypass forwarder (no copies; fail-closed chains drop)",
                    quiet.as_secs_f64() * 1e3,
                    cfg.timeout.as_millis()
                );
            } else if engaged && !warned_holding[w] && quiet >= cfg.timeout * 2 && x.last_takeover_ns() == 0 {
                warned_holding[w] = true;
                x.stuck_holding_ports.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "worker {w}: stalled while holding its ports: the bypass forwarder cannot take them; only the process bypass (guard) can forward them now"
                );
            }
        }
    }
    for (w, slot) in slots.iter().enumerate() {
        slot.engaged.store(false, Ordering::Relaxed);
        state.workers[w].bypassing.store(false, Ordering::Relaxed);
    }
}

impl WorkerWatch {
    /// The last takeover time in ns; 0 while the current engagement has not taken the ports yet.
    fn last_takeover_ns(&self) -> u64 {
        self.last_takeover_ns.load(Ordering::Relaxed)
    }
}

/// A forwarder thread: parked until engaged, then polls the worker's ports
/// round by round until released or until the worker asks for them.
fn forward(w: usize, mut f: Forwarder, stop: &AtomicBool, state: &WatchdogState, check: Duration) {
    let x = &state.workers[w];
    let mut took_over = false;
    while !stop.load(Ordering::Relaxed) {
        if !f.slot.engaged.load(Ordering::Acquire) {
            took_over = false;
            std::thread::park_timeout(check);
            continue;
        }
        if !took_over {
            // A new engagement: its takeover time is not known yet.
            x.last_takeover_ns.store(0, Ordering::Relaxed);
        }
        if f.slot.heartbeat.load(Ordering::Relaxed) != f.slot.stalled_at.load(Ordering::Relaxed) {
            // The worker runs again (and may be waiting for its ports): leave them to it.
            std::thread::yield_now();
            continue;
        }
        match f.worker.poll_watched() {
            Some(_) => {
                if !took_over {
                    took_over = true;
                    let since = x.bypass_since_ns.load(Ordering::Relaxed);
                    x.last_takeover_ns.store(state.now_ns().saturating_sub(since).max(1), Ordering::Relaxed);
                    log::info!("worker {w}: bypass forwarder has its ports");
                }
            }
            // The worker holds them (stalled inside a port call, or about to hand them over).
            None => std::thread::yield_now(),
        }
    }
}
