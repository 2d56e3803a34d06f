//! `dedup`: shed the copy of a packet this worker already copied within a
//! short window — the same packet seen on ingress and egress, or on the ports
//! of both VMs of a conversation.
//!
//! Arguments: `window_ns`. Counters: `input`, `output` (first sighting),
//! `shed` (duplicate). Work per packet: one pass over the copy's bytes (the
//! same order as the copy itself, at most the packet's length) and one
//! 64-byte bucket of the table.
//!
//! What counts as "the same packet": the copy as planned so far (from
//! `plan.start`, so after a `strip` the inner frame is compared), from its IP
//! header to the end of the IP datagram (Ethernet padding excluded), with the
//! fields a router rewrites left out: the IPv4 TTL and header checksum, the
//! IPv6 hop limit. The L2 header (MACs, VLAN tags) is left out as well, since
//! it differs between the two sides of a router or between an access and a
//! trunk port. A non-IP frame is compared whole, an IP packet whose
//! header does not parse from its IP header on. Everything else must match
//! bit for bit (a packet an ECN-capable router marked CE is a new packet).
//!
//! The time of a sighting is the packet's receive timestamp, or the burst's
//! time when the port gives none; two sightings are duplicates when their
//! times differ by at most `window_ns` (either order: two ports' timestamps
//! can be slightly out of step). The first sighting's time is kept: a third
//! sighting is compared with the first.
//!
//! Limits: the table is per worker (a duplicate that reaches another worker
//! is not seen; symmetric RSS puts both directions of a flow on one worker,
//! but not the two ports of a router unless they share a worker). It has
//! [`ENTRIES`] slots in 4-way buckets; when a bucket is full the oldest
//! entry is evicted, so under a rate above `ENTRIES / window` some
//! duplicates are kept (never a wrong shed). Entries hold the full 64-bit
//! hash, keyed with a per-process random seed, so a distinct packet is shed
//! with probability about 2^-63 per pair compared, and an outsider cannot
//! craft packets that collide to hide from the monitor.

use super::{CopyPlan, StageCounters, StageIn};
use dataplane::parser::MAX_VLAN_TAGS;
use dataplane::wire::ethernet::{ethertype, EthernetFrame, HEADER_LEN as ETH_LEN};
use dataplane::wire::ipv4::{self, Ipv4Packet};
use dataplane::wire::ipv6::{self, Ipv6Packet};
use dataplane::wire::vlan::{VlanTag, HEADER_LEN as VLAN_LEN};
use std::hash::{BuildHasher, RandomState};

/// Slots in one worker's table: 64 KiB, a quarter of a typical L2 cache.
pub const ENTRIES: usize = 4096;
const WAYS: usize = 4;
const BUCKETS: usize = ENTRIES / WAYS;

/// One sighting. A zero hash marks a free slot (real hashes have bit 0 set).
#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u64,
    seen_ns: u64,
}

/// Four slots in one cache line, so a lookup touches one line.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Bucket([Slot; WAYS]);

/// The runtime form of a `dedup` stage in one worker.
pub struct Dedup {
    window_ns: u64,
    table: Box<[Bucket]>,
    key: [u64; 2],
}

impl Dedup {
    /// A stage shedding copies of packets seen again within `window_ns`.
    /// Allocates its table here, once.
    pub fn new(window_ns: u64) -> Dedup {
        let rs = RandomState::new();
        let key = [rs.hash_one(1u64), rs.hash_one(2u64)];
        Dedup { window_ns, table: vec![Bucket::default(); BUCKETS].into_boxed_slice(), key }
    }

    /// Sheds the copy if it is a duplicate, records it otherwise.
    #[inline]
    pub fn process(&mut self, s: &StageIn<'_>, plan: &mut CopyPlan, c: &StageCounters) {
        c.input.add(1);
        let data = s.pkt.data().get(plan.start as usize..).unwrap_or(&[]);
        let hash = invariant_hash(data, self.key) | 1;
        let now = if s.pkt.meta.ts_ns != 0 { s.pkt.meta.ts_ns } else { s.now_ns };
        // The top bits pick the bucket; the full hash is compared.
        let Some(bucket) = self.table.get_mut((hash >> 54) as usize % BUCKETS) else {
            c.output.add(1);
            return;
        };
        // Replace, in this order: the same packet's stale entry, a free slot, the oldest entry.
        let (mut victim, mut rank) = (0, (true, u64::MAX));
        for (i, slot) in bucket.0.iter().enumerate() {
            if slot.hash == hash {
                if slot.seen_ns.abs_diff(now) <= self.window_ns {
                    plan.keep = false;
                    c.shed.add(1);
                    return;
                }
                victim = i;
                break;
            }
            if (slot.hash != 0, slot.seen_ns) < rank {
                (victim, rank) = (i, (slot.hash != 0, slot.seen_ns));
            }
        }
        bucket.0[victim] = Slot { hash, seen_ns: now };
        c.output.add(1);
    }
}

