//! Per-packet header parser: one frame in, one [`FlowKey`] out.
//!
//! Runs on every received packet, so it is written for the hot path: no
//! allocation, no panics (every header goes through a checked
//! [`wire`](crate::wire) view, slices through `get`), a bounded number of
//! steps (at most [`MAX_VLAN_TAGS`] tags and [`MAX_IPV6_EXT_HEADERS`]
//! extension headers), and early returns instead of per-layer state.
//!
//! A damaged packet is still keyed as far as it parsed, so rules on its L2/L3
//! fields keep working; the [`Malformed`] reason is returned beside the key
//! for the worker to count (and for rules or chains that care).

use crate::flow::{proto, FlowKey};
use crate::packet::PortId;
use crate::wire::ethernet::{ethertype, EthernetFrame};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::{next_header, Ipv6ExtHeader, Ipv6Packet};
use crate::wire::l4::{IcmpHeader, Icmpv6Header, SctpHeader, TcpHeader, UdpHeader};
use crate::wire::vlan::VlanTag;
use crate::wire::Error;

/// VLAN tags the key has room for (outer and inner); a third is malformed.
pub const MAX_VLAN_TAGS: usize = 2;

/// IPv6 extension headers walked before giving up, keeping the walk O(1).
/// Real traffic rarely carries more than two or three.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Why a frame could not be parsed completely. The worker counts these per
/// reason; [`Malformed::name`] gives the counter label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Malformed {
    /// Shorter than an Ethernet header: the key only has `in_port`.
    TruncatedEthernet,
    /// A TPID announced a VLAN tag the frame does not hold.
    TruncatedVlan,
    /// More than [`MAX_VLAN_TAGS`] tags; the key stops at the third TPID.
    TooManyVlanTags,
    /// EtherType IPv4 but fewer bytes than the header (20, or IHL × 4).
    TruncatedIpv4,
    /// EtherType IPv4 but the version nibble is not 4.
    BadIpv4Version,
    /// IHL below 5.
    BadIhl,
    /// Total length below the header length, or beyond the frame. In the
    /// second case the ports are still read from what the frame holds.
    BadIpv4TotalLength,
    /// EtherType IPv6 but fewer than 40 bytes.
    TruncatedIpv6,
    /// EtherType IPv6 but the version nibble is not 6.
    BadIpv6Version,
    /// Payload length beyond the frame (ports still read from what is there).
    BadIpv6PayloadLength,
    /// An extension header runs past the payload.
    BadIpv6ExtHeader,
    /// More than [`MAX_IPV6_EXT_HEADERS`] extension headers; `proto` is the
    /// next header where the walk stopped.
    TooManyIpv6ExtHeaders,
    /// The TCP/UDP/SCTP/ICMP header is cut short: the key has no ports.
    TruncatedL4,
}

impl Malformed {
    /// Number of reasons: the length of per-reason counter arrays.
    pub const COUNT: usize = 13;

    /// Every reason in discriminant order, so `ALL[r as usize] == r` and
    /// counters can be indexed by `r as usize`.
    pub const ALL: [Malformed; Self::COUNT] = [
        Malformed::TruncatedEthernet,
        Malformed::TruncatedVlan,
        Malformed::TooManyVlanTags,
        Malformed::TruncatedIpv4,
        Malformed::BadIpv4Version,
        Malformed::BadIhl,
        Malformed::BadIpv4TotalLength,
        Malformed::TruncatedIpv6,
        Malformed::BadIpv6Version,
        Malformed::BadIpv6PayloadLength,
        Malformed::BadIpv6ExtHeader,
        Malformed::TooManyIpv6ExtHeaders,
        Malformed::TruncatedL4,
    ];

    /// Stable snake_case label for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::TruncatedEthernet => "truncated_ethernet",
            Malformed::TruncatedVlan => "truncated_vlan",
            Malformed::TooManyVlanTags => "too_many_vlan_tags",
            Malformed::TruncatedIpv4 => "truncated_ipv4",
            Malformed::BadIpv4Version => "bad_ipv4_version",
            Malformed::BadIhl => "bad_ihl",
            Malformed::BadIpv4TotalLength => "bad_ipv4_total_length",
            Malformed::TruncatedIpv6 => "truncated_ipv6",
            Malformed::BadIpv6Version => "bad_ipv6_version",
            Malformed::BadIpv6PayloadLength => "bad_ipv6_payload_length",
            Malformed::BadIpv6ExtHeader => "bad_ipv6_ext_header",
            Malformed::TooManyIpv6ExtHeaders => "too_many_ipv6_ext_headers",
            Malformed::TruncatedL4 => "truncated_l4",
        }
    }
}

/// Extracts the flow key of `frame` received on `in_port`.
///
/// Never panics and never allocates, whatever the bytes. Returns the key
/// filled as far as the headers could be read, and why parsing stopped early
/// if it did. Non-IP frames (ARP, LLDP, 802.3 length frames...) are keyed by
/// their L2 fields and are not malformed; neither are non-first fragments,
/// which are keyed without ports.
#[inline]
pub fn parse(frame: &[u8], in_port: PortId) -> (FlowKey, Option<Malformed>) {
    let mut key = FlowKey { in_port, ..FlowKey::default() };
    let result = parse_l2(frame, &mut key);
    (key, result.err())
}

