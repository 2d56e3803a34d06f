//! Tuple-space search, as Open vSwitch's classifier does it.
//!
//! Every rule is compiled to one or more *pieces*: a (value, mask) pair over
//! the packed flow key. Port ranges do not fit a mask, so each range is split
//! into aligned prefix blocks first (at most 30 per 16-bit range; a rule with
//! a source and a destination range gets the product). Pieces with the same
//! mask share a *tuple*: one hash table keyed by `key & mask`. A lookup masks
//! the packed key once per tuple and probes one hash table, so its cost grows
//! with the number of distinct masks, not with the number of rules. A tuple
//! of a few keys (up to [`LINEAR`]) is a short array compared key by key
//! instead: cheaper than hashing, and the common shape of a steering config.
//!
//! Tuples are sorted by the highest priority they hold; the search stops as
//! soon as the best match so far is at least that priority, which is what
//! makes a hit on a high-priority rule cheap even with thousands of rules.

use super::{Match, PortRange, Verdict};
use crate::flow::{ip_words, FlowKey, MacAddr};
use hashbrown::HashMap;
use ipnet::IpNet;
use std::hash::{Hash, Hasher};

/// Number of 64-bit words in a [`Packed`] key.
const WORDS: usize = 8;

/// A [`FlowKey`] packed into eight words so that masking is eight ANDs and
/// hashing is one folded word, whatever the field layout of `FlowKey`.
///
/// Layout (big-endian within each field):
/// `[src_ip hi, src_ip lo, dst_ip hi, dst_ip lo, src_mac|in_port,
///   dst_mac|ethertype, outer_vlan|inner_vlan|src_port|dst_port, vni|proto|ip_version]`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Packed([u64; WORDS]);

impl Hash for Packed {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.fold());
    }
}

/// Folded 64x64->128 multiply, the mixing step of foldhash and wyhash.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    p as u64 ^ (p >> 64) as u64
}

/// Arbitrary constants (hex digits of pi) xored into each word, so that a
/// zero word (every field a tuple does not use) does not zero its lane.
const LANES: [u64; WORDS] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
    0x4528_21e6_38d0_1377,
    0xbe54_66cf_34e9_0c6c,
    0xc0ac_29b7_c97c_50dd,
    0x3f84_d5b5_b547_0917,
];

impl Packed {
    /// The key folded to one word with four independent multiplies, so the
    /// hasher sees a single `write_u64`. Measured with 10,000 rules (293
    /// tuples): eight chained `write_u64` took a miss from 2.5 to 3.5 us and a
    /// hit from 2.8 to 5.2 us; one 64-byte `write` was worse still (9 us). The tables hold config-derived keys
    /// only, so an unseeded fold does not expose them to collision attacks;
    /// the seeded hasher still mixes the result.
    #[inline]
    fn fold(&self) -> u64 {
        let [a, b, c, d, e, f, g, h] = self.0;
        let [ka, kb, kc, kd, ke, kf, kg, kh] = LANES;
        fold_mul(a ^ ka, b ^ kb) ^ fold_mul(c ^ kc, d ^ kd) ^ fold_mul(e ^ ke, f ^ kf) ^ fold_mul(g ^ kg, h ^ kh)
    }

    /// Packs every field of `k`; also used for masks, by packing a `FlowKey`
    /// whose fields are masks.
    #[inline]
    pub(crate) fn from_key(k: &FlowKey) -> Packed {
        Packed::from_key_words(k, Words::ALL)
    }

    /// Packs the words of `k` in `words`, leaving the others zero: a lookup
    /// only needs the words some mask of the tuple space uses.
    #[inline]
    fn from_key_words(k: &FlowKey, words: Words) -> Packed {
        let mut p = [0u64; WORDS];
        if words.any(0b11) {
            [p[0], p[1]] = ip_words(&k.src_ip);
        }
        if words.any(0b1100) {
            [p[2], p[3]] = ip_words(&k.dst_ip);
        }
        if words.any(1 << 4) {
            p[4] = k.src_mac_word();
        }
        if words.any(1 << 5) {
            p[5] = k.dst_mac_word();
        }
        if words.any(1 << 6) {
            p[6] = u64::from(k.outer_vlan) << 48
                | u64::from(k.inner_vlan) << 32
                | u64::from(k.src_port) << 16
                | u64::from(k.dst_port);
        }
        if words.any(1 << 7) {
            p[7] = u64::from(k.vni) << 32 | u64::from(k.proto) << 8 | u64::from(k.ip_version);
        }
        Packed(p)
    }

