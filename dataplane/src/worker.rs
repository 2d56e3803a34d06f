//! The poll-mode worker: the canonical loop.
//!
//! While running: receive a burst from each owned port, parse every packet's
//! [`FlowKey`], look it up in the per-worker [`FlowCache`] (the published
//! [`RuleSet`] on a miss; a rule set of a few tuples directly, see
//! [`DIRECT_TUPLES`]), hand matched packets to their chain, stage the
//! originals per egress port (a link's peer, or where a bridge says: one
//! port, or a flood to several), then one `tx_burst` per egress port.
//! Housekeeping (flushing capture writers, heartbeat) runs on a cheap
//! iteration counter, never on a clock read per packet.
//!
//! Every packet's fate is decided first (a verdict pass), before any packet
//! moves. A burst whose packets all go the same way unchanged (no rule
//! matched, none dropped) over a link is then transmitted as it is, behind
//! whatever was staged for that port: one bulk action, as testpmd's io mode
//! does, with no packet moved one by one.
//!
//! Otherwise a burst's originals are staged in order; unmatched ones are staged at
//! once until the first packet with a chain, which is held with everything
//! after it. The held packets' chains then run as one timed block (see
//! [`crate::monitor`]: the monitoring share, the budget and overload
//! shedding), and the held originals the chains let through are staged, so
//! arrival order is kept and a burst without chain work is never held.
//!
//! Nothing on this path allocates, locks, or makes a system call per packet;
//! every packet the worker does not transmit is counted under a
//! [`DropReason`].

use crate::bypass::Bypass;
use crate::cache::FlowCache;
use crate::classifier::{Action, ChainId, RuleId, RuleSet, Verdict};
use crate::flow::FlowKey;
use crate::forward::{Bridge, Decision, Forwarding, PortRole};
use crate::handover::{Handover, Window};
use crate::monitor::MonitorBudget;
use crate::packet::{Packet, Pool, PortId};
use crate::parser::{parse_into, Malformed};
use crate::port::{Burst, Port};
use crate::publish::RuleTable;
use crate::stats::{DropReason, WorkerStats, LINK_DOWN, LINK_UP};
use crate::watchdog::{BypassChains, Forwarder, PortSlot};
use crate::BURST;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What a chain decided about the original it was shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainVerdict {
    /// Forward the original (the normal case, also when copying failed under fail-open).
    Forward,
    /// Drop the original (a fail-closed chain that cannot monitor it).
    Drop,
}

/// The chains a worker runs matched packets through.
///
/// Implemented by the `chains` crate; the dataplane only knows this trait.
/// One value per worker, so implementations keep per-worker state and
/// counters without sharing.
pub trait Chains {
    /// Runs chain `chain` for a packet (parsed into `key`) that the rule
    /// with counter slot `rule` matched ([`RuleSet::slot`]: the rule's
    /// identity across rule-set updates, which its copies are labelled with). The original must not be modified; copies are made from it.
    /// `now_ns` is the burst's timestamp, for packets whose port gave none.
    /// Bounded work, no blocking.
    fn run(&mut self, chain: ChainId, rule: RuleId, pkt: &Packet, key: &FlowKey, now_ns: u64) -> ChainVerdict;

    /// Called once after each poll round that processed packets.
    fn end_burst(&mut self) {}

    /// Whether the worker may skip chain `chain` to bound monitoring (budget,
    /// overload), forwarding the original unmonitored. Chains that must not
    /// pass unmonitored traffic (fail-closed) say no and always run.
    fn sheddable(&self, _chain: ChainId) -> bool {
        true
    }
}

/// A worker without chains: every matched packet is forwarded (benchmarks, tests).
pub struct NoChains;

impl Chains for NoChains {
    #[inline]
    fn run(&mut self, _: ChainId, _: RuleId, _: &Packet, _: &FlowKey, _: u64) -> ChainVerdict {
        ChainVerdict::Forward
    }
}

/// What to do with packets whose headers do not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MalformedPolicy {
    /// Count, classify as far as parsed, forward.
    #[default]
    Forward,
    /// Count and drop.
    Drop,
}

