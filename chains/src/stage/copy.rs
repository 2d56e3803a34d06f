//! `copy`: copies the packet to one or more sinks. Always the last stage.
//!
//! Arguments: `to` — the sinks. For each sink the stage takes a buffer from
//! the shared copy pool, copies the bytes the chain's [`CopyPlan`] selects
//! (stripped, sliced) and the metadata into it, and pushes it on the sink's
//! bounded queue: O(copy length) work, no allocation, no blocking.
//!
//! Counters: `input` (packets), `output` (copies enqueued), `dropped` (no
//! copy buffer free, or the sink's queue full), `errors` (the sink is down:
//! the copy is not made).

use super::{CopyPlan, StageCounters, StageIn};
use crate::sink::{CopyRecord, SinkQueue};
use dataplane::packet::Pool;
use std::sync::Arc;

/// The runtime form of a `copy` stage in one worker.
pub struct CopyStage {
    targets: Box<[Target]>,
    pool: Arc<Pool>,
}

/// One sink of a copy stage, as this worker sees it.
struct Target {
    queue: Arc<SinkQueue>,
    /// The last push found the queue full. While set, the queue is checked
    /// before a copy is made, so an overloaded sink costs no copying; while
    /// clear, the check (a read of the consumer's cache line) is skipped.
    congested: bool,
}

/// What a copy stage achieved for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOutcome {
    /// Copies enqueued.
    pub copied: u32,
    /// Sinks that could not take the copy because they are down.
    pub sinks_down: u32,
}

impl CopyStage {
    /// A stage copying to `targets`, with buffers from `pool`.
    pub fn new(targets: Vec<Arc<SinkQueue>>, pool: Arc<Pool>) -> CopyStage {
        CopyStage { targets: targets.into_iter().map(|queue| Target { queue, congested: false }).collect(), pool }
    }

    /// Makes the copies `plan` describes of `s.pkt`, one per target.
    #[inline]
    pub fn process(&mut self, s: &StageIn<'_>, plan: &CopyPlan, c: &StageCounters) -> CopyOutcome {
        c.input.add(1);
        let pkt = s.pkt;
        let mut out = CopyOutcome { copied: 0, sinks_down: 0 };
        for t in self.targets.iter_mut() {
            let q = &t.queue;
            if !q.is_up() {
                out.sinks_down += 1;
                c.errors.add(1);
                continue;
            }
            if t.congested && q.is_full() {
                c.dropped.add(1);
                continue;
            }
            let Some(mut copy) = self.pool.alloc() else {
                c.dropped.add(1);
                continue;
            };
            plan.fill(pkt, &mut copy);
            copy.meta = pkt.meta;
            copy.meta.orig_len = plan.image_len(pkt) as u32;
            if copy.meta.ts_ns == 0 {
                copy.meta.ts_ns = s.now_ns;
            }
            match q.push(CopyRecord { pkt: copy, rule: s.rule, chain: s.chain }) {
                Ok(()) => {
                    t.congested = false;
                    out.copied += 1;
                    c.output.add(1);
                }
                // Queue full: the copy (and its buffer, back to the pool) is dropped, never the original.
                Err(_) => {
                    t.congested = true;
                    c.dropped.add(1);
                }
            }
        }
        out
    }
}
