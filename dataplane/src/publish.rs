//! Publication of rule sets to workers, RCU style.
//!
//! Control builds a new immutable [`RuleSet`] and [`RuleTable::publish`]es
//! it; each worker compares [`RuleTable::generation`] with its own once per
//! poll (one atomic load) and, when it changed, takes the new set. Workers
//! never wait for control and control never waits for workers; a packet is
//! classified entirely by the old set or entirely by the new one.

use crate::classifier::RuleSet;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A rule set with the generation number it was published as.
pub struct Published {
    /// The rules.
    pub rules: Arc<RuleSet>,
    /// Their generation (1 for the first set, +1 per publication).
    pub generation: u64,
}

/// The currently published rule set and its generation number.
pub struct RuleTable {
    current: ArcSwap<Published>,
    /// A copy of `current`'s generation, for the cheap per-poll check.
    generation: AtomicU64,
}

impl RuleTable {
    /// A table publishing `rules` as generation 1.
    pub fn new(rules: Arc<RuleSet>) -> Arc<RuleTable> {
        Arc::new(RuleTable {
            current: ArcSwap::from_pointee(Published { rules, generation: 1 }),
            generation: AtomicU64::new(1),
        })
    }

    /// Publishes a new rule set; returns its generation. Publications are
    /// serialised by the caller (control has one publisher).
    pub fn publish(&self, rules: Arc<RuleSet>) -> u64 {
        let generation = self.current.load().generation + 1;
        self.current.store(Arc::new(Published { rules, generation }));
        // Bumped after the store: a worker that sees the new number finds the new set.
        self.generation.store(generation, Ordering::Release);
        generation
    }

    /// The generation of the latest published set.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The latest published set and its generation, read together.
    pub fn load(&self) -> Arc<Published> {
        self.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_count_publications_and_travel_with_their_set() {
        let t = RuleTable::new(Arc::new(RuleSet::empty()));
        assert_eq!((t.generation(), t.load().generation), (1, 1));
        let set = Arc::new(RuleSet::empty());
        assert_eq!(t.publish(Arc::clone(&set)), 2);
        let p = t.load();
        assert_eq!((t.generation(), p.generation), (2, 2));
        assert!(Arc::ptr_eq(&p.rules, &set));
    }
}
