//! Chain stages, one file each. A stage's doc lists its arguments, its
//! counters and its drop reasons, and promises bounded work per packet.
//!
//! Stages never touch the original. Every stage but `copy` edits a per-packet
//! [`CopyPlan`] (whether to copy at all, where the copy starts, what it
//! leaves out, how long it may be); `copy`, always last, makes the copies the
//! plan describes and hands them to the sinks.

pub mod budget;
pub mod copy;
pub mod dedup;
pub mod filter;
pub mod sample;
pub mod slice;
#[cfg(feature = "chaos")]
pub mod stall;
pub mod strip;

use dataplane::classifier::{ChainId, Match, RuleId};
use dataplane::flow::FlowKey;
use dataplane::packet::Packet;
use dataplane::stats::Counter;

/// Counters every stage keeps, per worker.
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct StageCounters {
    /// Packets the stage was shown (with a copy still planned).
    pub input: Counter,
    /// Packets passed on with a copy still planned (for `copy`: copies enqueued).
    pub output: Counter,
    /// Copies shed on purpose (filtered out, not sampled, duplicate, over budget).
    pub shed: Counter,
    /// Copies lost for lack of room (no copy buffer, sink queue full).
    pub dropped: Counter,
    /// Copies lost to errors (a sink marked down).
    pub errors: Counter,
}

/// A packet on its way through a chain.
pub struct StageIn<'a> {
    /// The original (read only).
    pub pkt: &'a Packet,
    /// Its parsed flow key.
    pub key: &'a FlowKey,
    /// The rule that steered it (its counter slot, stable across rule-set updates).
    pub rule: RuleId,
    /// The chain.
    pub chain: ChainId,
    /// The burst's timestamp (ns since the epoch).
    pub now_ns: u64,
}

/// What the copy of one packet will be, as the stages so far decided.
///
/// The copy is `pkt[start..]` with `pkt[hole.0..hole.1]` left out (stripped
/// VLAN tags), cut to `snaplen` bytes; its original length is the length of
/// that image before the cut, so a sliced copy in pcapng keeps its wire length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyPlan {
    /// False once a stage decided there is no copy.
    pub keep: bool,
    /// Longest copy, in bytes.
    pub snaplen: u32,
    /// First byte of the packet the copy starts at (after stripped outer headers).
    pub start: u32,
    /// A range of the packet left out of the copy; empty when `hole.0 == hole.1`.
    pub hole: (u32, u32),
}

impl Default for CopyPlan {
    fn default() -> Self {
        CopyPlan { keep: true, snaplen: u32::MAX, start: 0, hole: (0, 0) }
    }
}

impl CopyPlan {
    /// The two pieces of `data` the copy consists of, before the snap length.
    #[inline]
    pub fn pieces<'a>(&self, data: &'a [u8]) -> (&'a [u8], &'a [u8]) {
        let len = data.len();
        let start = (self.start as usize).min(len);
        let (h0, h1) = ((self.hole.0 as usize).clamp(start, len), (self.hole.1 as usize).clamp(start, len));
        if h0 < h1 {
            (&data[start..h0], &data[h1..])
        } else {
            (&data[start..], &[])
        }
    }

    /// True when the copy is the whole packet, unchanged (no start, no hole,
    /// no cut): a clone of it needs no copying.
    #[inline]
    pub fn is_whole(&self, pkt: &Packet) -> bool {
        self.start == 0 && self.hole.0 >= self.hole.1 && self.snaplen as usize >= pkt.len()
    }

    /// Length of the copy's image before the snap length (its "wire" length).
    #[inline]
    pub fn image_len(&self, pkt: &Packet) -> usize {
        let (a, b) = self.pieces(pkt.data());
        // Bytes the capture of the original did not hold still count for the wire length.
        a.len() + b.len() + pkt.wire_len().saturating_sub(pkt.len())
    }

    /// Writes the copy into `dst` (whose capacity bounds it as well); returns its length.
    #[inline]
    pub fn fill(&self, pkt: &Packet, dst: &mut Packet) -> usize {
        let (a, b) = self.pieces(pkt.data());
        let max = (self.snaplen as usize).min(dst.capacity());
        let a = &a[..a.len().min(max)];
        let b = &b[..b.len().min(max - a.len())];
        dst.fill_from2(a, b)
    }
}

