//! PLACEHOLDER (being written): `strip`.
use super::{CopyPlan, StageCounters, StageIn, StripLayer};
/// Runtime form of `strip`.
pub struct Strip;
impl Strip {
    /// Layers, outermost first.
    pub fn new(_layers: Vec<StripLayer>) -> Strip { Strip }
    /// Plans.
    #[inline]
    pub fn process(&mut self, _: &StageIn<'_>, _: &mut CopyPlan, _: &StageCounters) {}
}
