//! `strip`: remove outer VXLAN or Geneve encapsulation and VLAN tags from
//! copies, for tools that cannot decode overlays. The original is untouched:
//! the stage only moves the plan's start and sets its hole.
//!
//! Arguments: `layers`, outermost first; each is tried in turn on the copy as
//! planned so far, and a layer the packet does not have leaves the plan as it
//! is (not an error: one chain can take both tagged and untagged traffic).
//!
//! * `vxlan`: Ethernet (up to two VLAN tags), IPv4 (not a fragment) or IPv6
//!   (UDP as the first next header), UDP to port 4789, an 8-byte VXLAN
//!   header with the I flag: the copy starts at the inner Ethernet frame.
//! * `geneve`: the same outer headers to UDP port 6081, a version-0 Geneve
//!   header (8 bytes plus `opt_len` × 4 of options) whose protocol type is
//!   0x6558 (Ethernet): the copy starts at the inner frame. Other payloads
//!   (IP directly) are left alone, since the copy must stay an Ethernet frame.
//! * `vlan`: the 802.1Q / 802.1ad tags (up to two) after the MACs of the frame
//!   the copy starts with become the plan's hole, so the copy is the MACs, the
//!   inner EtherType and the payload. The plan has one hole: a second `vlan`
//!   layer while the first one's hole is still inside the copy does nothing.
//!
//! An overlay is stripped only when its header and an inner Ethernet header
//! are in the buffer; a tag only when it is whole. Counters: `input`,
//! `output`. Sheds nothing. Work per packet: O(header length), a fixed number
//! of header views per layer.

use super::{CopyPlan, StageCounters, StageIn, StripLayer};
use dataplane::flow::proto;
use dataplane::parser::MAX_VLAN_TAGS;
use dataplane::wire::ethernet::{ethertype, EthernetFrame};
use dataplane::wire::ipv4::Ipv4Packet;
use dataplane::wire::ipv6::{Ipv6Packet, HEADER_LEN as IPV6_LEN};
use dataplane::wire::l4::UdpHeader;
use dataplane::wire::vlan::{VlanTag, HEADER_LEN as VLAN_LEN};

/// IANA UDP port of VXLAN (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;
/// IANA UDP port of Geneve (RFC 8926).
pub const GENEVE_PORT: u16 = 6081;
/// Geneve protocol type of an Ethernet payload (transparent Ethernet bridging).
const ETHERNET_BRIDGING: u16 = 0x6558;
/// VXLAN "valid VNI" flag, in the first byte of its header.
const VXLAN_FLAG_I: u8 = 0x08;
/// Fixed part of the VXLAN and Geneve headers.
const TUNNEL_HEADER_LEN: usize = 8;
/// Offset of the 802.1Q/802.1ad TPID in an Ethernet frame.
const TPID_AT: usize = 12;

/// The runtime form of a `strip` stage.
pub struct Strip {
    layers: Box<[StripLayer]>,
}

impl Strip {
    /// A stage removing `layers`, outermost first.
    pub fn new(layers: Vec<StripLayer>) -> Strip {
        Strip { layers: layers.into_boxed_slice() }
    }

    /// Moves the plan's start past stripped overlays and sets its hole over stripped tags.
    #[inline]
    pub fn process(&mut self, s: &StageIn<'_>, plan: &mut CopyPlan, c: &StageCounters) {
        c.input.add(1);
        let data = s.pkt.data();
        for layer in self.layers.iter() {
            let start = plan.start as usize;
            let Some(frame) = data.get(start..) else { break };
            match layer {
                StripLayer::Vxlan => {
                    if let Some(inner) = tunnel_payload(frame, VXLAN_PORT).and_then(vxlan_inner) {
                        plan.start = (start + inner) as u32;
                    }
                }
                StripLayer::Geneve => {
                    if let Some(inner) = tunnel_payload(frame, GENEVE_PORT).and_then(geneve_inner) {
                        plan.start = (start + inner) as u32;
                    }
                }
                StripLayer::Vlan => {
                    let hole_in_copy = plan.hole.0 < plan.hole.1 && plan.hole.1 > plan.start;
                    let tags = vlan_tags_len(frame);
                    if !hole_in_copy && tags > 0 {
                        let at = (start + TPID_AT) as u32;
                        plan.hole = (at, at + tags as u32);
                    }
                }
            }
        }
        c.output.add(1);
    }
}