/// Tuning of one worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Worker index (for logs).
    pub id: usize,
    /// Flow cache entries.
    pub flow_cache: usize,
    /// Packets per receive burst, 1..=[`crate::BURST`].
    pub burst: usize,
    /// Malformed-packet policy.
    pub malformed: MalformedPolicy,
    /// Largest share of the worker's time its chains may take (0..=1); over
    /// it, sheddable chains are skipped ([`crate::monitor`]). `None`: no cap.
    pub monitor_budget: Option<f64>,
    /// Consecutive full receive bursts from one port after which the worker
    /// sheds that port's chain work until a burst comes back short. `None`: never.
    pub overload_bursts: Option<u32>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: 0,
            flow_cache: 65_536,
            burst: crate::BURST,
            malformed: MalformedPolicy::Forward,
            monitor_budget: None,
            overload_bursts: None,
        }
    }
}

/// Why a worker cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkerError {
    /// A port's link peer belongs to another worker.
    #[error("port `{port}` is linked to port id {peer}, which this worker does not own; both ports of a link must be on the same worker")]
    PeerElsewhere {
        /// The port's name.
        port: String,
        /// The peer's id.
        peer: PortId,
    },
    /// A bridge has ports on this worker and on another. Learning and
    /// flooding need every port of a bridge in one worker's hands.
    #[error("port `{port}` is in bridge {bridge}, whose port id {missing} this worker does not own; all ports of a bridge must be on the same worker")]
    BridgeSplit {
        /// The name of a port of the bridge this worker owns.
        port: String,
        /// Index of the bridge.
        bridge: usize,
        /// A port of the bridge this worker does not own.
        missing: PortId,
    },
}

/// Where a local port's originals go.
#[derive(Clone, Copy, Debug)]
enum Egress {
    /// Nowhere (`no_egress`).
    None,
    /// To this local port (a link).
    Link(usize),
    /// Where the worker's bridge with this index decides.
    Bridge(usize),
}

/// How often (in poll rounds) housekeeping runs: a power of two minus one, used as a mask.
const HOUSEKEEPING_MASK: u64 = 0x3ff;

/// A poll-mode worker over a set of ports.
pub struct Worker<C: Chains> {
    cfg: WorkerConfig,
    ports: Vec<Box<dyn Port>>,
    /// Where each local port's originals go.
    egress: Vec<Egress>,
    /// Staged output and the bridges that decide some of it.
    tx: Staging,
    /// Origin of the bridges' per-burst time (monotonic, unlike packet timestamps).
    clock: Instant,
    table: Arc<RuleTable>,
    rules: Arc<RuleSet>,
    generation: u64,
    cache: FlowCache,
    /// Whether the rule set is looked up through `cache`; small ones are
    /// classified directly ([`uses_flow_cache`]).
    cached: bool,
    chains: C,
    stats: Arc<WorkerStats>,
    /// When on, every packet is forwarded without classification or chains.
    bypass: Arc<Bypass>,
    /// The window in which guarded ports' frames are forwarded (see [`Handover`]).
    handover: Arc<Handover>,
    /// Per local port: whether the guard's kernel bypass covers it.
    guarded: Vec<bool>,
    any_guarded: bool,
    iter: u64,
    /// Per-burst scratch, parallel to the burst: parsed keys, their hashes,
    /// parse failures. Owned by the worker so no burst allocates or clears them.
    keys: [FlowKey; BURST],
    hashes: [u64; BURST],
    /// Verdicts of a burst classified directly (no flow cache).
    classified: [Option<Verdict>; BURST],
    bad: [Option<Malformed>; BURST],
    /// Each packet's fate, decided before any packet moves.
    fates: [Fate; BURST],
    /// Originals of the burst being processed, from its first packet with a
    /// chain on, in order; for those with a chain (chain, rule, index into
    /// `keys`); the chains' verdicts.
    held: Burst,
    held_by: [Option<(ChainId, RuleId, usize)>; BURST],
    /// Whether any held packet has a chain to run.
    chained: bool,
    verdicts: [ChainVerdict; BURST],
    /// The monitoring budget, if one is set.
    budget: Option<MonitorBudget>,
    /// Per local port: consecutive full receive bursts.
    full_streak: Vec<u32>,
    /// Chains shed (budget + overload) at the last look, and since when the
    /// worker has been logged as shedding.
    shed_seen: u64,
    shedding_since: Option<Instant>,
    /// With a watchdog: where the ports are between poll rounds and while
    /// chains run ([`crate::watchdog`]); `ports` is empty then.
    slot: Option<Arc<PortSlot>>,
    /// True for a bypass forwarder: it skips a round when the worker has the
    /// ports, where a worker waits for them.
    yields: bool,
}