/// Hash of the bytes of `frame` that stay the same in transit (see the module doc).
fn invariant_hash(frame: &[u8], key: [u64; 2]) -> u64 {
    let mut h = Hasher::new(key);
    // The IP header, copied with the fields routers rewrite zeroed, then the
    // rest of the datagram as it is.
    let mut header = [0u8; MAX_IP_HEADER];
    let (header_len, rest) = match l3_of(frame) {
        Some((ethertype::IPV4, l3)) => match Ipv4Packet::new_checked(l3) {
            Ok(ip) => {
                let len = ip.header_len();
                let end = usize::from(ip.total_len()).clamp(len, l3.len());
                let (Some(hdr), Some(dst)) = (l3.get(..len), header.get_mut(..len)) else { return h.finish(frame) };
                dst.copy_from_slice(hdr);
                header[ipv4::field::TTL] = 0;
                header[ipv4::field::CHECKSUM..ipv4::field::CHECKSUM + 2].fill(0);
                (len, l3.get(len..end).unwrap_or(&[]))
            }
            Err(_) => return h.finish(l3),
        },
        Some((ethertype::IPV6, l3)) => match Ipv6Packet::new_checked(l3) {
            Ok(ip) => {
                let end = (ipv6::HEADER_LEN + usize::from(ip.payload_len())).min(l3.len());
                let Some(hdr) = l3.get(..ipv6::HEADER_LEN) else { return h.finish(frame) };
                header[..ipv6::HEADER_LEN].copy_from_slice(hdr);
                header[ipv6::field::HOP_LIMIT] = 0;
                (ipv6::HEADER_LEN, l3.get(ipv6::HEADER_LEN..end).unwrap_or(&[]))
            }
            Err(_) => return h.finish(l3),
        },
        _ => return h.finish(frame),
    };
    h.write(header.get(..header_len).unwrap_or(&[]));
    h.finish(rest)
}

/// Longest IP header [`invariant_hash`] rewrites: IPv4 with 40 bytes of options.
const MAX_IP_HEADER: usize = 60;

/// The EtherType after the VLAN tags and the bytes after them, if `frame` is
/// long enough to have them.
fn l3_of(frame: &[u8]) -> Option<(u16, &[u8])> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (mut et, mut rest) = (eth.ethertype(), frame.get(ETH_LEN..)?);
    for _ in 0..MAX_VLAN_TAGS {
        if !ethertype::is_vlan_tpid(et) {
            break;
        }
        let tag = VlanTag::new_checked(rest).ok()?;
        et = tag.ethertype();
        rest = rest.get(VLAN_LEN..)?;
    }
    Some((et, rest))
}

/// A keyed hash: 16 bytes per 64×64→128-bit multiply, folded (the
/// construction of foldhash and wyhash), in two independent lanes over
/// 32-byte steps so the multiplies of a long payload overlap. Each piece is
/// padded on its own: pieces are cut at the same places in every sighting of
/// a packet.
struct Hasher {
    acc: [u64; 2],
    key: [u64; 2],
    len: u64,
}

impl Hasher {
    fn new(key: [u64; 2]) -> Hasher {
        Hasher { acc: [key[0], key[1].rotate_left(32)], key, len: 0 }
    }

    #[inline(always)]
    fn lane(acc: u64, key: u64, b: &[u8; 16]) -> u64 {
        let lo = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let hi = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        fold_mul(lo ^ acc, hi ^ key)
    }

    #[inline]
    fn write(&mut self, data: &[u8]) {
        self.len = self.len.wrapping_mul(0x1_0000).wrapping_add(data.len() as u64);
        let (wide, rest) = data.as_chunks::<32>();
        let [mut a, mut b] = self.acc;
        for w in wide {
            let (x, y) = w.split_at(16);
            a = Self::lane(a, self.key[1], x.as_array().unwrap_or(&[0; 16]));
            b = Self::lane(b, self.key[0], y.as_array().unwrap_or(&[0; 16]));
        }
        let (blocks, tail) = rest.as_chunks::<16>();
        for block in blocks {
            a = Self::lane(a, self.key[1], block);
        }
        if !tail.is_empty() {
            let mut last = [0u8; 16];
            last[..tail.len()].copy_from_slice(tail);
            b = Self::lane(b, self.key[0], &last);
        }
        self.acc = [a, b];
    }

    /// Hashes the last piece and returns the hash.
    #[inline]
    fn finish(mut self, last: &[u8]) -> u64 {
        self.write(last);
        fold_mul(self.acc[0] ^ self.len, self.acc[1] ^ 0x243f_6a88_85a3_08d3)
    }
}