/// Bytes taken by the whole VLAN tags (TPID + TCI each) of `frame`, 0 if none.
fn vlan_tags_len(frame: &[u8]) -> usize {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return 0 };
    let (mut et, mut rest, mut n) = (eth.ethertype(), eth.payload(), 0);
    while n < MAX_VLAN_TAGS && ethertype::is_vlan_tpid(et) {
        // The view needs the TCI and the next EtherType, so the copy keeps a whole EtherType.
        let Ok(tag) = VlanTag::new_checked(rest) else { break };
        (et, rest, n) = (tag.ethertype(), tag.payload(), n + 1);
    }
    n * VLAN_LEN
}

/// If `frame` is Ethernet/IP/UDP to `port`, the offset of the UDP payload in
/// `frame` and that payload.
fn tunnel_payload(frame: &[u8], port: u16) -> Option<(usize, &[u8])> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (mut et, mut l3) = (eth.ethertype(), eth.payload());
    for _ in 0..MAX_VLAN_TAGS {
        if !ethertype::is_vlan_tpid(et) {
            break;
        }
        let tag = VlanTag::new_checked(l3).ok()?;
        (et, l3) = (tag.ethertype(), tag.payload());
    }
    let l4 = match et {
        ethertype::IPV4 => {
            let ip = Ipv4Packet::new_checked(l3).ok()?;
            if ip.protocol() != proto::UDP || ip.frag_offset() != 0 || ip.more_frags() {
                return None;
            }
            ip.payload()
        }
        ethertype::IPV6 => {
            let ip = Ipv6Packet::new_checked(l3).ok()?;
            if ip.next_header() != proto::UDP {
                return None;
            }
            l3.get(IPV6_LEN..)?
        }
        _ => return None,
    };
    let udp = UdpHeader::new_checked(l4).ok()?;
    if udp.dst_port() != port {
        return None;
    }
    let payload = l4.get(UdpHeader::<&[u8]>::HEADER_LEN..)?;
    Some((frame.len() - payload.len(), payload))
}

/// Offset of the inner frame, in the outer frame, of a VXLAN payload at `at`.
fn vxlan_inner((at, vxlan): (usize, &[u8])) -> Option<usize> {
    let flags = *vxlan.first()?;
    if flags & VXLAN_FLAG_I == 0 {
        return None;
    }
    inner_frame(at, vxlan, TUNNEL_HEADER_LEN)
}

/// Offset of the inner frame, in the outer frame, of a Geneve payload at `at`.
fn geneve_inner((at, geneve): (usize, &[u8])) -> Option<usize> {
    let (&ver_opt, protocol) = (geneve.first()?, geneve.get(2..4)?);
    if ver_opt >> 6 != 0 || u16::from_be_bytes([protocol[0], protocol[1]]) != ETHERNET_BRIDGING {
        return None;
    }
    inner_frame(at, geneve, TUNNEL_HEADER_LEN + usize::from(ver_opt & 0x3f) * 4)
}

