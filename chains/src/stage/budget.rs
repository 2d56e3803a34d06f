//! PLACEHOLDER (being written): `budget`.
use super::{CopyPlan, StageCounters, StageIn};
/// Runtime form of `budget`.
pub struct Budget;
impl Budget {
    /// Caps for the whole chain, `share` = number of workers splitting them.
    pub fn new(_pps: Option<u64>, _bps: Option<u64>, _share: u32) -> Budget { Budget }
    /// Decides.
    #[inline]
    pub fn process(&mut self, _: &StageIn<'_>, _: &mut CopyPlan, _: &StageCounters) {}
}
