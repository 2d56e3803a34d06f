//! The rules of a running dataplane, and the one entry point that changes them.
//!
//! Every rule change — the control API's add, delete and replace, a reload
//! of the YAML file, the tests — goes through [`RuleBook::apply`]: it edits a
//! copy of the running rules, compiles a new immutable [`RuleSet`], gives each
//! rule its counter slot, publishes the set (RCU style, see
//! [`dataplane::publish`]) and waits, with a bound, until every worker runs
//! it. Changes are serialised; workers never wait for control.
//!
//! **Counter slots.** Workers count a rule's packets in a per-worker array
//! indexed by the rule's *counter slot*, not by its rule id (ids change from
//! one set to the next). The book gives a rule a slot when its name first
//! appears and keeps it for as long as a rule of that name exists, so the
//! counters of a rule that keeps its name survive any update, even when its
//! match or action changes. Each worker's array holds
//! [`crate::compile::ControlPlan::counter_slots`] slots, allocated at start:
//! nothing is allocated, locked or shared on the hot path, and each counter
//! keeps its single writer. A removed rule's slot is retired with the
//! generation that removed it and only reused once every worker runs that
//! generation or a later one (no worker can count under the old rule any
//! more); never-used slots are handed out first, retired ones oldest first.
//! A reused slot's counters are not reset (control never writes worker
//! counters): the book records their values at reuse and subtracts them.

use crate::config::ConfigError;
use chains::sink::Names;
use dataplane::classifier::{Rule, RuleError, RuleSet};
use dataplane::publish::RuleTable;
use dataplane::stats::WorkerStats;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long [`RuleBook::apply`] waits for every worker to take a new set.
/// Workers take it at their next poll (microseconds); only a stalled worker
/// makes the wait run out, and then the set is still published.
pub const APPLY_WAIT: Duration = Duration::from_secs(5);

/// A change to the running rules.
#[derive(Debug, Clone)]
pub enum RuleOp {
    /// Add a rule whose name is new.
    Add(Rule),
    /// Add a rule, or replace the one of the same name.
    Put(Rule),
    /// Remove the rule of this name.
    Delete(String),
    /// Replace every rule (an empty list removes them all).
    ReplaceAll(Vec<Rule>),
}