    /// The words this pattern (a mask) is not zero in.
    fn words(&self) -> Words {
        Words(self.0.iter().enumerate().filter(|(_, w)| **w != 0).fold(0, |b, (i, _)| b | 1 << i))
    }

    #[inline]
    fn and(&self, mask: &Packed) -> Packed {
        let mut out = self.0;
        for (o, m) in out.iter_mut().zip(mask.0) {
            *o &= m;
        }
        Packed(out)
    }

    /// True when `self` (a masked key of a tuple) is `key` under `mask`,
    /// comparing only the words in `words` (where `mask` is not zero).
    #[inline]
    fn matches(&self, key: &Packed, mask: &Packed, words: Words) -> bool {
        let mut d = 0;
        for i in 0..WORDS {
            if words.any(1 << i) {
                d |= (key.0[i] & mask.0[i]) ^ self.0[i];
            }
        }
        d == 0
    }

    /// True when the two ternary patterns agree wherever both care.
    #[inline]
    fn compatible(&self, mask: &Packed, other: &Packed, other_mask: &Packed) -> bool {
        self.0.iter().zip(mask.0).zip(other.0.iter().zip(other_mask.0)).all(|((a, ma), (b, mb))| (a ^ b) & ma & mb == 0)
    }
}

/// A set of the eight words of a [`Packed`] key, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Words(u8);

impl Words {
    const ALL: Words = Words(u8::MAX);

    /// True when any of the words in `bits` is in the set.
    #[inline(always)]
    fn any(self, bits: u8) -> bool {
        self.0 & bits != 0
    }
}

/// A match without its port ranges, as a (value, mask) pair over [`Packed`].
/// `value` is already masked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ternary {
    value: Packed,
    mask: Packed,
}

/// The IP family a match needs: `Err(())` when its source and destination
/// networks are of different families, so that no packet can match it.
fn family(m: &Match) -> Result<Option<u8>, ()> {
    let v = |n: &Option<IpNet>| {
        n.map(|n| match n {
            IpNet::V4(_) => 4u8,
            IpNet::V6(_) => 6u8,
        })
    };
    match (v(&m.src_ip), v(&m.dst_ip)) {
        (Some(a), Some(b)) if a != b => Err(()),
        (a, b) => Ok(a.or(b)),
    }
}

/// (value, mask) of a network over the 16-byte key field. IPv4 compares the
/// low 32 bits (where an IPv4-mapped address keeps the IPv4 address).
fn net_bits(n: &IpNet) -> ([u8; 16], [u8; 16]) {
    let (addr, mask) = match n {
        IpNet::V4(n) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(n.prefix_len())).unwrap_or(0);
            (u128::from(u32::from(n.addr()) & mask), u128::from(mask))
        }
        IpNet::V6(n) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(n.prefix_len())).unwrap_or(0);
            (u128::from(n.addr()) & mask, mask)
        }
    };
    (addr.to_be_bytes(), mask.to_be_bytes())
}