impl<C: Chains> Worker<C> {
    /// A worker owning `ports`, forwarding along `fwd` (a [`Forwarding`], or
    /// just `&Links`), classifying with the rules published in `table`,
    /// running matched packets through `chains`, counting into `stats`.
    ///
    /// Each bridge with a port here gets its MAC table, and the worker one
    /// flood pool, allocated now: nothing is allocated while forwarding.
    pub fn new(
        cfg: WorkerConfig,
        ports: Vec<Box<dyn Port>>,
        fwd: impl Into<Forwarding>,
        table: Arc<RuleTable>,
        chains: C,
        stats: Arc<WorkerStats>,
    ) -> Result<Worker<C>, WorkerError> {
        let fwd: Forwarding = fwd.into();
        let local = |id: PortId| ports.iter().position(|q| q.id() == id);
        let mut egress = Vec::with_capacity(ports.len());
        // Global bridge index -> index into `bridges`.
        let mut mine: Vec<Option<usize>> = vec![None; fwd.bridges().len()];
        let mut bridges = Vec::new();
        let mut pool: Option<Arc<Pool>> = None;
        for p in &ports {
            let e = match fwd.role(p.id()) {
                PortRole::None => Egress::None,
                PortRole::Link(peer) => match local(peer) {
                    Some(l) => Egress::Link(l),
                    None => return Err(WorkerError::PeerElsewhere { port: p.name().to_string(), peer }),
                },
                PortRole::Bridge(b) => match mine[b] {
                    Some(m) => Egress::Bridge(m),
                    None => {
                        let cfg = &fwd.bridges()[b];
                        let mut locals = Vec::with_capacity(cfg.ports.len());
                        for &q in &cfg.ports {
                            match local(q) {
                                Some(l) => locals.push(l),
                                None => {
                                    let port = p.name().to_string();
                                    return Err(WorkerError::BridgeSplit { port, bridge: b, missing: q });
                                }
                            }
                        }
                        let pool = pool.get_or_insert_with(|| {
                            let (n, size) = fwd.flood_pool();
                            Pool::new(n, size)
                        });
                        bridges.push(Bridge::new(locals.into(), cfg, Arc::clone(pool)));
                        mine[b] = Some(bridges.len() - 1);
                        Egress::Bridge(bridges.len() - 1)
                    }
                },
            };
            egress.push(e);
        }
        let tx = Staging { out: ports.iter().map(|_| Burst::new()).collect(), bridges };
        let n_ports = ports.len();
        let published = table.load();
        let (generation, rules) = (published.generation, Arc::clone(&published.rules));
        stats.generation.set(generation);
        let mut cfg = cfg;
        cfg.burst = cfg.burst.clamp(1, crate::BURST);
        let mut cache = FlowCache::new(cfg.flow_cache.max(1));
        cache.set_generation(generation);
        Ok(Worker {
            cache,
            cached: uses_flow_cache(&rules),
            keys: [FlowKey::default(); BURST],
            hashes: [0; BURST],
            classified: [None; BURST],
            bad: [None; BURST],
            fates: [Fate::Forward; BURST],
            held: Burst::new(),
            held_by: [None; BURST],
            chained: false,
            verdicts: [ChainVerdict::Forward; BURST],
            budget: cfg.monitor_budget.map(MonitorBudget::new),
            full_streak: vec![0; ports.len()],
            shed_seen: 0,
            shedding_since: None,
            slot: None,
            yields: false,
            cfg,
            ports,
            egress,
            tx,
            clock: Instant::now(),
            table,
            rules,
            generation,
            chains,
            stats,
            bypass: Arc::new(Bypass::new()),
            handover: Arc::new(Handover::new()),
            guarded: vec![false; n_ports],
            any_guarded: false,
            iter: 0,
        })
    }

    /// Makes the worker obey `bypass` (shared with the other workers and
    /// control) instead of a switch of its own that nobody can turn on.
    pub fn with_bypass(mut self, bypass: Arc<Bypass>) -> Worker<C> {
        self.bypass = bypass;
        self
    }

    /// Makes the worker obey `handover` on the `guarded` ports: while the
    /// lease has run out they are not polled (frames wait in the ring for the
    /// hand-back), and frames received outside the window are discarded (the
    /// guard's kernel bypass had them). One clock read per poll round while a
    /// guard is connected.
    pub fn with_handover(mut self, handover: Arc<Handover>, guarded: &[PortId]) -> Worker<C> {
        self.handover = handover;
        self.guarded = self.ports.iter().map(|p| guarded.contains(&p.id())).collect();
        self.any_guarded = self.guarded.contains(&true);
        self
    }

    /// The worker's counters.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// The worker's ports (for their own counters after a run). Empty
    /// between poll rounds when the worker is watched (they are in its slot).
    pub fn ports(&self) -> &[Box<dyn Port>] {
        &self.ports
    }