/// Why a change was refused. The running rules are unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// `Add` of a name that exists.
    #[error("rule `{0}` already exists (replace it, or delete it first)")]
    Exists(String),
    /// `Delete` of a name that does not exist.
    #[error("there is no rule `{0}`")]
    NotFound(String),
    /// The new set does not compile (duplicate names, overlaps, unmatchable rules).
    #[error("{0}")]
    Invalid(#[from] RuleError),
    /// A rule or a file that did not parse or does not fit the running configuration.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// More rules than `control.max_rules`.
    #[error("{count} rules is more than control.max_rules ({max})")]
    TooMany {
        /// Rules in the refused set.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Every counter slot is taken: a worker still runs an old generation,
    /// whose rules keep their slots.
    #[error("no free counter slot for {wanted} new rule(s): worker(s) {stalled:?} still run generation {oldest} or older; retry when they catch up")]
    SlotsExhausted {
        /// New rule names in the refused set.
        wanted: usize,
        /// Workers behind.
        stalled: Vec<usize>,
        /// The oldest generation a worker runs.
        oldest: u64,
    },
    /// A reload that changes more than the rules.
    #[error("{0}")]
    RestartRequired(String),
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Generation of the published set.
    pub generation: u64,
    /// Rules in it.
    pub rules: usize,
    /// Names added, removed, and kept with a changed definition.
    pub added: usize,
    /// Rules removed.
    pub removed: usize,
    /// Rules whose definition changed under the same name.
    pub changed: usize,
    /// From the call until every worker ran the new set (or the wait ran out).
    pub latency: Duration,
    /// From publication until every worker ran the new set.
    pub propagation: Duration,
    /// Workers that had not taken the set when the wait ran out (empty: all did).
    pub pending: Vec<usize>,
}

/// Counter-slot bookkeeping (see the module docs).
struct Slots {
    by_name: HashMap<String, u32>,
    /// Names by slot, as the sinks see them.
    names: Vec<String>,
    /// Slots below this were handed out at least once.
    next: u32,
    /// Reusable slots, oldest first.
    free: VecDeque<u32>,
    /// Slots of removed rules, with the generation that removed them.
    retired: VecDeque<(u64, u32)>,
    /// Per reused slot, the counts (packets, bytes) each worker had in it when it was reused.
    base: HashMap<u32, Vec<(u64, u64)>>,
    capacity: u32,
}

/// The running rules: the table workers read, their counter slots, and the
/// serialised [`RuleBook::apply`].
pub struct RuleBook {
    table: Arc<RuleTable>,
    workers: Vec<Arc<WorkerStats>>,
    names: Arc<Names>,
    max_rules: usize,
    slots: Mutex<Slots>,
    /// Held through a whole change: one publisher at a time. Apart from the
    /// slots' lock, so that counters can be read while a change waits for the workers.
    serial: Mutex<()>,
}

impl RuleBook {
    /// The book of a dataplane started with `table`'s rules (their slots are
    /// their ids), counting into `workers`, whose rule counter arrays have
    /// `capacity` slots; `names.rules` is where sinks look rule names up.
    pub fn new(
        table: Arc<RuleTable>,
        workers: Vec<Arc<WorkerStats>>,
        names: Arc<Names>,
        max_rules: usize,
        capacity: usize,
    ) -> RuleBook {
        let set = table.load();
        let mut slots = Slots {
            by_name: HashMap::new(),
            names: Vec::new(),
            next: 0,
            free: VecDeque::new(),
            retired: VecDeque::new(),
            base: HashMap::new(),
            capacity: capacity as u32,
        };
        for (id, r) in set.rules.rules().iter().enumerate() {
            let slot = set.rules.slot(id as u32);
            slots.by_name.insert(r.name.clone(), slot);
            if slots.names.len() <= slot as usize {
                slots.names.resize(slot as usize + 1, String::new());
            }
            slots.names[slot as usize] = r.name.clone();
            slots.next = slots.next.max(slot + 1);
        }
        names.rules.set(slots.names.clone());
        RuleBook { table, workers, names, max_rules, slots: Mutex::new(slots), serial: Mutex::new(()) }
    }

    /// The table workers read.
    pub fn table(&self) -> &Arc<RuleTable> {
        &self.table
    }

    /// The most rules a set may hold.
    pub fn max_rules(&self) -> usize {
        self.max_rules
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // A panic while holding the lock leaves consistent data (every update is whole).
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The oldest generation any worker runs, and the workers running it.
    fn oldest(&self) -> (u64, Vec<usize>) {
        let gens: Vec<u64> = self.workers.iter().map(|w| w.generation.get()).collect();
        let oldest = gens.iter().copied().min().unwrap_or(u64::MAX);
        (oldest, gens.iter().enumerate().filter(|(_, &g)| g == oldest).map(|(i, _)| i).collect())
    }

    /// Applies one change: validates it, publishes the new set and waits
    /// (at most [`APPLY_WAIT`]) until every worker runs it.
    pub fn apply(&self, op: RuleOp) -> Result<Applied, ApplyError> {
        self.apply_with_wait(op, APPLY_WAIT)
    }

    /// [`RuleBook::apply`] with a chosen wait.
    pub fn apply_with_wait(&self, op: RuleOp, wait: Duration) -> Result<Applied, ApplyError> {
        let t0 = Instant::now();
        let _serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let mut slots = self.lock();
        let current = self.table.load();
        let old = current.rules.rules();
        let rules: Vec<Rule> = match op {
            RuleOp::Add(r) => {
                if current.rules.rule_id(&r.name).is_some() {
                    return Err(ApplyError::Exists(r.name));
                }
                old.iter().cloned().chain(std::iter::once(r)).collect()
            }
            RuleOp::Put(r) => match current.rules.rule_id(&r.name) {
                Some(id) => {
                    let mut v = old.to_vec();
                    v[id as usize] = r;
                    v
                }
                None => old.iter().cloned().chain(std::iter::once(r)).collect(),
            },
            RuleOp::Delete(name) => {
                if current.rules.rule_id(&name).is_none() {
                    return Err(ApplyError::NotFound(name));
                }
                old.iter().filter(|r| r.name != name).cloned().collect()
            }
            RuleOp::ReplaceAll(v) => v,
        };
        if rules.len() > self.max_rules {
            return Err(ApplyError::TooMany { count: rules.len(), max: self.max_rules });
        }
        let set = RuleSet::new(rules)?;

        // Slots: released ones first become free, then new names take slots.
        let (oldest, _) = self.oldest();
        while let Some(&(g, s)) = slots.retired.front() {
            if g > oldest {
                break;
            }
            slots.retired.pop_front();
            slots.free.push_back(s);
        }
        let fresh: Vec<&str> =
            set.rules().iter().map(|r| r.name.as_str()).filter(|n| !slots.by_name.contains_key(*n)).collect();
        let available = (slots.capacity - slots.next) as usize + slots.free.len();
        if fresh.len() > available {
            let (oldest, stalled) = self.oldest();
            return Err(ApplyError::SlotsExhausted { wanted: fresh.len(), stalled, oldest });
        }
        let removed: Vec<String> =
            old.iter().filter(|r| set.rule_id(&r.name).is_none()).map(|r| r.name.clone()).collect();
        let changed = set
            .rules()
            .iter()
            .filter(|r| current.rules.rule_id(&r.name).is_some_and(|id| old[id as usize] != **r))
            .count();
        let added = fresh.len();
        for name in fresh {
            let slot = if slots.next < slots.capacity {
                slots.next += 1;
                slots.next - 1
            } else {
                // Checked above: a freed slot is there. No worker counts in it any more.
                let Some(s) = slots.free.pop_front() else { break };
                let counts = self.workers.iter().map(|w| slot_counts(w, s)).collect();
                slots.base.insert(s, counts);
                s
            };
            slots.by_name.insert(name.to_string(), slot);
            if slots.names.len() <= slot as usize {
                slots.names.resize(slot as usize + 1, String::new());
            }
            slots.names[slot as usize] = name.to_string();
        }
        let set = set.with_slots(|r| slots.by_name.get(&r.name).copied().unwrap_or(u32::MAX));
        if added > 0 {
            // Before publication: a copy made under a new slot must find its name.
            self.names.rules.set(slots.names.clone());
        }
        let count = set.len();
        let published = Instant::now();
        let generation = self.table.publish(Arc::new(set));
        for name in removed.iter() {
            if let Some(s) = slots.by_name.remove(name) {
                slots.retired.push_back((generation, s));
            }
        }
        drop(slots);
        let deadline = published + wait;
        let pending = loop {
            let behind: Vec<usize> =
                (0..self.workers.len()).filter(|&i| self.workers[i].generation.get() < generation).collect();
            if behind.is_empty() || Instant::now() >= deadline {
                break behind;
            }
            std::thread::yield_now();
        };
        let done = Instant::now();
        Ok(Applied {
            generation,
            rules: count,
            added,
            removed: removed.len(),
            changed,
            latency: done - t0,
            propagation: done - published,
            pending,
        })
    }

    /// Each running rule's name and its (packets, bytes) summed over workers,
    /// in rule-id order.
    pub fn counts(&self) -> Vec<(String, u64, u64)> {
        let slots = self.lock();
        let set = self.table.load();
        set.rules
            .rules()
            .iter()
            .enumerate()
            .map(|(id, r)| {
                let s = set.rules.slot(id as u32);
                let base = slots.base.get(&s);
                let (mut p, mut b) = (0u64, 0u64);
                for (i, w) in self.workers.iter().enumerate() {
                    let (wp, wb) = slot_counts(w, s);
                    let (bp, bb) = base.and_then(|v| v.get(i)).copied().unwrap_or((0, 0));
                    p += wp.wrapping_sub(bp);
                    b += wb.wrapping_sub(bb);
                }
                (r.name.clone(), p, b)
            })
            .collect()
    }
}

/// What worker `w` counted in slot `s`.
fn slot_counts(w: &WorkerStats, s: u32) -> (u64, u64) {
    w.rules.get(s as usize).map_or((0, 0), |c| (c.packets.get(), c.bytes.get()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::classifier::{Action, Match};

    fn rule(name: &str, priority: u32) -> Rule {
        Rule { name: name.into(), priority, matches: Match::default(), symmetric: false, action: Action::Drop }
    }

    fn counts(b: &RuleBook) -> Vec<(String, u64)> {
        b.counts().into_iter().map(|(n, p, _)| (n, p)).collect()
    }

    /// Control's view of one worker that takes every published set at once.
    fn catch_up(b: &RuleBook, w: &WorkerStats) {
        w.generation.set(b.table().generation());
    }

    #[test]
    fn counters_follow_names_and_reused_slots_start_from_zero() {
        let table = RuleTable::new(Arc::new(RuleSet::new(vec![rule("a", 1), rule("b", 2)]).unwrap()));
        let w = Arc::new(WorkerStats::new(0, 4));
        w.generation.set(1);
        let names = Arc::new(Names::default());
        let book = RuleBook::new(Arc::clone(&table), vec![Arc::clone(&w)], Arc::clone(&names), 3, 4);
        w.rules[0].packets.add(5);
        w.rules[1].packets.add(7);
        assert_eq!(counts(&book), [("a".into(), 5), ("b".into(), 7)]);

        // `a` changes but keeps its name and counters; `b` goes; `c` is new.
        let r = book.apply_with_wait(RuleOp::ReplaceAll(vec![rule("a", 9), rule("c", 2)]), Duration::ZERO).unwrap();
        assert_eq!((r.added, r.removed, r.changed, r.pending), (1, 1, 1, vec![0]));
        assert_eq!(counts(&book), [("a".into(), 5), ("c".into(), 0)]);
        assert_eq!(*names.rules.get(), ["a", "b", "c"], "b's name stays until its slot is reused");
        // The worker has not left generation 1: b's slot is not free, and with slot 3 taken there is none.
        book.apply_with_wait(RuleOp::Add(rule("d", 4)), Duration::ZERO).unwrap();
        let e = book.apply_with_wait(RuleOp::Put(rule("e", 5)), Duration::ZERO).unwrap_err();
        assert!(matches!(e, ApplyError::TooMany { .. } | ApplyError::SlotsExhausted { .. }), "{e}");
        book.apply_with_wait(RuleOp::Delete("d".into()), Duration::ZERO).unwrap();
        let e = book.apply_with_wait(RuleOp::Add(rule("e", 5)), Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("worker(s) [0] still run generation 1"), "{e}");
        // Once it runs the latest set, b's slot (oldest retired first) is reused, from zero.
        catch_up(&book, &w);
        book.apply_with_wait(RuleOp::Add(rule("e", 5)), Duration::ZERO).unwrap();
        assert_eq!(counts(&book), [("a".into(), 5), ("c".into(), 0), ("e".into(), 0)]);
        assert_eq!(names.rules.get()[1], "e");
        w.rules[1].packets.add(2);
        assert_eq!(counts(&book)[2], ("e".into(), 2));
        // Errors leave everything as it was.
        let g = table.generation();
        assert!(matches!(book.apply(RuleOp::Add(rule("a", 1))), Err(ApplyError::Exists(_))));
        assert!(matches!(book.apply(RuleOp::Delete("zz".into())), Err(ApplyError::NotFound(_))));
        let dup = RuleOp::ReplaceAll(vec![rule("x", 1), rule("x", 2)]);
        assert!(matches!(book.apply(dup), Err(ApplyError::Invalid(_))));
        assert_eq!(table.generation(), g);
    }
}
