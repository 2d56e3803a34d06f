//! `stall` (test builds only, cargo feature `chaos`): stalls the worker once,
//! to provoke the worker watchdog in end-to-end tests. Never in a default
//! build: without the feature the configuration refuses the stage.
//!
//! Arguments: `after` (the stage's N-th packet in this worker stalls it,
//! 1-based) and `ms` (how long). The packet itself goes on unchanged when
//! the stall ends. Counters: `input`, `output` (every packet), nothing shed.

use super::{CopyPlan, StageCounters, StageIn};
use std::time::Duration;

/// One worker's stall stage.
pub struct Stall {
    after: u64,
    pause: Duration,
    seen: u64,
}

impl Stall {
    /// Stalls for `ms` milliseconds at the `after`-th packet.
    pub fn new(after: u64, ms: u64) -> Stall {
        Stall { after: after.max(1), pause: Duration::from_millis(ms), seen: 0 }
    }

    /// Counts the packet; sleeps on the `after`-th.
    pub fn process(&mut self, _: &StageIn<'_>, _: &mut CopyPlan, c: &StageCounters) {
        c.input.add(1);
        self.seen += 1;
        if self.seen == self.after {
            log::warn!("stall stage: stalling this worker for {} ms (chaos test)", self.pause.as_millis());
            std::thread::sleep(self.pause);
        }
        c.output.add(1);
    }
}
