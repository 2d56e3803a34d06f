//! `sample`: copy one packet in N, or every packet of one flow in N.
//!
//! Arguments: `one_in` (N, at least 1; 1 keeps everything), `per_flow`,
//! `seed`. Counters: `input`, `output` (sampled), `shed` (not sampled). No
//! drop reasons besides "not sampled". O(1) per packet, no state but a
//! 64-bit generator.
//!
//! * Per packet: a splitmix64 generator, seeded from `seed` and the worker's
//!   index, draws one number per packet; the packet is kept when the draw
//!   falls in the lowest 1/N of the range. Each worker draws its own
//!   sequence, so a run with the same seed, workers and traffic repeats
//!   exactly, and the kept fraction is N's reciprocal however the flows are
//!   spread over workers.
//! * Per flow: the packet is kept when a hash of its conversation, mixed with
//!   the seed, is 0 modulo N. The hash reads the key in a direction-free form
//!   (the lower (address, port) endpoint first), so both directions of a
//!   conversation are kept or shed together, and it depends on nothing
//!   worker-local, so every worker and every port agrees about a flow. For IP
//!   packets the conversation is (addresses, ports, protocol) and MACs are left
//!   out: they change at every routed hop, and a flow seen on the ports on
//!   both sides of a router must get one decision. Non-IP frames are keyed
//!   by their ordered MAC pair, EtherType and VLANs.

use super::{CopyPlan, StageCounters, StageIn};
use dataplane::flow::FlowKey;

/// The runtime form of a `sample` stage in one worker.
pub struct Sample {
    one_in: u64,
    per_flow: bool,
    seed: u64,
    /// splitmix64 state (per packet only).
    state: u64,
}

impl Sample {
    /// A stage keeping one packet (or one flow) in `one_in` (0 is taken as 1).
    /// `worker` separates the per-packet sequences of the workers sharing a seed.
    pub fn new(one_in: u32, per_flow: bool, seed: u64, worker: usize) -> Sample {
        // Distinct, well-spread starting points per worker: one splitmix64 step
        // of (seed, worker) so adjacent worker indices do not start on
        // adjacent states.
        let state = mix64(seed ^ mix64((worker as u64).wrapping_add(GOLDEN)));
        Sample { one_in: u64::from(one_in.max(1)), per_flow, seed, state }
    }

    /// Keeps or sheds the copy.
    #[inline]
    pub fn process(&mut self, s: &StageIn<'_>, plan: &mut CopyPlan, c: &StageCounters) {
        c.input.add(1);
        let keep = if self.per_flow {
            mix64(flow_hash(s.key) ^ self.seed).is_multiple_of(self.one_in)
        } else {
            self.state = self.state.wrapping_add(GOLDEN);
            // Lemire's multiply-shift: the draw is kept when it lies in the
            // lowest 2^64/N of the range (no division per packet, no modulo bias).
            (u128::from(mix64(self.state)) * u128::from(self.one_in)) >> 64 == 0
        };
        if keep {
            c.output.add(1);
        } else {
            plan.keep = false;
            c.shed.add(1);
        }
    }
}