impl Ternary {
    /// `None` when no packet can match (mixed IP families). Ports are left
    /// wildcarded; callers add them as prefixes or compare ranges.
    pub(crate) fn of(m: &Match) -> Option<Ternary> {
        let fam = family(m).ok()?;
        let zero = FlowKey { outer_vlan: 0, inner_vlan: 0, vni: 0, ..FlowKey::default() };
        let (mut v, mut k) = (zero, zero);
        if let Some(p) = m.in_port {
            (v.in_port, k.in_port) = (p, u16::MAX);
        }
        if let Some(a) = m.src_mac {
            (v.src_mac, k.src_mac) = (a, MacAddr::BROADCAST);
        }
        if let Some(a) = m.dst_mac {
            (v.dst_mac, k.dst_mac) = (a, MacAddr::BROADCAST);
        }
        if let Some(x) = m.vlan {
            (v.outer_vlan, k.outer_vlan) = (x, u16::MAX);
        }
        if let Some(x) = m.inner_vlan {
            (v.inner_vlan, k.inner_vlan) = (x, u16::MAX);
        }
        if let Some(x) = m.ethertype {
            (v.ethertype, k.ethertype) = (x, u16::MAX);
        }
        if let Some(n) = &m.src_ip {
            (v.src_ip, k.src_ip) = net_bits(n);
        }
        if let Some(n) = &m.dst_ip {
            (v.dst_ip, k.dst_ip) = net_bits(n);
        }
        if let Some(f) = fam {
            (v.ip_version, k.ip_version) = (f, u8::MAX);
        }
        if let Some(p) = m.proto {
            (v.proto, k.proto) = (p, u8::MAX);
        }
        if let Some(x) = m.vni {
            (v.vni, k.vni) = (x, u32::MAX);
        }
        Some(Ternary { value: Packed::from_key(&v), mask: Packed::from_key(&k) })
    }

    /// True when some key matches both patterns (ports aside).
    pub(crate) fn intersects(&self, other: &Ternary) -> bool {
        self.value.compatible(&self.mask, &other.value, &other.mask)
    }

    /// The pattern narrowed to one (source, destination) port prefix pair.
    fn with_ports(&self, src: (u16, u16), dst: (u16, u16)) -> Ternary {
        let mut t = *self;
        let ports = |s: u16, d: u16| u64::from(s) << 16 | u64::from(d);
        t.value.0[6] |= ports(src.0, dst.0);
        t.mask.0[6] |= ports(src.1, dst.1);
        t
    }
}

/// Splits an inclusive port range into aligned (value, mask) blocks; a
/// wildcard is the one block (0, 0). An empty range (lo > hi) gives none.
pub(crate) fn port_prefixes(range: Option<PortRange>) -> Vec<(u16, u16)> {
    let Some(PortRange { lo, hi }) = range else {
        return vec![(0, 0)];
    };
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    let mut out = Vec::new();
    while lo <= hi {
        // The largest aligned block starting at `lo` that ends by `hi`.
        let mut size = if lo == 0 { 1u32 << 16 } else { 1u32 << lo.trailing_zeros() };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, !(size - 1) as u16));
        lo += size;
    }
    out
}

/// One hash-table entry: the best rule for this masked key in this tuple.
#[derive(Clone, Copy, Debug)]
struct Slot {
    priority: u32,
    verdict: Verdict,
}

/// Tuples with at most this many masked keys are searched by comparing
/// them one by one: a few 64-byte compares cost less than hashing the key
/// and probing a table, and steering configs have many small tuples.
const LINEAR: usize = 8;

/// All pieces sharing one mask.
#[derive(Debug)]
struct Tuple {
    mask: Packed,
    /// The words `mask` is not zero in: the only ones a lookup compares.
    words: Words,
    max_priority: u32,
    /// The masked keys of a tuple with more than [`LINEAR`] of them.
    table: HashMap<Packed, Slot>,
    /// The masked keys of a smaller tuple (then `table` is empty).
    few: Box<[(Packed, Slot)]>,
}

impl Tuple {
    /// The entry `key` falls in under this tuple's mask, if any.
    #[inline]
    fn get(&self, key: &Packed) -> Option<&Slot> {
        if self.few.is_empty() {
            return self.table.get(&key.and(&self.mask));
        }
        self.few.iter().find(|(k, _)| k.matches(key, &self.mask, self.words)).map(|(_, s)| s)
    }