    /// How many ports the worker polls.
    pub fn port_count(&self) -> usize {
        self.egress.len()
    }

    /// Puts the worker under a watchdog: its ports move into a slot shared
    /// with a bypass forwarder built here (same ports and forwarding `fwd`,
    /// same rules and bypass switch, [`BypassChains`] for chains: chain `c`
    /// is fail-closed when `fail_closed[c]`; the worker's bridges, whose MAC
    /// tables travel with the ports, and its clock). Hand the forwarder to
    /// [`crate::watchdog::Watchdog::spawn`].
    pub fn watched(
        mut self,
        fwd: impl Into<Forwarding>,
        fail_closed: Vec<bool>,
    ) -> Result<(Worker<C>, Forwarder), WorkerError> {
        let ports = std::mem::take(&mut self.ports);
        let cfg = WorkerConfig { monitor_budget: None, overload_bursts: None, ..self.cfg.clone() };
        // No port or rule counters: the worker mirrors the ports' own counters, which include
        // what the forwarder sent; rule counters stay with the worker.
        let stats = Arc::new(WorkerStats::new(0, 0));
        let chains = BypassChains::new(fail_closed);
        let mut f =
            Worker::new(cfg, ports, fwd, Arc::clone(&self.table), chains, stats)?.with_bypass(Arc::clone(&self.bypass));
        f.tx.bridges.clear();
        f.clock = self.clock;
        // The forwarder obeys the guard's hand-over window on the same ports: while the
        // kernel bypass carries them, it must not forward them too (duplicates).
        f.handover = Arc::clone(&self.handover);
        f.guarded = self.guarded.clone();
        f.any_guarded = self.any_guarded;
        let bridges = std::mem::take(&mut self.tx.bridges);
        let slot = Arc::new(PortSlot::new(std::mem::take(&mut f.ports), bridges));
        f.slot = Some(Arc::clone(&slot));
        f.yields = true;
        self.slot = Some(Arc::clone(&slot));
        Ok((self, Forwarder::new(slot, f)))
    }

    /// Takes the ports out of the slot (watched workers). A worker waits for
    /// them, its heartbeat beating (which tells the forwarder to stop); a
    /// forwarder gives up at once when the worker has them. True when the
    /// ports are here.
    #[inline]
    fn acquire(&mut self) -> bool {
        let Some(slot) = &self.slot else { return true };
        if slot.take(&mut self.ports, &mut self.tx.bridges) {
            return true;
        }
        if self.yields {
            return false;
        }
        while !slot.take(&mut self.ports, &mut self.tx.bridges) {
            beat(slot);
            std::thread::yield_now();
        }
        true
    }

    /// Puts the ports back into the slot (watched workers); a worker's
    /// heartbeat beats, so a forwarder engaged meanwhile leaves them alone.
    #[inline]
    fn release(&mut self) {
        if let Some(slot) = &self.slot {
            if !self.yields {
                beat(slot);
            }
            slot.put(&mut self.ports, &mut self.tx.bridges);
        }
    }

    /// The worker's chains (for their counters after a run).
    pub fn chains(&self) -> &C {
        &self.chains
    }

    /// Takes a newly published rule set, if there is one. Once per poll round.
    #[inline]
    fn refresh_rules(&mut self) {
        if self.table.generation() != self.generation {
            let p = self.table.load();
            self.rules = Arc::clone(&p.rules);
            self.cached = uses_flow_cache(&self.rules);
            self.generation = p.generation;
            self.cache.set_generation(p.generation);
            self.stats.generation.set(p.generation);
        }
    }

    /// One poll round over every owned port. Returns the packets received.
    pub fn poll(&mut self) -> usize {
        self.poll_watched().unwrap_or(0)
    }

