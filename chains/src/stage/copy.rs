//! `copy`: copies the packet to one or more sinks. Always the last stage.
//!
//! Arguments: `to` — the sinks. For each sink the stage takes a buffer from
//! the shared copy pool, copies the bytes the chain's [`CopyPlan`] selects
//! (stripped, sliced) and the metadata into it, and pushes it on the sink's
//! bounded queue: O(copy length) work, no allocation, no blocking.
//!
//! An original in a DPDK mbuf whose copy is the whole packet (no slice, no
//! strip) is not copied: the copy is a reference-counted clone of the mbuf
//! ([`Packet::share`]), O(1). Clones count against a [`ShareLimit`] (see
//! [`CopyStage::set_share_limit`]) that keeps enough mbufs for receiving;
//! past it, copies are made into the copy pool as for any other packet.
//! Partial copies (slice, strip) always go to the copy pool: they never take
//! an mbuf away from receiving.
//!
//! Counters: `input` (packets), `output` (copies enqueued), `dropped` (no
//! copy buffer free, or the sink's queue full), `errors` (the sink is down:
//! the copy is not made).

use super::{CopyPlan, StageCounters, StageIn};
use crate::sink::{CopyRecord, SinkQueue};
use dataplane::packet::{Packet, Pool, ShareLimit};
use std::sync::Arc;

/// The runtime form of a `copy` stage in one worker.
pub struct CopyStage {
    targets: Box<[Target]>,
    pool: Arc<Pool>,
    /// Bound on outstanding mbuf clones; `None`: never clone, always copy.
    share: Option<Arc<ShareLimit>>,
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
        CopyStage {
            targets: targets.into_iter().map(|queue| Target { queue, congested: false }).collect(),
            pool,
            share: None,
        }
    }

    /// Lets whole-packet copies of mbuf-backed originals be refcount clones,
    /// at most `limit.max()` outstanding across every stage sharing it.
    pub fn set_share_limit(&mut self, limit: Arc<ShareLimit>) {
        self.share = Some(limit);
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
            let Some(mut copy) = make(&self.pool, self.share.as_ref(), pkt, plan) else {
                c.dropped.add(1);
                continue;
            };
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

/// The copy `plan` describes of `pkt`: a clone when `share` allows one and
/// the copy is whole, else a buffer from `pool`; `None` when neither is free.
#[inline]
fn make(pool: &Arc<Pool>, share: Option<&Arc<ShareLimit>>, pkt: &Packet, plan: &CopyPlan) -> Option<Packet> {
    if let Some(limit) = share {
        if plan.is_whole(pkt) {
            if let Some(clone) = pkt.share(Some(limit)) {
                return Some(clone);
            }
        }
    }
    let mut copy = pool.alloc()?;
    plan.fill(pkt, &mut copy);
    Some(copy)
}
