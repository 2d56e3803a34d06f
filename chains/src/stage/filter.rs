//! PLACEHOLDER (being written): `filter`.
use super::{CopyPlan, StageCounters, StageIn};
use dataplane::classifier::Match;
/// Runtime form of `filter`.
pub struct Filter;
impl Filter {
    /// Match fields as in rules.
    pub fn new(_m: Match) -> Filter { Filter }
    /// Decides.
    #[inline]
    pub fn process(&mut self, _: &StageIn<'_>, _: &mut CopyPlan, _: &StageCounters) {}
}