    /// One poll round; `None` when it did not run because the other side
    /// of the worker's slot has the ports (a bypass forwarder's round).
    pub fn poll_watched(&mut self) -> Option<usize> {
        if let Some(slot) = &self.slot {
            if !self.yields {
                beat(slot);
            }
        }
        if !self.acquire() {
            return None;
        }
        self.refresh_rules();
        let bypass = self.bypass.is_on();
        let window = if self.any_guarded { self.handover.window() } else { Window::OPEN };
        // Past the lease, a guarded port's frames wait in its ring until the guard hands back.
        let lapsed = !window.is_open() && window.lapsed(wall_clock_ns());
        let mut total = 0;
        for i in 0..self.egress.len() {
            if lapsed && self.guarded[i] {
                continue;
            }
            let mut burst = Burst::new();
            let n = self.ports[i].rx_burst(&mut burst);
            if n == 0 {
                continue;
            }
            total += n;
            if self.guarded[i] && !window.is_open() && self.hold_back(&mut burst, window) {
                continue;
            }
            if bypass {
                self.bypass_burst(i, &mut burst);
            } else {
                let streak = if n >= self.cfg.burst { self.full_streak[i].saturating_add(1) } else { 0 };
                self.full_streak[i] = streak;
                let overloaded = self.cfg.overload_bursts.is_some_and(|k| streak >= k);
                self.process(i, &mut burst, overloaded);
            }
        }
        if total > 0 {
            for i in 0..self.tx.out.len() {
                if !self.tx.out[i].is_empty() {
                    self.transmit(i);
                }
            }
            self.chains.end_burst();
            self.stats.busy_polls.add(1);
        } else {
            self.stats.idle_polls.add(1);
        }
        self.iter = self.iter.wrapping_add(1);
        if self.iter & HOUSEKEEPING_MASK == 0 {
            self.mirror_port_stats();
            if total == 0 {
                self.flush_ports();
            }
            if self.iter & (HOUSEKEEPING_MASK << 4 | HOUSEKEEPING_MASK) == 0 {
                self.log_shedding();
            }
        }
        self.release();
        Some(total)
    }

    /// Classifies one received burst and stages the originals for transmission.
    ///
    /// Three passes over the burst: parse every packet's key; hash the keys
    /// and prefetch their flow-cache slots (or, for a rule set classified
    /// directly, classify the whole burst in one call); then decide each
    /// packet's fate. Splitting the passes lets the cache misses of the whole
    /// burst overlap, and keeps each loop small.
    /// With `overloaded`, the port has a backlog: chain work is shed.
    #[inline]
    fn process(&mut self, i: usize, burst: &mut Burst, overloaded: bool) {
        let st = &*self.stats;
        st.rx.add(burst.len() as u64);
        let mut any_bad = false;
        for (j, pkt) in burst.iter().enumerate() {
            self.bad[j] = parse_into(pkt.data(), pkt.meta.port, &mut self.keys[j]);
            any_bad |= self.bad[j].is_some();
        }
        let classify = !self.rules.is_empty();
        let cached = classify && self.cached;
        let mut hits = 0;
        if cached {
            for j in 0..burst.len() {
                let h = FlowCache::hash(&self.keys[j]);
                self.hashes[j] = h;
                self.cache.prefetch(h);
            }
        } else if classify {
            hits = self.rules.classify_burst(&self.keys[..burst.len()], &mut self.classified);
        }
        let egress = self.egress[i];
        if !cached && hits == 0 && !any_bad {
            // Nothing matched and everything parsed: the fates are all known.
            st.unmatched.add(burst.len() as u64);
            self.forward_all(i, egress, burst);
            return;
        }

        // Verdict pass: every packet's fate, decided in place; nothing moves yet.
        let mut unmatched = 0u64;
        let mut matched = 0u64;
        let mut uniform = true;
        for (j, pkt) in burst.iter().enumerate() {
            if let Some(reason) = self.bad[j] {
                st.malformed[reason as usize].add(1);
                if self.cfg.malformed == MalformedPolicy::Drop {
                    self.fates[j] = Fate::Drop(DropReason::Malformed);
                    uniform = false;
                    continue;
                }
            }
            let verdict = if cached {
                let rules = &self.rules;
                let rule =
                    self.cache.lookup_hashed(&self.keys[j], self.hashes[j], |k| rules.classify(k).map(|v| v.rule));
                rule.and_then(|r| rules.rules().get(r as usize).map(|x| (r, x.action)))
            } else if classify {
                self.classified[j].map(|v| (v.rule, v.action))
            } else {
                None
            };
            let Some((rule, action)) = verdict else {
                unmatched += 1;
                self.fates[j] = Fate::Forward;
                continue;
            };
            matched += 1;
            uniform = false;
            // Counted, and shown to the chain, under the rule's counter slot: its identity
            // across rule-set generations (rule ids change from one set to the next).
            let slot = self.rules.slot(rule);
            if let Some(rc) = st.rules.get(slot as usize) {
                rc.packets.add(1);
                rc.bytes.add(pkt.len() as u64);
            }
            self.fates[j] = match action {
                Action::Drop => Fate::Drop(DropReason::RuleDrop),
                Action::Chain(chain) => Fate::Chain(chain, slot),
            };
        }
        st.unmatched.add(unmatched);
        st.matched.add(matched);

        if uniform {
            // One bulk action: every packet of the burst goes the same way, unchanged.
            self.forward_all(i, egress, burst);
            return;
        }
        let now = self.burst_time(egress);
        for (j, pkt) in burst.drain(..).enumerate() {
            match self.fates[j] {
                Fate::Drop(reason) => st.drops[reason as usize].add(1),
                Fate::Forward if self.chained => {
                    // Behind a packet waiting for its chain: wait too, to keep the order.
                    self.held_by[self.held.len()] = None;
                    // Cannot fail: `held` has room for a whole burst.
                    let _ = self.held.try_push(pkt);
                }
                Fate::Forward => self.tx.forward(&mut self.ports, egress, i, pkt, st, now),
                Fate::Chain(chain, slot) => {
                    self.held_by[self.held.len()] = Some((chain, slot, j));
                    self.chained = true;
                    let _ = self.held.try_push(pkt);
                }
            }
        }
        if self.chained {
            self.chained = false;
            // Chains are where a stall is likeliest: a watched worker's ports wait in the slot
            // meanwhile, where its bypass forwarder can take them. (The forwarder's own chains
            // only say forward or drop: it keeps the ports for the whole round.)
            let hand_over = !self.yields;
            if hand_over {
                self.release();
            }
            self.run_chains(overloaded);
            if hand_over {
                self.acquire();
            }
            self.stage_held(i, egress, now);
        }
    }

