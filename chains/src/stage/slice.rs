//! `slice`: cut copies to a snap length; the original is untouched and the
//! copy keeps the original's length as its wire length.
//!
//! Arguments: `snaplen` (bytes, at least 14). Counters: `input`, `output`.
//! Sheds nothing. O(1) per packet.

use super::{CopyPlan, StageCounters, StageIn};

/// The runtime form of a `slice` stage.
pub struct Slice {
    snaplen: u32,
}

impl Slice {
    /// A stage keeping at most `snaplen` bytes.
    pub fn new(snaplen: u32) -> Slice {
        Slice { snaplen }
    }

    /// Lowers the plan's snap length.
    #[inline]
    pub fn process(&mut self, _: &StageIn<'_>, plan: &mut CopyPlan, c: &StageCounters) {
        c.input.add(1);
        plan.snaplen = plan.snaplen.min(self.snaplen);
        c.output.add(1);
    }
}
