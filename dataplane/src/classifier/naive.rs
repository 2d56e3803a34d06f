//! The reference classifier: a linear scan over [`Match::matches`].
//!
//! Too slow for the dataplane, obviously right: the proptests and the benches
//! compare the compiled [`super::RuleSet`] against it.

use super::{Rule, RuleId, Verdict};
use crate::flow::FlowKey;

/// The verdict of the highest-priority rule matching `key` (a symmetric rule
/// also matches the reversed key); the first such rule on a tie, which a valid
/// rule set never has.
pub fn classify(rules: &[Rule], key: &FlowKey) -> Option<Verdict> {
    let reversed = key.reversed();
    let mut best: Option<(u32, Verdict)> = None;
    for (i, r) in rules.iter().enumerate() {
        let hit = r.matches.matches(key) || (r.symmetric && r.matches.matches(&reversed));
        if hit && !matches!(best, Some((p, _)) if p >= r.priority) {
            best = Some((r.priority, Verdict { rule: i as RuleId, action: r.action }));
        }
    }
    best.map(|(_, v)| v)
}