    /// Runs the held packets' chains as one timed block, or sheds them
    /// (budget spent, port overloaded); fills `verdicts`.
    #[inline]
    fn run_chains(&mut self, overloaded: bool) {
        let st = &*self.stats;
        let t0 = Instant::now();
        let admitted = match &mut self.budget {
            Some(b) => b.admit(t0),
            None => true,
        };
        let shed = if overloaded {
            Some(&st.shed_overload)
        } else if !admitted {
            Some(&st.shed_monitor_budget)
        } else {
            None
        };
        let now_ns = wall_clock_ns();
        for (k, pkt) in self.held.iter().enumerate() {
            let Some((chain, rule, j)) = self.held_by[k] else {
                self.verdicts[k] = ChainVerdict::Forward;
                continue;
            };
            self.verdicts[k] = match shed {
                Some(counter) if self.chains.sheddable(chain) => {
                    counter.add(1);
                    ChainVerdict::Forward
                }
                _ => self.chains.run(chain, rule, pkt, &self.keys[j], now_ns),
            };
        }
        let spent = t0.elapsed();
        st.monitor_ns.add(spent.as_nanos() as u64);
        if let Some(b) = &mut self.budget {
            b.charge(spent);
        }
    }

    /// Stages the held originals (unmatched, or let through by their chain), in order.
    #[inline]
    fn stage_held(&mut self, i: usize, egress: Egress, now: u64) {
        let st = &*self.stats;
        for (k, pkt) in self.held.drain(..).enumerate() {
            if self.held_by[k].is_some() && self.verdicts[k] == ChainVerdict::Drop {
                st.drops[DropReason::ChainClosed as usize].add(1);
            } else {
                self.tx.forward(&mut self.ports, egress, i, pkt, st, now);
            }
        }
    }

    /// The time bridges learn with for a burst bound to `egress`; links need
    /// none, so they are spared the clock read.
    #[inline]
    fn burst_time(&self, egress: Egress) -> u64 {
        match egress {
            Egress::Bridge(_) => self.clock.elapsed().as_nanos() as u64,
            Egress::None | Egress::Link(_) => 0,
        }
    }

    /// Discards the frames of a burst received outside the hand-over window
    /// (counted as `standby`). Returns whether nothing is left.
    #[cold]
    fn hold_back(&mut self, burst: &mut Burst, window: Window) -> bool {
        let before = burst.len();
        burst.retain(|p| window.admits(p.meta.ts_ns));
        let held = (before - burst.len()) as u64;
        if held > 0 {
            self.stats.rx.add(held);
            self.stats.drops[DropReason::Standby as usize].add(held);
        }
        burst.is_empty()
    }

    /// Stages a received burst for transmission as if no rule matched any of
    /// it: no parsing, no classification, no chains (the bypass switch is on).
    fn bypass_burst(&mut self, i: usize, burst: &mut Burst) {
        let st = &*self.stats;
        let n = burst.len() as u64;
        st.rx.add(n);
        st.bypassed.add(n);
        self.forward_all(i, self.egress[i], burst);
    }