#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::flow::{FlowKey, MacAddr};
    use dataplane::packet::{Meta, Packet};
    use dataplane::wire::build::PacketBuilder;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const R: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x0f]);

    fn v4(ttl: u8, src_mac: MacAddr, vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet(src_mac, B);
        if let Some(v) = vlan {
            b = b.vlan(v);
        }
        b.ipv4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()).ttl(ttl).udp(1000, 53).payload(payload).build()
    }

    fn v6(hops: u8, payload: &[u8]) -> Vec<u8> {
        PacketBuilder::ethernet(A, B)
            .ipv6("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap())
            .ttl(hops)
            .tcp(1000, 80)
            .payload(payload)
            .build()
    }

    /// Runs `d` on `frame` at `now` (no port timestamp unless `ts`); true if the copy is kept.
    fn see(d: &mut Dedup, c: &StageCounters, frame: &[u8], now: u64, ts: u64) -> bool {
        let pkt = Packet::from_slice(frame, Meta { ts_ns: ts, ..Meta::default() });
        let mut plan = CopyPlan::default();
        d.process(&StageIn { pkt: &pkt, key: &FlowKey::default(), rule: 0, chain: 0, now_ns: now }, &mut plan, c);
        plan.keep
    }

    #[test]
    fn routed_duplicate_is_shed_within_the_window_only() {
        let mut d = Dedup::new(1_000_000);
        let c = StageCounters::default();
        let first = v4(64, A, None, b"query");
        // After a router: other TTL (so other checksum), other MAC, now tagged.
        let routed = v4(63, R, Some(7), b"query");
        assert_ne!(first[14 + 10..14 + 12], routed[18 + 10..18 + 12], "checksums differ");
        assert!(see(&mut d, &c, &first, 10_000_000, 0));
        assert!(!see(&mut d, &c, &routed, 10_500_000, 0), "duplicate within 0.5 ms");
        assert!(!see(&mut d, &c, &first, 9_800_000, 0), "earlier timestamp on another port");
        assert!(see(&mut d, &c, &routed, 11_000_001, 0), "past the window: a new copy");
        assert!(see(&mut d, &c, &v4(64, A, None, b"other"), 11_000_002, 0), "other payload");
        assert_eq!((c.input.get(), c.output.get(), c.shed.get()), (5, 3, 2));
    }

    #[test]
    fn ipv6_ignores_hop_limit_and_prefers_port_timestamps() {
        let mut d = Dedup::new(1_000);
        let c = StageCounters::default();
        assert!(see(&mut d, &c, &v6(64, b"x"), 1, 5_000));
        // The burst clock is far away, but the port timestamps are 500 ns apart.
        assert!(!see(&mut d, &c, &v6(60, b"x"), 1_000_000, 5_500));
        assert!(see(&mut d, &c, &v6(60, b"y"), 1_000_000, 5_500));
    }

    #[test]
    fn padding_is_not_compared_but_other_bytes_are() {
        let mut d = Dedup::new(1_000);
        let c = StageCounters::default();
        let short = v4(64, A, None, b"a");
        let mut padded = short.clone();
        padded.resize(60, 0xee);
        assert!(see(&mut d, &c, &short, 1, 0));
        assert!(!see(&mut d, &c, &padded, 2, 0));
        let mut flipped = short.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(see(&mut d, &c, &flipped, 3, 0));
    }

    #[test]
    fn non_ip_and_truncated_frames_are_compared_whole() {
        let mut d = Dedup::new(1_000);
        let c = StageCounters::default();
        let arp = PacketBuilder::ethernet(A, MacAddr::BROADCAST).ethertype(0x0806).payload(&[1; 28]).build();
        assert!(see(&mut d, &c, &arp, 1, 0));
        assert!(!see(&mut d, &c, &arp, 2, 0));
        let frame = v4(64, A, Some(3), b"payload");
        for cut in 0..=frame.len() {
            see(&mut d, &c, &frame[..cut], 10 + cut as u64, 0);
        }
    }

    #[test]
    fn a_full_table_evicts_instead_of_failing() {
        let mut d = Dedup::new(u64::MAX);
        let c = StageCounters::default();
        for i in 0..(4 * ENTRIES as u32) {
            assert!(see(&mut d, &c, &v4(64, A, None, &i.to_le_bytes()), 1, 0));
        }
        // The most recent packets are still remembered.
        assert!(!see(&mut d, &c, &v4(64, A, None, &(4 * ENTRIES as u32 - 1).to_le_bytes()), 2, 0));
    }

    #[test]
    fn ipv4_options_are_compared_and_ttl_is_not() {
        let with = |opt: &[u8], ttl| {
            PacketBuilder::ethernet(A, B)
                .ipv4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
                .ipv4_options(opt)
                .ttl(ttl)
                .udp(1, 2)
                .build()
        };
        let mut d = Dedup::new(1_000);
        let c = StageCounters::default();
        assert!(see(&mut d, &c, &with(&[0x94, 4, 0, 0], 64), 1, 0));
        assert!(!see(&mut d, &c, &with(&[0x94, 4, 0, 0], 3), 1, 0));
        assert!(see(&mut d, &c, &with(&[0x94, 4, 0, 1], 64), 1, 0));
    }
}