    /// Matches each key against this (small) tuple alone. `W` is a set of
    /// words that holds every word of the tuple's mask: those are packed
    /// and compared, whatever the mask (a word the mask does not use is zero
    /// in the mask and in every masked key, so it compares equal). A
    /// constant, so that no word is tested for in the loop. Returns how many
    /// keys matched.
    #[inline]
    fn scan<const W: u8>(&self, keys: &[FlowKey], out: &mut [Option<Verdict>]) -> usize {
        debug_assert_eq!(self.words.0 & !W, 0, "the shape must cover the tuple's words");
        let mut hits = 0;
        for (k, o) in keys.iter().zip(out) {
            let packed = Packed::from_key_words(k, Words(W));
            // Written out rather than through a shared helper with `W` as an argument: that
            // version measured 2-3x slower (criterion `direct/burst/*`), the constant lost.
            *o = self.few.iter().find(|(v, _)| v.matches(&packed, &self.mask, Words(W))).map(|(_, s)| s.verdict);
            hits += usize::from(o.is_some());
        }
        hits
    }
}

/// [`Tuple::scan`] over two small tuples, `a` before `b` (as the tuple space
/// orders them: `a.max_priority >= b.max_priority`). `W` covers both tuples'
/// words. `b` is searched only when `a` gave nothing that outranks all of
/// `b`; on equal priorities `a`'s entry wins, as in [`TupleSpace::classify`].
#[inline]
fn scan_pair<const W: u8>(a: &Tuple, b: &Tuple, keys: &[FlowKey], out: &mut [Option<Verdict>]) -> usize {
    debug_assert_eq!((a.words.0 | b.words.0) & !W, 0, "the shape must cover both tuples' words");
    let find =
        |t: &Tuple, packed: &Packed| t.few.iter().find(|(v, _)| v.matches(packed, &t.mask, Words(W))).map(|(_, s)| *s);
    let mut hits = 0;
    for (k, o) in keys.iter().zip(out) {
        let packed = Packed::from_key_words(k, Words(W));
        let best = match find(a, &packed) {
            Some(x) if x.priority >= b.max_priority => Some(x),
            x => match (x, find(b, &packed)) {
                (Some(x), Some(y)) => Some(if x.priority >= y.priority { x } else { y }),
                (x, y) => x.or(y),
            },
        };
        *o = best.map(|s| s.verdict);
        hits += usize::from(o.is_some());
    }
    hits
}

/// Word sets ([`Words`]) covering the commonest steering rule shapes. Word 7
/// (protocol, IP version) is in all of them: an address match implies the
/// family. IPv4 addresses use only the low word of each address field.
mod shape {
    /// `dst: <IPv4 net>` (or a protocol alone).
    pub(super) const V4_DST: u8 = 0b1000_1000;
    /// `src: <IPv4 net>`.
    pub(super) const V4_SRC: u8 = 0b1000_0010;
    /// Protocol and L4 ports.
    pub(super) const PORTS_PROTO: u8 = 0b1100_0000;
    /// Both IPv4 networks.
    pub(super) const V4_IPS: u8 = 0b1000_1010;
    /// An IPv4 5-tuple, or any part of it.
    pub(super) const V4_IPS_PORTS_PROTO: u8 = 0b1100_1010;
    /// An IPv4 or IPv6 5-tuple, or any part of it.
    pub(super) const IPS_PORTS_PROTO: u8 = 0b1100_1111;
}

/// The compiled classifier: tuples in decreasing order of their best priority.
#[derive(Debug, Default)]
pub(crate) struct TupleSpace {
    tuples: Vec<Tuple>,
    /// Every word some tuple's mask uses: the only ones a lookup packs.
    words: Words,
}