    /// Forwards a whole burst received on local port `i` as it is. Over a
    /// link the burst is transmitted at once, behind anything already staged
    /// for that port: one bulk action, no packet moved one by one. Through a
    /// bridge every frame is decided on its own.
    #[inline]
    fn forward_all(&mut self, i: usize, egress: Egress, burst: &mut Burst) {
        let st = &*self.stats;
        if let Egress::Link(e) = egress {
            if !self.tx.out[e].is_empty() {
                transmit(&mut self.tx.out[e], &mut *self.ports[e], st);
            }
            transmit(burst, &mut *self.ports[e], st);
            return;
        }
        let now = self.burst_time(egress);
        for pkt in burst.drain(..) {
            self.tx.forward(&mut self.ports, egress, i, pkt, st, now);
        }
    }

    /// Transmits what is staged for local port `i`.
    #[inline]
    fn transmit(&mut self, i: usize) {
        transmit(&mut self.tx.out[i], &mut *self.ports[i], &self.stats);
    }

    /// Logs when the worker starts shedding chain work and, a second or more
    /// later, when it has stopped: transitions only, so the log never floods.
    fn log_shedding(&mut self) {
        let st = &self.stats;
        let shed = st.shed_monitor_budget.get() + st.shed_overload.get();
        let grew = shed > self.shed_seen;
        self.shed_seen = shed;
        match self.shedding_since {
            None if grew => {
                let budget = self.cfg.monitor_budget.map_or("none".into(), |b| format!("{:.0}%", b * 100.0));
                log::warn!(
                    "worker {}: shedding chain work (monitoring budget {budget} spent, or a receive backlog): matched packets are forwarded unmonitored, counted as shed",
                    self.cfg.id
                );
                self.shedding_since = Some(Instant::now());
            }
            Some(t) if !grew && t.elapsed() >= std::time::Duration::from_secs(1) => {
                log::info!("worker {}: chains run on every matched packet again ({shed} shed so far)", self.cfg.id);
                self.shedding_since = None;
            }
            _ => {}
        }
    }

    /// Copies each port's own counters and link state, and the flow cache's
    /// counters, where control can read them; logs link changes.
    fn mirror_port_stats(&self) {
        self.stats.cache_hits.set(self.cache.hits());
        self.stats.cache_misses.set(self.cache.misses());
        for p in &self.ports {
            if let Some(pc) = self.stats.ports.get(p.id() as usize) {
                pc.mirror(&p.stats());
                // Link state costs a system call on Linux ports: every 16th housekeeping round.
                if self.iter & (HOUSEKEEPING_MASK << 4 | HOUSEKEEPING_MASK) != 0 && pc.link.get() != 0 {
                    continue;
                }
                if let Some(up) = p.link_state() {
                    let now = if up { LINK_UP } else { LINK_DOWN };
                    let before = pc.link.get();
                    if before != now {
                        if up {
                            log::info!("worker {}: port {}: link up", self.cfg.id, p.name());
                        } else {
                            log::warn!("worker {}: port {}: link down", self.cfg.id, p.name());
                        }
                        pc.link.set(now);
                    }
                }
            }
        }
    }

    /// Flushes every port's buffered output (capture writers).
    fn flush_ports(&mut self) {
        for p in &mut self.ports {
            if let Err(e) = p.flush() {
                log::warn!("worker {}: flushing port {}: {e}", self.cfg.id, p.name());
            }
        }
    }

    /// Polls until `stop` is set, then drains: staged packets are sent and
    /// ports flushed.
    pub fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            self.poll();
        }
        self.finish();
    }

    /// Polls until every port's input is exhausted (capture files read to the
    /// end) and nothing more arrives, or until `stop` is set. For offline replay.
    pub fn run_to_end(&mut self, stop: &AtomicBool) {
        loop {
            let n = self.poll();
            let exhausted = self.slot.is_none() && self.ports.iter().all(|p| p.rx_exhausted());
            if stop.load(Ordering::Relaxed) || (n == 0 && exhausted) {
                break;
            }
        }
        self.finish();
    }

    /// Sends what is staged and flushes the ports.
    pub fn finish(&mut self) {
        self.acquire();
        for i in 0..self.tx.out.len() {
            if !self.tx.out[i].is_empty() {
                self.transmit(i);
            }
        }
        self.chains.end_burst();
        self.flush_ports();
        self.mirror_port_stats();
        self.release();
    }

    /// The generation of the rule set this worker runs.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// What the verdict pass decided for one packet of a burst.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// Forward the original (no rule matched, or the rule's chain comes later).
    Forward,
    /// Drop it, counted under this reason.
    Drop(DropReason),
    /// Run this chain on it, counted under this rule slot; the original waits.
    Chain(ChainId, RuleId),
}