/// Layers `strip` can remove from copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StripLayer {
    /// Outer Ethernet/IP/UDP/VXLAN (UDP port 4789): the copy starts at the inner frame.
    Vxlan,
    /// Outer Ethernet/IP/UDP/Geneve (UDP port 6081): the copy starts at the inner frame.
    Geneve,
    /// 802.1Q / 802.1ad tags (of the inner frame when an overlay was stripped before).
    Vlan,
}

/// A stage as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageSpec {
    /// Cut copies to `snaplen` bytes.
    Slice {
        /// Bytes kept (at least 14).
        snaplen: u32,
    },
    /// Copy one packet in `one_in`, or every packet of one flow in `one_in`.
    Sample {
        /// N of 1-in-N (at least 1).
        one_in: u32,
        /// Sample whole flows (both directions) instead of packets.
        per_flow: bool,
        /// Seed, so a run can be repeated exactly.
        seed: u64,
    },
    /// Copy only packets that also match this.
    Filter {
        /// Match fields, as in rules.
        matches: Match,
    },
    /// Drop copies of a packet seen again within `window_ns`.
    Dedup {
        /// Window in nanoseconds.
        window_ns: u64,
    },
    /// Remove overlay and VLAN headers from copies.
    Strip {
        /// Outermost first.
        layers: Vec<StripLayer>,
    },
    /// Token-bucket caps on this chain's copies.
    Budget {
        /// Copies per second (whole chain).
        pps: Option<u64>,
        /// Copied bits per second (whole chain).
        bps: Option<u64>,
    },
    /// Stall the worker once (test builds only, feature `chaos`).
    #[cfg(feature = "chaos")]
    Stall {
        /// The stage's N-th packet (in each worker) stalls it.
        after: u64,
        /// Milliseconds.
        ms: u64,
    },
    /// Copy to sinks, by index in the sink table. Always the last stage.
    Copy {
        /// Sink indices.
        to: Vec<usize>,
    },
}

impl StageSpec {
    /// The stage's name as written in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            StageSpec::Slice { .. } => "slice",
            StageSpec::Sample { .. } => "sample",
            StageSpec::Filter { .. } => "filter",
            StageSpec::Dedup { .. } => "dedup",
            StageSpec::Strip { .. } => "strip",
            StageSpec::Budget { .. } => "budget",
            #[cfg(feature = "chaos")]
            StageSpec::Stall { .. } => "stall",
            StageSpec::Copy { .. } => "copy",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::packet::{Meta, Pool};

    #[test]
    fn plans_cut_strip_and_slice() {
        let data: Vec<u8> = (0..100).collect();
        let pkt = Packet::from_slice(&data, Meta::default());
        let pool = Pool::new(1, 2048);
        let mut dst = pool.alloc().unwrap();
        let plan = CopyPlan { start: 10, hole: (22, 26), snaplen: 20, keep: true };
        assert_eq!(plan.image_len(&pkt), 86);
        assert_eq!(plan.fill(&pkt, &mut dst), 20);
        let want: Vec<u8> = (10..22).chain(26..34).collect();
        assert_eq!(dst.data(), &want[..]);
        let whole = CopyPlan::default();
        assert_eq!(whole.fill(&pkt, &mut dst), 100);
        assert_eq!(whole.image_len(&pkt), 100);
        // A hole outside the packet and a start past its end are harmless.
        let odd = CopyPlan { start: 500, hole: (600, 700), ..CopyPlan::default() };
        assert_eq!(odd.fill(&pkt, &mut dst), 0);
    }
}