/// splitmix64's increment (2^64 / golden ratio).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's output function: a bijective 64-bit finaliser.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash of `key` that is the same for both directions of a conversation.
#[inline]
fn flow_hash(key: &FlowKey) -> u64 {
    let fold = |h: u64, w: u64| mix64(h ^ w).wrapping_add(GOLDEN);
    if key.ip_version != 0 {
        let a = (key.src_ip, key.src_port);
        let b = (key.dst_ip, key.dst_port);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut h = fold(u64::from(key.proto) << 32 | u64::from(lo.1) << 16 | u64::from(hi.1), 1);
        for ip in [lo.0, hi.0] {
            let ip = u128::from_le_bytes(ip);
            h = fold(fold(h, ip as u64), (ip >> 64) as u64);
        }
        h
    } else {
        let mac = |m: [u8; 6]| u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]);
        let (x, y) = (mac(key.src_mac.0), mac(key.dst_mac.0));
        let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
        let l2 = u64::from(key.ethertype) << 32 | u64::from(key.outer_vlan) << 16 | u64::from(key.inner_vlan);
        fold(fold(fold(l2, 2), lo), hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::flow::{ip_to_key_bytes, proto, MacAddr};
    use dataplane::packet::{Meta, Packet};

    fn key(i: u32) -> FlowKey {
        FlowKey {
            src_ip: ip_to_key_bytes(std::net::Ipv4Addr::from(0x0a00_0000 | i).into()),
            dst_ip: ip_to_key_bytes(std::net::Ipv4Addr::new(10, 255, 0, 1).into()),
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src_port: 1024 + (i % 50_000) as u16,
            dst_port: 80,
            proto: proto::TCP,
            ip_version: 4,
            ethertype: 0x0800,
            ..FlowKey::default()
        }
    }

    /// Runs `stage` on `keys` (one packet each); returns the decisions.
    fn decide(stage: &mut Sample, keys: impl Iterator<Item = FlowKey>, c: &StageCounters) -> Vec<bool> {
        let pkt = Packet::from_slice(&[0; 60], Meta::default());
        keys.map(|k| {
            let mut plan = CopyPlan::default();
            stage.process(&StageIn { pkt: &pkt, key: &k, rule: 0, chain: 0, now_ns: 1 }, &mut plan, c);
            plan.keep
        })
        .collect()
    }

    #[test]
    fn one_in_n_per_packet_is_within_5_percent() {
        for n in [2u32, 10, 100] {
            let c = StageCounters::default();
            let kept = decide(&mut Sample::new(n, false, 42, 0), (0..100_000).map(|_| key(7)), &c);
            let want = 100_000.0 / f64::from(n);
            let got = kept.iter().filter(|&&k| k).count() as f64;
            assert!((got - want).abs() <= want * 0.05, "1 in {n}: kept {got}, want {want}");
            assert_eq!((c.input.get(), c.output.get() + c.shed.get()), (100_000, 100_000));
            assert_eq!(c.output.get() as f64, got);
        }
    }

    #[test]
    fn one_in_n_per_flow_is_within_5_percent_of_flows() {
        for n in [2u32, 10, 100] {
            let c = StageCounters::default();
            let kept = decide(&mut Sample::new(n, true, 42, 0), (0..100_000).map(key), &c);
            let want = 100_000.0 / f64::from(n);
            let got = kept.iter().filter(|&&k| k).count() as f64;
            assert!((got - want).abs() <= want * 0.05, "1 in {n} flows: kept {got}, want {want}");
        }
    }

    #[test]
    fn same_seed_same_decisions_other_seed_or_worker_other_ones() {
        let c = StageCounters::default();
        let run = |seed, worker| decide(&mut Sample::new(10, false, seed, worker), (0..10_000).map(|_| key(1)), &c);
        assert_eq!(run(7, 0), run(7, 0));
        assert_ne!(run(7, 0), run(8, 0));
        assert_ne!(run(7, 0), run(7, 1));
        let flows = |seed| decide(&mut Sample::new(10, true, seed, 0), (0..10_000).map(key), &c);
        assert_eq!(flows(7), flows(7));
        assert_ne!(flows(7), flows(8));
    }

    #[test]
    fn per_flow_keeps_whole_flows_in_both_directions_on_every_worker() {
        let c = StageCounters::default();
        let mut w0 = Sample::new(10, true, 3, 0);
        let mut w1 = Sample::new(10, true, 3, 1);
        let mut kept_flows = 0;
        for i in 0..2_000 {
            let k = key(i);
            let mut back = k.reversed();
            // Seen on the far side of a router: other MACs, other port.
            back.src_mac = MacAddr([2, 0, 0, 0, 0, 9]);
            back.in_port = 5;
            let fwd = decide(&mut w0, std::iter::repeat_n(k, 5), &c);
            let rev = decide(&mut w1, std::iter::repeat_n(back, 5), &c);
            assert!(fwd.iter().chain(&rev).all(|&d| d == fwd[0]), "flow {i} split: {fwd:?} {rev:?}");
            kept_flows += usize::from(fwd[0]);
        }
        assert!((150..250).contains(&kept_flows), "{kept_flows} of 2000 flows kept at 1 in 10");
    }

    #[test]
    fn non_ip_flows_are_keyed_by_their_mac_pair() {
        let c = StageCounters::default();
        let mut s = Sample::new(4, true, 9, 0);
        let mut kept = 0;
        for i in 0..1_000u32 {
            let b = i.to_le_bytes();
            let k = FlowKey {
                src_mac: MacAddr([2, 0, b[0], b[1], 0, 1]),
                dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
                ethertype: 0x0806,
                ..FlowKey::default()
            };
            let d = decide(&mut s, [k, k.reversed()].into_iter(), &c);
            assert_eq!(d[0], d[1]);
            kept += usize::from(d[0]);
        }
        assert!((150..350).contains(&kept), "{kept} of 1000 MAC pairs kept at 1 in 4");
    }

    #[test]
    fn one_in_one_keeps_all() {
        for per_flow in [false, true] {
            let c = StageCounters::default();
            assert!(decide(&mut Sample::new(1, per_flow, 0, 0), (0..1000).map(key), &c).iter().all(|&k| k));
            assert_eq!((c.output.get(), c.shed.get()), (1000, 0));
        }
    }
}
