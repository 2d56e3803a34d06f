//! Chain stages, one file each. A stage's doc lists its arguments, its
//! counters and its drop reasons, and promises bounded work per packet.

pub mod copy;

use dataplane::stats::Counter;

/// Counters every stage keeps, per worker.
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct StageCounters {
    /// Packets the stage was shown.
    pub input: Counter,
    /// Copies the stage passed on (for `copy`: copies enqueued to a sink).
    pub output: Counter,
    /// Copies shed on purpose (sampling, budgets).
    pub shed: Counter,
    /// Copies lost for lack of room (no copy buffer, sink queue full).
    pub dropped: Counter,
    /// Copies lost to errors (a sink marked down).
    pub errors: Counter,
}

/// A stage as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageSpec {
    /// Copy to sinks, by index in the sink table.
    Copy {
        /// Sink indices.
        to: Vec<usize>,
    },
}

impl StageSpec {
    /// The stage's name as written in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            StageSpec::Copy { .. } => "copy",
        }
    }
}
