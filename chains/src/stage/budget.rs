//! `budget`: token-bucket caps on a chain's copies, so the cost of monitoring
//! to the VMs' traffic is bounded. Over budget, copies are shed and counted;
//! originals are never touched.
//!
//! Arguments: `pps` (copies per second) and `bps` (copied bits per second),
//! each optional, both for the whole chain. Each of the `share` workers gets
//! `1/share` of each cap (no shared state: a worker whose flows are quiet
//! leaves its share unused). A copy needs a token from every bucket there is;
//! its bits are those of the copy as planned so far,
//! `min(snaplen, image length) × 8`, so put `budget` after `slice`/`strip`.
//!
//! The buckets refill from the packet's receive timestamp when its port gives
//! one (so a replayed capture is budgeted in capture time, as recorded), else
//! from the burst clock (`now_ns`); never from a clock read in the stage. They hold 10 ms of the worker's share — at least one
//! copy for `pps`, and at least one 9216-byte jumbo copy for `bps`, so a tiny
//! cap still lets whole copies through. They start full. Over one second the
//! stage passes at most `cap / share + depth` copies (or bits).
//!
//! Counters: `input`, `output` (within budget), `shed` (over budget). O(1)
//! per packet: a few integer operations, no division.

use super::{CopyPlan, StageCounters, StageIn};

const NS_PER_S: u128 = 1_000_000_000;
/// How long a full bucket lasts at the capped rate.
pub const DEPTH_NS: u64 = 10_000_000;
/// Smallest `bps` bucket: one copy of a 9216-byte jumbo frame, in bits.
pub const MIN_DEPTH_BITS: u64 = 9216 * 8;

/// One token bucket. Levels are kept in units of token × ns × share, so
/// refilling is `elapsed_ns × cap` and a token costs `1e9 × share`: exact
/// integer arithmetic with no per-packet division and no rounding of the
/// worker's share.
struct Bucket {
    /// Refill per ns (the chain's cap per second).
    cap: u128,
    /// Cost of one token.
    unit: u128,
    depth: u128,
    level: u128,
}

impl Bucket {
    fn new(cap: u64, share: u32, min_tokens: u64) -> Bucket {
        let unit = NS_PER_S * u128::from(share);
        let depth = (u128::from(cap) * u128::from(DEPTH_NS)).max(u128::from(min_tokens) * unit);
        Bucket { cap: u128::from(cap), unit, depth, level: depth }
    }

    #[inline]
    fn refill(&mut self, elapsed_ns: u64) {
        self.level = (self.level + u128::from(elapsed_ns) * self.cap).min(self.depth);
    }

    /// The level `tokens` would take, if the bucket holds them.
    #[inline]
    fn take(&self, tokens: u64) -> Option<u128> {
        self.level.checked_sub(u128::from(tokens) * self.unit)
    }
}

/// The runtime form of a `budget` stage in one worker.
pub struct Budget {
    pps: Option<Bucket>,
    bps: Option<Bucket>,
    last_ns: u64,
}

impl Budget {
    /// Caps for the whole chain; this worker gets `1/share` of each (0 is taken as 1).
    pub fn new(pps: Option<u64>, bps: Option<u64>, share: u32) -> Budget {
        let share = share.max(1);
        Budget {
            pps: pps.map(|cap| Bucket::new(cap, share, 1)),
            bps: bps.map(|cap| Bucket::new(cap, share, MIN_DEPTH_BITS)),
            last_ns: 0,
        }
    }

    /// Keeps the copy if every bucket has room for it, sheds it otherwise.
    #[inline]
    pub fn process(&mut self, s: &StageIn<'_>, plan: &mut CopyPlan, c: &StageCounters) {
        c.input.add(1);
        // A clock that steps back refills nothing (and does not underflow).
        // The packet's receive time when the port gives one (a replayed capture
        // is budgeted in capture time, as it was recorded), else the burst clock.
        let now = if s.pkt.meta.ts_ns != 0 { s.pkt.meta.ts_ns } else { s.now_ns };
        let elapsed = now.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now);
        let pps = match &mut self.pps {
            Some(b) => {
                b.refill(elapsed);
                b.take(1).map(Some)
            }
            None => Some(None),
        };
        let bps = match &mut self.bps {
            Some(b) => {
                b.refill(elapsed);
                let bits = (plan.image_len(s.pkt) as u64).min(u64::from(plan.snaplen)) * 8;
                b.take(bits).map(Some)
            }
            None => Some(None),
        };
        let (Some(pps), Some(bps)) = (pps, bps) else {
            plan.keep = false;
            c.shed.add(1);
            return;
        };
        if let (Some(b), Some(level)) = (&mut self.pps, pps) {
            b.level = level;
        }
        if let (Some(b), Some(level)) = (&mut self.bps, bps) {
            b.level = level;
        }
        c.output.add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::flow::FlowKey;
    use dataplane::packet::{Meta, Packet};

