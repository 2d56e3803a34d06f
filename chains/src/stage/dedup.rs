//! PLACEHOLDER (being written): `dedup`.
use super::{CopyPlan, StageCounters, StageIn};
/// Runtime form of `dedup`.
pub struct Dedup;
impl Dedup {
    /// Window in ns.
    pub fn new(_window_ns: u64) -> Dedup { Dedup }
    /// Decides.
    #[inline]
    pub fn process(&mut self, _: &StageIn<'_>, _: &mut CopyPlan, _: &StageCounters) {}
}
