//! PLACEHOLDER (being written): `sample`.
use super::{CopyPlan, StageCounters, StageIn};
/// Runtime form of `sample`.
pub struct Sample;
impl Sample {
    /// `one_in`, per flow or per packet, seed, this worker's index.
    pub fn new(_one_in: u32, _per_flow: bool, _seed: u64, _worker: usize) -> Sample { Sample }
    /// Decides.
    #[inline]
    pub fn process(&mut self, _: &StageIn<'_>, _: &mut CopyPlan, _: &StageCounters) {}
}
