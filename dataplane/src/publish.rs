//! Publication of rule sets to workers, RCU style.
//!
//! Control builds a new immutable [`RuleSet`] and [`RuleTable::publish`]es
//! it; each worker compares [`RuleTable::generation`] with its own once per
//! poll (one relaxed-cost atomic load) and, when it changed, takes the new
//! set. Workers never wait for control and control never waits for workers;
//! a packet is classified entirely by the old set or entirely by the new one.

use crate::classifier::RuleSet;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The currently published rule set and its generation number.
pub struct RuleTable {
    current: ArcSwap<RuleSet>,
    generation: AtomicU64,
}

impl RuleTable {
    /// A table publishing `rules` as generation 1.
    pub fn new(rules: Arc<RuleSet>) -> Arc<RuleTable> {
        Arc::new(RuleTable { current: ArcSwap::new(rules), generation: AtomicU64::new(1) })
    }

    /// Publishes a new rule set; returns its generation.
    pub fn publish(&self, rules: Arc<RuleSet>) -> u64 {
        self.current.store(rules);
        // Bumped after the store: a worker that sees the new number loads the new set.
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The generation of the latest published set.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The latest published set.
    pub fn load(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }
}