#[inline(always)]
fn parse_l2(frame: &[u8], key: &mut FlowKey) -> Result<(), Malformed> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| Malformed::TruncatedEthernet)?;
    key.dst_mac = eth.dst_addr();
    key.src_mac = eth.src_addr();
    let mut ethertype = eth.ethertype();
    let mut rest = eth.payload();
    key.ethertype = ethertype;

    if ethertype::is_vlan_tpid(ethertype) {
        let outer = VlanTag::new_checked(rest).map_err(|_| Malformed::TruncatedVlan)?;
        key.outer_vlan = outer.vid();
        ethertype = outer.ethertype();
        rest = outer.payload();
        key.ethertype = ethertype;
        if ethertype::is_vlan_tpid(ethertype) {
            let inner = VlanTag::new_checked(rest).map_err(|_| Malformed::TruncatedVlan)?;
            key.inner_vlan = inner.vid();
            ethertype = inner.ethertype();
            rest = inner.payload();
            key.ethertype = ethertype;
            if ethertype::is_vlan_tpid(ethertype) {
                return Err(Malformed::TooManyVlanTags);
            }
        }
    }

    match ethertype {
        ethertype::IPV4 => parse_ipv4(rest, key),
        ethertype::IPV6 => parse_ipv6(rest, key),
        _ => Ok(()),
    }
}

#[inline(always)]
fn parse_ipv4(data: &[u8], key: &mut FlowKey) -> Result<(), Malformed> {
    let ip = Ipv4Packet::new_checked(data).map_err(|e| match e {
        Error::Truncated => Malformed::TruncatedIpv4,
        Error::BadVersion => Malformed::BadIpv4Version,
        Error::BadHeaderLen => Malformed::BadIhl,
    })?;
    key.ip_version = 4;
    key.src_ip = v4_mapped(ip.src_octets());
    key.dst_ip = v4_mapped(ip.dst_octets());
    let protocol = ip.protocol();
    key.proto = protocol;

    let header_len = ip.header_len();
    let total_len = usize::from(ip.total_len());
    if total_len < header_len {
        return Err(Malformed::BadIpv4TotalLength);
    }
    // Bytes beyond total_len are Ethernet padding; fewer bytes than total_len
    // is a lie (or a snap length), reported but parsed as far as it goes.
    let (end, length_error) = if total_len <= data.len() {
        (total_len, None)
    } else {
        (data.len(), Some(Malformed::BadIpv4TotalLength))
    };
    let l4_result = if ip.frag_offset() == 0 {
        parse_l4(protocol, data.get(header_len..end).unwrap_or_default(), key)
    } else {
        Ok(())
    };
    // The length lie is the cause of any L4 truncation it brings, so it wins.
    length_error.map_or(l4_result, Err)
}

#[inline(always)]
fn parse_ipv6(data: &[u8], key: &mut FlowKey) -> Result<(), Malformed> {
    let ip = Ipv6Packet::new_checked(data).map_err(|e| match e {
        Error::BadVersion => Malformed::BadIpv6Version,
        Error::Truncated | Error::BadHeaderLen => Malformed::TruncatedIpv6,
    })?;
    key.ip_version = 6;
    key.src_ip = ip.src_octets();
    key.dst_ip = ip.dst_octets();

    let payload = ip.payload();
    let payload_len = usize::from(ip.payload_len());
    match payload.get(..payload_len) {
        Some(payload) => walk_ipv6(ip.next_header(), payload, key),
        None => {
            // As for IPv4: key what is there, report the length as the cause.
            let _ = walk_ipv6(ip.next_header(), payload, key);
            Err(Malformed::BadIpv6PayloadLength)
        }
    }
}

/// Walks the extension headers from next-header `nh` to the upper layer.
/// `proto` ends up as the last next-header reached, even when the walk stops early.
#[inline(always)]
fn walk_ipv6(mut nh: u8, mut rest: &[u8], key: &mut FlowKey) -> Result<(), Malformed> {
    let mut walked = 0;
    while matches!(
        nh,
        next_header::HOP_BY_HOP | next_header::ROUTING | next_header::DEST_OPTS | next_header::AH | next_header::FRAGMENT
    ) {
        key.proto = nh;
        if walked == MAX_IPV6_EXT_HEADERS {
            return Err(Malformed::TooManyIpv6ExtHeaders);
        }
        walked += 1;
        let ext = Ipv6ExtHeader::new_checked(rest, nh).map_err(|_| Malformed::BadIpv6ExtHeader)?;
        let later_fragment = nh == next_header::FRAGMENT && ext.frag_offset() != 0;
        nh = ext.next_header();
        rest = ext.payload();
        if later_fragment {
            key.proto = nh;
            return Ok(());
        }
    }
    key.proto = nh;
    parse_l4(nh, rest, key)
}

/// Reads ports (or ICMP type/code) for the protocols that have them; any
/// other protocol (ESP, GRE, No Next Header...) leaves them zero.
#[inline(always)]
fn parse_l4(protocol: u8, data: &[u8], key: &mut FlowKey) -> Result<(), Malformed> {
    let (src, dst) = match protocol {
        proto::TCP => TcpHeader::new_checked(data).map(|h| (h.src_port(), h.dst_port())),
        proto::UDP => UdpHeader::new_checked(data).map(|h| (h.src_port(), h.dst_port())),
        proto::SCTP => SctpHeader::new_checked(data).map(|h| (h.src_port(), h.dst_port())),
        proto::ICMP => IcmpHeader::new_checked(data).map(|h| (h.msg_type().into(), h.msg_code().into())),
        proto::ICMPV6 => Icmpv6Header::new_checked(data).map(|h| (h.msg_type().into(), h.msg_code().into())),
        _ => return Ok(()),
    }
    .map_err(|_| Malformed::TruncatedL4)?;
    key.src_port = src;
    key.dst_port = dst;
    Ok(())
}

/// `::ffff:a.b.c.d`, the form [`FlowKey`] stores IPv4 addresses in.
#[inline(always)]
fn v4_mapped(o: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, o[0], o[1], o[2], o[3]]
}