    /// Offers `budget` one simulated second of `rate` packets per second of
    /// `len` bytes (copies cut to `snaplen`); returns the counters.
    fn second(budget: &mut Budget, rate: u64, len: usize, snaplen: u32) -> StageCounters {
        let pkt = Packet::from_slice(&vec![0; len], Meta::default());
        let key = FlowKey::default();
        let c = StageCounters::default();
        let t0 = 5_000_000_000;
        for i in 0..rate {
            let mut plan = CopyPlan { snaplen, ..CopyPlan::default() };
            let s = StageIn { pkt: &pkt, key: &key, rule: 0, chain: 0, now_ns: t0 + i * 1_000_000_000 / rate };
            budget.process(&s, &mut plan, &c);
        }
        assert_eq!(c.input.get(), rate);
        assert_eq!(c.output.get() + c.shed.get(), rate);
        c
    }

    fn assert_near(got: u64, want: u64, depth: u64) {
        let (lo, hi) = (want - want / 100, want + want / 100 + depth);
        assert!((lo..=hi).contains(&got), "kept {got}, want {want} (+ bucket depth {depth}) within 1%");
    }

    #[test]
    fn pps_cap_over_a_second_of_1_mpps() {
        for cap in [1_000u64, 100_000, 500_000] {
            let c = second(&mut Budget::new(Some(cap), None, 1), 1_000_000, 64, u32::MAX);
            assert_near(c.output.get(), cap, (cap / 100).max(1));
        }
    }

    #[test]
    fn bps_cap_counts_the_planned_copy() {
        // 1 Mpps of 1000-byte packets sliced to 125 bytes: 1 Gb/s of copies.
        let cap = 100_000_000;
        let c = second(&mut Budget::new(None, Some(cap), 1), 1_000_000, 1000, 125);
        assert_near(c.output.get(), cap / 1000, cap / 100 / 1000);
        // Unsliced, the same cap passes an eighth as many.
        let c = second(&mut Budget::new(None, Some(cap), 1), 1_000_000, 1000, u32::MAX);
        assert_near(c.output.get(), cap / 8000, cap / 100 / 8000);
    }

    #[test]
    fn both_caps_the_tighter_one_wins() {
        let c = second(&mut Budget::new(Some(200_000), Some(51_200_000), 1), 1_000_000, 64, u32::MAX);
        assert_near(c.output.get(), 100_000, 1_000);
    }

    #[test]
    fn share_splits_the_caps_between_workers() {
        for _worker in 0..4 {
            let c = second(&mut Budget::new(Some(400_000), None, 4), 1_000_000, 64, u32::MAX);
            assert_near(c.output.get(), 100_000, 1_000);
            let b = second(&mut Budget::new(None, Some(400_000_000), 4), 1_000_000, 125, u32::MAX);
            assert_near(b.output.get(), 100_000, 1_000);
        }
    }

    #[test]
    fn a_tiny_cap_still_passes_whole_copies_and_refills() {
        let mut b = Budget::new(Some(1), Some(8), 3);
        let pkt = Packet::from_slice(&[0; 9216], Meta::default());
        let key = FlowKey::default();
        let c = StageCounters::default();
        let mut run = |now_ns| {
            let mut plan = CopyPlan::default();
            b.process(&StageIn { pkt: &pkt, key: &key, rule: 0, chain: 0, now_ns }, &mut plan, &c);
            plan.keep
        };
        assert!(run(1));
        assert!(!run(2));
        // The clock stepping back neither refills nor panics.
        assert!(!run(0));
        assert_eq!((c.output.get(), c.shed.get()), (1, 2));
    }
}