/// Packets staged for transmission, per local port, and the bridges whose
/// decisions fill some of those stages. One struct so that forwarding can
/// borrow both while the worker's ports and counters are borrowed too.
struct Staging {
    out: Vec<Burst>,
    bridges: Vec<Bridge>,
}

impl Staging {
    /// Stages an original (received on local port `ingress`) where forwarding
    /// sends it. A flood stages copies from the bridge's pool for all egress
    /// ports but the last, which gets the original; a copy that cannot be made
    /// is counted and skipped, never waited for.
    #[inline(always)]
    fn forward(
        &mut self,
        ports: &mut [Box<dyn Port>],
        egress: Egress,
        ingress: usize,
        pkt: Packet,
        st: &WorkerStats,
        now: u64,
    ) {
        match egress {
            // A link is the common case and a few instructions: inline, no call per packet.
            Egress::Link(e) => stage(&mut self.out, e, ports, pkt, st),
            Egress::None => st.drops[DropReason::NoEgress as usize].add(1),
            Egress::Bridge(b) => self.bridge(ports, b, ingress, pkt, st, now),
        }
    }

    /// [`Staging::forward`] through bridge `b`: learn, then unicast, drop or flood.
    fn bridge(
        &mut self,
        ports: &mut [Box<dyn Port>],
        b: usize,
        ingress: usize,
        pkt: Packet,
        st: &WorkerStats,
        now: u64,
    ) {
        let bridge = &mut self.bridges[b];
        match bridge.decide(pkt.data(), ingress, now, &st.bridge) {
            Decision::Unicast(e) => stage(&mut self.out, e, ports, pkt, st),
            Decision::Drop(reason) => st.drops[reason as usize].add(1),
            Decision::Flood => {
                st.bridge.flooded.add(1);
                // A bridge has at least two ports, so another one exists.
                let Some(last) = bridge.ports().iter().rev().copied().find(|&p| p != ingress) else {
                    return st.drops[DropReason::NoEgress as usize].add(1);
                };
                let pool = bridge.pool();
                for &e in bridge.ports() {
                    if e == ingress || e == last {
                        continue;
                    }
                    if pkt.len() > pool.buf_size() {
                        st.bridge.flood_too_big.add(1);
                        continue;
                    }
                    let Some(mut copy) = pool.alloc() else {
                        st.bridge.flood_no_buffer.add(1);
                        continue;
                    };
                    copy.fill_from(pkt.data());
                    copy.meta = pkt.meta;
                    st.bridge.flood_copies.add(1);
                    stage(&mut self.out, e, ports, copy, st);
                }
                stage(&mut self.out, last, ports, pkt, st);
            }
        }
    }
}

/// Stages a packet for local port `e`, transmitting first if the stage is full.
#[inline(always)]
fn stage(out: &mut [Burst], e: usize, ports: &mut [Box<dyn Port>], pkt: Packet, st: &WorkerStats) {
    if out[e].is_full() {
        transmit(&mut out[e], &mut *ports[e], st);
    }
    // Cannot fail: the stage was just emptied if it was full.
    let _ = out[e].try_push(pkt);
}

#[inline]
fn transmit(out: &mut Burst, port: &mut dyn Port, st: &WorkerStats) {
    let n = out.len();
    let sent = port.tx_burst(out);
    st.tx.add(sent as u64);
    if sent < n {
        st.drops[DropReason::TxFull as usize].add((n - sent) as u64);
    }
}

/// Rule sets of at most this many tuples (distinct masks) skip the flow
/// cache. Classifying costs one probe per tuple into tables small enough to
/// stay in L1; a flow-cache lookup costs a hash and two slot reads which,
/// with as many flows as a host carries, come from L3 or memory (measured:
/// `cargo bench -p benches --bench classify -- direct`, docs/PERFORMANCE.md).
pub const DIRECT_TUPLES: usize = 2;

/// Whether a worker should look `rules` up through its flow cache.
#[inline]
fn uses_flow_cache(rules: &RuleSet) -> bool {
    rules.tuple_count() > DIRECT_TUPLES
}

/// Moves a watched worker's heartbeat on (only the worker writes it).
#[inline]
fn beat(slot: &PortSlot) {
    slot.heartbeat.store(slot.heartbeat.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// Nanoseconds since the Unix epoch (vDSO clock read: once per burst at most).
#[inline]
pub fn wall_clock_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