impl TupleSpace {
    /// Compiles `(match, priority, verdict)` triples; a symmetric rule is
    /// passed twice, once with its mirrored match.
    pub(crate) fn build<'a>(pieces: impl IntoIterator<Item = (&'a Match, u32, Verdict)>) -> TupleSpace {
        let mut by_mask: HashMap<Packed, Tuple> = HashMap::new();
        for (m, priority, verdict) in pieces {
            let Some(base) = Ternary::of(m) else { continue };
            let dsts = port_prefixes(m.dst_port);
            for src in port_prefixes(m.src_port) {
                for &dst in &dsts {
                    let t = base.with_ports(src, dst);
                    let tuple = by_mask.entry(t.mask).or_insert_with(|| Tuple {
                        mask: t.mask,
                        words: t.mask.words(),
                        max_priority: priority,
                        table: HashMap::new(),
                        few: Box::default(),
                    });
                    tuple.max_priority = tuple.max_priority.max(priority);
                    let slot = Slot { priority, verdict };
                    // Same tuple and same masked key means the same packets:
                    // only the higher priority can ever win here.
                    tuple
                        .table
                        .entry(t.value)
                        .and_modify(|s| {
                            if priority > s.priority {
                                *s = slot;
                            }
                        })
                        .or_insert(slot);
                }
            }
        }
        let mut tuples: Vec<Tuple> = by_mask.into_values().collect();
        tuples.sort_by_key(|t| std::cmp::Reverse(t.max_priority));
        for t in &mut tuples {
            if t.table.len() <= LINEAR {
                t.few = t.table.drain().collect();
            }
            t.table.shrink_to_fit();
        }
        let words = Words(tuples.iter().fold(0, |b, t| b | t.words.0));
        TupleSpace { tuples, words }
    }

    /// Highest-priority verdict for `key`.
    #[inline]
    pub(crate) fn classify(&self, key: &FlowKey) -> Option<Verdict> {
        let packed = Packed::from_key_words(key, self.words);
        let mut best: Option<Slot> = None;
        for t in &self.tuples {
            if let Some(b) = best {
                // Equal priority cannot match too: equal-priority overlap is
                // rejected when the set is built.
                if b.priority >= t.max_priority {
                    break;
                }
            }
            if let Some(s) = t.get(&packed) {
                if !matches!(best, Some(b) if b.priority >= s.priority) {
                    best = Some(*s);
                }
            }
        }
        best.map(|s| s.verdict)
    }

    /// [`TupleSpace::classify`] for each key of a burst, into `out` (as
    /// long as `keys`). One call per burst: the tuple list, the words to pack
    /// and the masks are read once, not once per packet, and a rule set of
    /// one small tuple (a few steering rules of one shape, the common case)
    /// is a tight loop of masked compares with no priority bookkeeping; two
    /// small tuples (a symmetric rule and its mirror) a loop that compares
    /// the second only when the first found nothing better.
    /// Returns how many keys matched.
    pub(crate) fn classify_burst(&self, keys: &[FlowKey], out: &mut [Option<Verdict>]) -> usize {
        match &self.tuples[..] {
            [] => {
                out.iter_mut().for_each(|o| *o = None);
                0
            }
            // One tuple: its masked keys are distinct, so at most one entry matches. The
            // loop is compiled for the smallest common shape that covers the tuple's words,
            // so the words to pack and compare are constants.
            [t] if !t.few.is_empty() => match t.words.0 {
                w if w & !shape::V4_DST == 0 => t.scan::<{ shape::V4_DST }>(keys, out),
                w if w & !shape::V4_SRC == 0 => t.scan::<{ shape::V4_SRC }>(keys, out),
                w if w & !shape::PORTS_PROTO == 0 => t.scan::<{ shape::PORTS_PROTO }>(keys, out),
                w if w & !shape::V4_IPS == 0 => t.scan::<{ shape::V4_IPS }>(keys, out),
                w if w & !shape::V4_IPS_PORTS_PROTO == 0 => t.scan::<{ shape::V4_IPS_PORTS_PROTO }>(keys, out),
                w if w & !shape::IPS_PORTS_PROTO == 0 => t.scan::<{ shape::IPS_PORTS_PROTO }>(keys, out),
                _ => t.scan::<{ u8::MAX }>(keys, out),
            },
            // Two small tuples: a symmetric rule (the rule and its mirror) or two rule shapes.
            [a, b] if !a.few.is_empty() && !b.few.is_empty() => match a.words.0 | b.words.0 {
                w if w & !shape::V4_IPS == 0 => scan_pair::<{ shape::V4_IPS }>(a, b, keys, out),
                w if w & !shape::V4_IPS_PORTS_PROTO == 0 => scan_pair::<{ shape::V4_IPS_PORTS_PROTO }>(a, b, keys, out),
                w if w & !shape::IPS_PORTS_PROTO == 0 => scan_pair::<{ shape::IPS_PORTS_PROTO }>(a, b, keys, out),
                _ => scan_pair::<{ u8::MAX }>(a, b, keys, out),
            },
            _ => {
                let mut hits = 0;
                for (k, o) in keys.iter().zip(out) {
                    *o = self.classify(k);
                    hits += usize::from(o.is_some());
                }
                hits
            }
        }
    }

    /// Number of distinct masks: the cost of a miss, in hash probes.
    pub(crate) fn tuple_count(&self) -> usize {
        self.tuples.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(pieces: &[(u16, u16)]) -> Vec<u16> {
        (0..=u16::MAX).filter(|p| pieces.iter().any(|&(v, m)| p & m == v)).collect()
    }

    #[test]
    fn port_ranges_expand_to_exact_prefix_cover() {
        for (lo, hi) in [(0, 65535), (1, 65534), (1024, 65535), (80, 80), (0, 0), (65535, 65535), (1000, 2000), (3, 4)]
        {
            let pieces = port_prefixes(Some(PortRange { lo, hi }));
            assert!(pieces.len() <= 30, "{lo}-{hi}: {} pieces", pieces.len());
            assert_eq!(covered(&pieces), (lo..=hi).collect::<Vec<_>>(), "{lo}-{hi}");
        }
        assert_eq!(port_prefixes(Some(PortRange { lo: 1, hi: 65534 })).len(), 30);
        assert_eq!(port_prefixes(Some(PortRange { lo: 5, hi: 4 })), vec![]);
        assert_eq!(port_prefixes(None), vec![(0, 0)]);
    }

    /// The words of a one-rule set's only tuple.
    fn words_of(m: Match) -> u8 {
        let v = Verdict { rule: 0, action: crate::classifier::Action::Drop };
        let ts = TupleSpace::build([(&m, 1, v)]);
        assert_eq!(ts.tuples.len(), 1);
        ts.tuples[0].words.0
    }

    /// The shapes `classify_burst` compiles a loop for cover the rules they
    /// are named after (a miss would fall back to the slowest loop, silently).
    #[test]
    fn common_rule_shapes_get_their_own_loop() {
        let net = |s: &str| Some(s.parse::<IpNet>().unwrap());
        let tcp = |m: Match| Match { proto: Some(6), dst_port: Some(PortRange::single(5432)), ..m };
        let cases = [
            (Match { dst_ip: net("192.0.2.0/24"), ..Match::default() }, shape::V4_DST),
            (Match { proto: Some(17), ..Match::default() }, shape::V4_DST),
            (Match { src_ip: net("10.0.0.8/29"), ..Match::default() }, shape::V4_SRC),
            (tcp(Match::default()), shape::PORTS_PROTO),
            (Match { src_ip: net("10.0.0.0/8"), dst_ip: net("10.1.0.0/16"), ..Match::default() }, shape::V4_IPS),
            (tcp(Match { dst_ip: net("10.0.0.21/32"), ..Match::default() }), shape::V4_IPS_PORTS_PROTO),
            (tcp(Match { dst_ip: net("2001:db8::/48"), ..Match::default() }), shape::IPS_PORTS_PROTO),
            (Match { src_ip: net("2001:db8::1/128"), ..Match::default() }, shape::IPS_PORTS_PROTO),
        ];
        for (m, shape) in cases {
            let w = words_of(m.clone());
            assert_eq!(w & !shape, 0, "{m:?}: words {w:#010b} not within {shape:#010b}");
        }
        // A symmetric rule (the README's web-to-db): two tuples, both within one shape.
        let m = tcp(Match { src_ip: net("10.0.0.8/29"), dst_ip: net("10.0.0.21/32"), ..Match::default() });
        let v = Verdict { rule: 0, action: crate::classifier::Action::Drop };
        let ts = TupleSpace::build([(&m, 1, v), (&m.mirrored(), 1, v)]);
        assert_eq!(ts.tuples.len(), 2);
        let w = ts.tuples[0].words.0 | ts.tuples[1].words.0;
        assert_eq!(w & !shape::V4_IPS_PORTS_PROTO, 0, "words {w:#010b}");
    }
}
