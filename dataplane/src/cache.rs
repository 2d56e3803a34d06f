//! The per-worker exact-match flow cache in front of the classifier.
//!
//! Most packets belong to a flow the worker has already seen, so an exact
//! hash lookup on the whole [`FlowKey`] answers them without the tuple-space
//! search. Each worker owns its cache (no sharing, no locks). Entries carry
//! the generation of the rule set that produced them: after control publishes
//! a new rule set, old entries are misses and are overwritten in place, so a
//! reload needs no cross-thread invalidation.

use crate::classifier::Verdict;
use crate::flow::FlowKey;
use hashbrown::HashMap;

/// A cached classification.
#[derive(Clone, Copy, Debug)]
struct Entry {
    generation: u64,
    verdict: Option<Verdict>,
}

/// Exact-match cache from flow key to verdict, bounded and allocation-free
/// after construction.
///
/// "No rule matched" is cached too: unmatched traffic is the bulk of what a
/// steering node forwards, and it must not pay a full classification per packet.
///
/// When the cache is full and a new flow arrives, the whole cache is cleared
/// (`clear` keeps the allocation). hashbrown has no O(1) way to pick a victim,
/// and an O(capacity) clear amortised over `capacity` misses costs less per
/// miss than the classification the miss already pays; it also throws out the
/// one-packet flows of a scan in one go. Live flows come back after one miss each.
#[derive(Debug)]
pub struct FlowCache {
    map: HashMap<FlowKey, Entry>,
    capacity: usize,
    hits: u64,
    misses: u64,
}

impl FlowCache {
    /// A cache holding up to `capacity` flows (at least one), allocated now.
    pub fn new(capacity: usize) -> FlowCache {
        let capacity = capacity.max(1);
        FlowCache { map: HashMap::with_capacity(capacity), capacity, hits: 0, misses: 0 }
    }

    /// The verdict for `key` under rule-set `generation`: from the cache when
    /// an entry of this generation exists, otherwise from `classify`, which is
    /// then cached. Never allocates, never panics.
    #[inline]
    pub fn lookup(
        &mut self,
        key: &FlowKey,
        generation: u64,
        classify: impl FnOnce(&FlowKey) -> Option<Verdict>,
    ) -> Option<Verdict> {
        if let Some(e) = self.map.get_mut(key) {
            if e.generation == generation {
                self.hits += 1;
                return e.verdict;
            }
            // Stale: computed by an older rule set. Overwrite in place.
            let verdict = classify(key);
            *e = Entry { generation, verdict };
            self.misses += 1;
            return verdict;
        }
        let verdict = classify(key);
        self.misses += 1;
        if self.map.len() >= self.capacity {
            self.map.clear();
        }
        self.map.insert(*key, Entry { generation, verdict });
        verdict
    }

    /// Number of cached flows (of any generation).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The most flows the cache holds before it is cleared.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Lookups that ran the classifier.
    pub fn misses(&self) -> u64 {
        self.misses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::Action;

    fn key(port: u16) -> FlowKey {
        FlowKey { src_port: port, ip_version: 4, ..FlowKey::default() }
    }

    fn verdict(rule: u32) -> Option<Verdict> {
        Some(Verdict { rule, action: Action::Drop })
    }

    #[test]
    fn counts_hits_and_misses_and_caches_no_match() {
        let mut c = FlowCache::new(16);
        assert_eq!(c.lookup(&key(1), 1, |_| verdict(7)), verdict(7));
        assert_eq!(c.lookup(&key(1), 1, |_| panic!("must hit")), verdict(7));
        assert_eq!(c.lookup(&key(2), 1, |_| None), None);
        assert_eq!(c.lookup(&key(2), 1, |_| panic!("a None verdict must be cached")), None);
        assert_eq!((c.hits(), c.misses(), c.len()), (2, 2, 2));
    }

    #[test]
    fn new_generation_invalidates_entries() {
        let mut c = FlowCache::new(16);
        c.lookup(&key(1), 1, |_| verdict(1));
        assert_eq!(c.lookup(&key(1), 2, |_| verdict(2)), verdict(2));
        assert_eq!(c.lookup(&key(1), 2, |_| panic!("must hit")), verdict(2));
        assert_eq!((c.hits(), c.misses(), c.len()), (1, 2, 1));
    }

    #[test]
    fn stays_within_capacity_without_reallocating() {
        let mut c = FlowCache::new(100);
        let allocated = c.map.capacity();
        for p in 0..10_000u16 {
            c.lookup(&key(p), 1, |_| None);
            assert!(c.len() <= 100);
            assert_eq!(c.map.capacity(), allocated);
        }
        assert_eq!(c.misses(), 10_000);
        // The most recent flow survives a clear.
        assert_eq!(c.lookup(&key(9_999), 1, |_| panic!("must hit")), None);
    }
}