/// `at + header_len` if the tunnel payload holds the header and an inner Ethernet header.
fn inner_frame(at: usize, tunnel: &[u8], header_len: usize) -> Option<usize> {
    EthernetFrame::new_checked(tunnel.get(header_len..)?).ok()?;
    Some(at + header_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::flow::{FlowKey, MacAddr};
    use dataplane::packet::{Meta, Packet, Pool};
    use dataplane::wire::build::PacketBuilder;
    use dataplane::wire::ethernet::HEADER_LEN as ETH_LEN;

    const VM1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const VM2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const VTEP1: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);
    const VTEP2: MacAddr = MacAddr([2, 0, 0, 0, 1, 2]);

    fn inner(vlans: &[u16]) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet(VM1, VM2);
        for &v in vlans {
            b = b.vlan(v);
        }
        b.ipv4("192.168.0.1".parse().unwrap(), "192.168.0.2".parse().unwrap())
            .tcp(40000, 443)
            .payload(b"tenant")
            .build()
    }

    fn vxlan_header(vni: u32) -> [u8; 8] {
        let v = vni.to_be_bytes();
        [VXLAN_FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]
    }

    /// Outer Ethernet (with `vlans`)/IPv4 or IPv6/UDP to `port`, carrying `tunnel` then `inner`.
    fn outer(v6: bool, vlans: &[u16], port: u16, tunnel: &[u8], inner: &[u8]) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet(VTEP1, VTEP2);
        for &v in vlans {
            b = b.vlan(v);
        }
        b = if v6 {
            b.ipv6("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap())
        } else {
            b.ipv4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        };
        b.udp(51000, port).payload(&[tunnel, inner].concat()).build()
    }

    /// The copy `layers` make of `frame` (bytes and wire length) and the stage's counters.
    fn strip(layers: &[StripLayer], frame: &[u8]) -> (Vec<u8>, usize, CopyPlan) {
        let pkt = Packet::from_slice(frame, Meta::default());
        let c = StageCounters::default();
        let mut plan = CopyPlan::default();
        Strip::new(layers.to_vec()).process(
            &StageIn { pkt: &pkt, key: &FlowKey::default(), rule: 0, chain: 0, now_ns: 0 },
            &mut plan,
            &c,
        );
        assert_eq!((c.input.get(), c.output.get(), c.shed.get()), (1, 1, 0));
        let pool = Pool::new(1, 2048);
        let mut dst = pool.alloc().unwrap();
        let n = plan.fill(&pkt, &mut dst);
        assert_eq!(n, dst.len());
        (dst.data().to_vec(), plan.image_len(&pkt), plan)
    }

    #[test]
    fn vxlan_over_ipv4_and_ipv6_with_outer_vlans() {
        let want = inner(&[]);
        for (v6, vlans) in [(false, &[][..]), (true, &[][..]), (false, &[100][..]), (true, &[100, 200][..])] {
            let frame = outer(v6, vlans, VXLAN_PORT, &vxlan_header(5001), &want);
            let (copy, wire, _) = strip(&[StripLayer::Vxlan], &frame);
            assert_eq!((copy, wire), (want.clone(), want.len()), "v6 {v6} vlans {vlans:?}");
        }
    }

    #[test]
    fn geneve_with_options_and_only_ethernet_payloads() {
        let want = inner(&[]);
        // Version 0, two 4-byte words of options, protocol 0x6558, VNI 7.
        let mut header = vec![0x02, 0, 0x65, 0x58, 0, 0, 7, 0];
        header.extend_from_slice(&[0x01, 0x02, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef]);
        let frame = outer(false, &[], GENEVE_PORT, &header, &want);
        assert_eq!(strip(&[StripLayer::Geneve], &frame).0, want);
        assert_eq!(strip(&[StripLayer::Geneve], &outer(true, &[], GENEVE_PORT, &header, &want)).0, want);
        // Geneve carrying IPv4 directly is left whole.
        header[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = outer(false, &[], GENEVE_PORT, &header, &want[14..]);
        assert_eq!(strip(&[StripLayer::Geneve], &ip).0, ip);
        // So is a Geneve version this code does not know.
        let mut v1 = vec![0x40, 0, 0x65, 0x58, 0, 0, 7, 0];
        v1.extend_from_slice(&want);
        let other = outer(false, &[], GENEVE_PORT, &v1[..8], &want);
        assert_eq!(strip(&[StripLayer::Geneve], &other).0, other);
    }

    #[test]
    fn absent_layers_leave_the_copy_whole() {
        let plain = inner(&[]);
        let all = [StripLayer::Vxlan, StripLayer::Geneve, StripLayer::Vlan];
        assert_eq!(strip(&all, &plain).0, plain);
        // VXLAN on the Geneve port, Geneve on the VXLAN port, VXLAN without the I flag.
        let on_geneve_port = outer(false, &[], GENEVE_PORT, &vxlan_header(1), &plain);
        assert_eq!(strip(&[StripLayer::Vxlan], &on_geneve_port).0, on_geneve_port);
        let no_i = outer(false, &[], VXLAN_PORT, &[0; 8], &plain);
        assert_eq!(strip(&[StripLayer::Vxlan], &no_i).0, no_i);
        // A first fragment of an IPv4 datagram is not stripped.
        let frag = PacketBuilder::ethernet(VTEP1, VTEP2)
            .ipv4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
            .ipv4_fragment(0, true)
            .udp(51000, VXLAN_PORT)
            .payload(&[&vxlan_header(1)[..], &plain].concat())
            .build();
        assert_eq!(strip(&[StripLayer::Vxlan], &frag).0, frag);
    }

    #[test]
    fn vlan_and_qinq_tags_become_the_hole() {
        let want = inner(&[]);
        for vlans in [&[10][..], &[10, 20][..]] {
            let tagged = inner(vlans);
            let (copy, wire, plan) = strip(&[StripLayer::Vlan], &tagged);
            assert_eq!((copy.as_slice(), wire), (want.as_slice(), want.len()), "{vlans:?}");
            assert_eq!(plan.hole, (12, 12 + 4 * vlans.len() as u32));
        }
    }

    #[test]
    fn vxlan_then_inner_qinq() {
        let want = inner(&[]);
        let frame = outer(false, &[300], VXLAN_PORT, &vxlan_header(9), &inner(&[10, 20]));
        let (copy, wire, plan) = strip(&[StripLayer::Vxlan, StripLayer::Vlan], &frame);
        assert_eq!((copy.as_slice(), wire), (want.as_slice(), want.len()));
        let at = (14 + 4 + 20 + 8 + 8 + 12) as u32;
        assert_eq!((plan.start, plan.hole), (at - 12, (at, at + 8)));
        // Outer tag stripped first, then the overlay: the outer hole falls
        // before the start and the inner tags get the hole.
        let (copy, ..) = strip(&[StripLayer::Vlan, StripLayer::Vxlan, StripLayer::Vlan], &frame);
        assert_eq!(copy, want);
        // With the outer tag's hole still in the copy, a second `vlan` does nothing.
        let (_, _, plan) = strip(&[StripLayer::Vlan, StripLayer::Vlan], &inner(&[10]));
        assert_eq!(plan.hole, (12, 16));
    }

    #[test]
    fn truncated_frames_never_panic_and_strip_only_whole_headers() {
        let inner_frame = inner(&[10]);
        let layers = [StripLayer::Vlan, StripLayer::Vxlan, StripLayer::Geneve, StripLayer::Vlan];
        for (port, tunnel) in
            [(VXLAN_PORT, vxlan_header(1).to_vec()), (GENEVE_PORT, vec![0x01, 0, 0x65, 0x58, 0, 0, 1, 0, 1, 2, 3, 4])]
        {
            let frame = outer(false, &[5], port, &tunnel, &inner_frame);
            let inner_at = frame.len() - inner_frame.len();
            for cut in 0..=frame.len() {
                let (copy, wire, plan) = strip(&layers, &frame[..cut]);
                if cut < inner_at + ETH_LEN {
                    assert_eq!(plan.start, 0, "cut {cut}: overlay stripped without a whole inner header");
                } else {
                    assert_eq!(plan.start as usize, inner_at, "cut {cut}");
                }
                assert_eq!(copy.len(), wire, "cut {cut}");
                assert!(copy.len() <= cut);
            }
        }
    }
}
