//! Owned packet builder for tests, proptests, benches and other crates'
//! fixtures (behind the `testutil` feature).
//!
//! It writes through the same views the parser reads with, and fills every
//! length and checksum (IPv4 header, TCP/UDP/ICMPv6 with pseudo-header, ICMP,
//! SCTP CRC32c) so that captures of its output show no errors in tshark.
//!
//! ```
//! use dataplane::flow::MacAddr;
//! use dataplane::wire::build::PacketBuilder;
//! let frame = PacketBuilder::ethernet(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]))
//!     .vlan(100)
//!     .ipv4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
//!     .tcp(40000, 80)
//!     .payload(b"GET /")
//!     .pad_to(60)
//!     .build();
//! assert_eq!(frame.len(), 14 + 4 + 20 + 20 + 5);
//! ```
//!
//! Overlay frames: an outer builder with an IP layer takes an inner frame as
//! its UDP payload through [`PacketBuilder::vxlan`] or
//! [`PacketBuilder::geneve`] (plus [`PacketBuilder::geneve_option`] and
//! [`PacketBuilder::geneve_protocol`]):
//!
//! ```
//! # use dataplane::flow::MacAddr;
//! # use dataplane::wire::build::PacketBuilder;
//! let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
//! let inner = PacketBuilder::ethernet(a, b)
//!     .ipv4("192.168.0.1".parse().unwrap(), "192.168.0.2".parse().unwrap())
//!     .tcp(40000, 80)
//!     .build();
//! let frame = PacketBuilder::ethernet(MacAddr([2, 0, 0, 0, 1, 1]), MacAddr([2, 0, 0, 0, 1, 2]))
//!     .ipv4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
//!     .vxlan(5001, &inner)
//!     .build();
//! assert_eq!(frame.len(), 14 + 20 + 8 + 8 + inner.len());
//! ```
//!
//! Misuse (L4 without IP, options on IPv6) is a bug in the test, so `build`
//! panics with a message rather than returning an error.

use super::ethernet::{ethertype, EthernetFrame, HEADER_LEN as ETH_LEN};
use super::geneve::{self, GeneveHeader, HEADER_LEN as GENEVE_LEN};
use super::ipv4::{checksum, Ipv4Packet, FLAG_DF, FLAG_MF, MIN_HEADER_LEN as IPV4_LEN};
use super::ipv6::{ext_field, next_header, Ipv6Packet, HEADER_LEN as IPV6_LEN};
use super::l4::{tcp_flags, IcmpHeader, Icmpv6Header, SctpHeader, TcpHeader, UdpHeader};
use super::vlan::{VlanTag, HEADER_LEN as VLAN_LEN};
use super::vxlan::{self, VxlanHeader, HEADER_LEN as VXLAN_LEN};
use crate::flow::{proto, MacAddr};
use core::net::{Ipv4Addr, Ipv6Addr};

/// EtherType used when neither an IP layer nor [`PacketBuilder::ethertype`]
/// says otherwise: IEEE 802 "local experimental", never a real protocol.
const DEFAULT_ETHERTYPE: u16 = 0x88b5;

/// The network layer chosen.
#[derive(Clone, Debug)]
enum Ip {
    V4 { src: Ipv4Addr, dst: Ipv4Addr, options: Vec<u8>, frag: u16 },
    V6 { src: Ipv6Addr, dst: Ipv6Addr, ext: Vec<Ext> },
}

/// An IPv6 extension header to emit, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options (8 bytes, PadN).
    HopByHop,
    /// Routing header of the RFC 4727 experimental type 253, no segments left (8 bytes).
    Routing,
    /// Destination options (8 bytes, PadN).
    DestOpts,
    /// Fragment header: offset in 8-byte units and the M flag.
    Fragment {
        /// Offset in 8-byte units; non-zero hides the L4 header from the parser.
        offset: u16,
        /// More fragments follow.
        more: bool,
    },
    /// Authentication header with a 12-byte zero ICV (24 bytes).
    Ah,
}

impl Ext {
    fn kind(self) -> u8 {
        match self {
            Ext::HopByHop => next_header::HOP_BY_HOP,
            Ext::Routing => next_header::ROUTING,
            Ext::DestOpts => next_header::DEST_OPTS,
            Ext::Fragment { .. } => next_header::FRAGMENT,
            Ext::Ah => next_header::AH,
        }
    }

    fn len(self) -> usize {
        match self {
            Ext::Ah => 24,
            _ => 8,
        }
    }

    /// Writes the header into `buf` (exactly [`Ext::len`] bytes).
    fn write(self, buf: &mut [u8], next: u8) {
        buf[ext_field::NXT_HDR] = next;
        match self {
            Ext::HopByHop | Ext::DestOpts => buf[2..4].copy_from_slice(&[1, 4]), // PadN, 4 bytes
            Ext::Routing => buf[2] = 253, // RFC 4727 experimental type (0 is deprecated), segments left 0
            Ext::Fragment { offset, more } => {
                let word = (offset << 3) | u16::from(more);
                buf[ext_field::FRAG_OFF..ext_field::FRAG_OFF + 2].copy_from_slice(&word.to_be_bytes());
                buf[4..8].copy_from_slice(&0x4242u32.to_be_bytes()); // identification
            }
            Ext::Ah => {
                buf[ext_field::LENGTH] = (24 / 4 - 2) as u8;
                buf[4..8].copy_from_slice(&0x100u32.to_be_bytes()); // SPI
                buf[8..12].copy_from_slice(&1u32.to_be_bytes()); // sequence number
            }
        }
    }
}

/// The transport layer chosen.
#[derive(Clone, Copy, Debug)]
enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Sctp {
        sport: u16,
        dport: u16,
    },
    Icmp {
        ty: u8,
        code: u8,
    },
    Icmpv6 {
        ty: u8,
        code: u8,
    },
    /// Any other IP protocol; the payload is all there is.
    Raw(u8),
}

impl L4 {
    fn proto(self) -> u8 {
        match self {
            L4::Tcp { .. } => proto::TCP,
            L4::Udp { .. } => proto::UDP,
            L4::Sctp { .. } => proto::SCTP,
            L4::Icmp { .. } => proto::ICMP,
            L4::Icmpv6 { .. } => proto::ICMPV6,
            L4::Raw(p) => p,
        }
    }

    fn header_len(self) -> usize {
        match self {
            L4::Tcp { .. } => 20,
            L4::Udp { .. } | L4::Icmp { .. } | L4::Icmpv6 { .. } => 8,
            L4::Sctp { .. } => 12,
            L4::Raw(_) => 0,
        }
    }
}

/// An overlay header between the UDP header and the payload (the inner frame).
#[derive(Clone, Debug)]
enum Tunnel {
    Vxlan {
        vni: u32,
    },
    Geneve {
        vni: u32,
        protocol: u16,
        /// Encoded option TLVs.
        options: Vec<u8>,
    },
}

impl Tunnel {
    fn header_len(&self) -> usize {
        match self {
            Tunnel::Vxlan { .. } => VXLAN_LEN,
            Tunnel::Geneve { options, .. } => GENEVE_LEN + options.len(),
        }
    }

    /// Writes the header into `buf` (exactly [`Tunnel::header_len`] bytes).
    fn write(&self, buf: &mut [u8]) {
        match self {
            Tunnel::Vxlan { vni } => VxlanHeader::new_unchecked(buf).set_vni(*vni),
            Tunnel::Geneve { vni, protocol, options } => {
                GeneveHeader::new_unchecked(&mut *buf).set_fields(options.len(), *protocol, *vni);
                buf[GENEVE_LEN..].copy_from_slice(options);
            }
        }
    }
}

/// The UDP source port of a tunnel: a hash of the inner frame in the dynamic
/// range 49152..=65535, as RFC 7348 recommends for ECMP entropy.
fn entropy_port(inner: &[u8]) -> u16 {
    let h = inner.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    49152 | (h as u16 & 0x3fff)
}

/// Builds one Ethernet frame layer by layer; see the module example.
/// `must_use`: each method returns the builder, dropping it loses the layer.
#[must_use]
#[derive(Clone, Debug)]
pub struct PacketBuilder {
    src_mac: MacAddr,
    dst_mac: MacAddr,
    vlans: Vec<u16>,
    ethertype: Option<u16>,
    ip: Option<Ip>,
    ttl: u8,
    l4: Option<L4>,
    tcp_flags: u8,
    tcp_seq_ack: Option<(u32, u32)>,
    tunnel: Option<Tunnel>,
    payload: Vec<u8>,
    pad_to: usize,
}

impl PacketBuilder {
    /// Starts a frame from `src_mac` to `dst_mac` (argument order as in a
    /// flow description, not as on the wire).
    pub fn ethernet(src_mac: MacAddr, dst_mac: MacAddr) -> Self {
        PacketBuilder {
            src_mac,
            dst_mac,
            vlans: Vec::new(),
            ethertype: None,
            ip: None,
            ttl: 64,
            l4: None,
            tcp_flags: tcp_flags::ACK,
            tcp_seq_ack: None,
            tunnel: None,
            payload: Vec::new(),
            pad_to: 0,
        }
    }

    /// Adds a VLAN tag, outermost first. With two or more tags the outer one
    /// gets TPID 0x88a8 (802.1ad QinQ), all others 0x8100. The VID is masked
    /// to 12 bits; PCP and DEI are 0.
    pub fn vlan(mut self, vid: u16) -> Self {
        self.vlans.push(vid & 0x0fff);
        self
    }

    /// Sets the EtherType after the tags, for non-IP frames (ARP, LLDP; put
    /// the body in [`payload`](Self::payload)) or to mislabel an IP packet.
    pub fn ethertype(mut self, value: u16) -> Self {
        self.ethertype = Some(value);
        self
    }

    /// Adds an IPv4 header (TTL 64, DF set, no options).
    pub fn ipv4(mut self, src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        self.ip = Some(Ip::V4 { src, dst, options: Vec::new(), frag: FLAG_DF });
        self
    }

    /// Adds an IPv6 header (hop limit 64, no extension headers).
    pub fn ipv6(mut self, src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        self.ip = Some(Ip::V6 { src, dst, ext: Vec::new() });
        self
    }

    /// Sets the IPv4 TTL or IPv6 hop limit.
    pub fn ttl(mut self, value: u8) -> Self {
        self.ttl = value;
        self
    }

    /// Appends raw IPv4 options, zero-padded (End of Option List) to a
    /// multiple of 4 bytes; at most 40 bytes in total. Call after `ipv4`.
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        match &mut self.ip {
            Some(Ip::V4 { options: o, .. }) => o.extend_from_slice(options),
            _ => panic!("ipv4_options needs ipv4() first"),
        }
        self
    }

    /// Makes the IPv4 packet a fragment: offset in 8-byte units, MF flag.
    /// A non-zero offset means the L4 header is not in this packet. Call after `ipv4`.
    pub fn ipv4_fragment(mut self, offset: u16, more: bool) -> Self {
        match &mut self.ip {
            Some(Ip::V4 { frag, .. }) => *frag = (offset & 0x1fff) | if more { FLAG_MF } else { 0 },
            _ => panic!("ipv4_fragment needs ipv4() first"),
        }
        self
    }

    /// Appends an IPv6 extension header (in wire order). Call after `ipv6`.
    pub fn ipv6_ext(mut self, ext: Ext) -> Self {
        match &mut self.ip {
            Some(Ip::V6 { ext: e, .. }) => e.push(ext),
            _ => panic!("IPv6 extension headers need ipv6() first"),
        }
        self
    }

    /// Shorthand for `ipv6_ext(Ext::HopByHop)`, the common case (MLD, router alert).
    pub fn ipv6_ext_hop_by_hop(self) -> Self {
        self.ipv6_ext(Ext::HopByHop)
    }

    /// Adds a TCP header (flags ACK unless [`tcp_flags`](Self::tcp_flags)).
    pub fn tcp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = Some(L4::Tcp { sport, dport });
        self
    }

    /// Sets the TCP flags byte.
    pub fn tcp_flags(mut self, flags: u8) -> Self {
        self.tcp_flags = flags;
        self
    }

    /// Sets the TCP sequence and acknowledgement numbers (default 1 and 1,
    /// or 0 without ACK), so captures of whole conversations decode cleanly.
    pub fn tcp_seq_ack(mut self, seq: u32, ack: u32) -> Self {
        self.tcp_seq_ack = Some((seq, ack));
        self
    }

    /// Adds a UDP header.
    pub fn udp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = Some(L4::Udp { sport, dport });
        self
    }

    /// Adds an SCTP common header (chunks, if any, go in the payload).
    pub fn sctp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = Some(L4::Sctp { sport, dport });
        self
    }

    /// Adds an ICMP header (rest-of-header: identifier 1, sequence 1).
    pub fn icmp(mut self, msg_type: u8, code: u8) -> Self {
        self.l4 = Some(L4::Icmp { ty: msg_type, code });
        self
    }

    /// Adds an ICMPv6 header (plus 4 bytes of message body: id 1, seq 1).
    pub fn icmpv6(mut self, msg_type: u8, code: u8) -> Self {
        self.l4 = Some(L4::Icmpv6 { ty: msg_type, code });
        self
    }

    /// Sets another IP protocol number with no header of its own (GRE, ESP,
    /// No Next Header...): the payload follows the IP layer directly.
    pub fn ip_proto(mut self, protocol: u8) -> Self {
        self.l4 = Some(L4::Raw(protocol));
        self
    }

    /// Makes the packet VXLAN: a UDP header (source port a hash of `inner`,
    /// destination 4789), a VXLAN header with the I flag and `vni` (masked to
    /// 24 bits), then `inner` (an Ethernet frame) as the payload. Call after
    /// `ipv4` or `ipv6`; replaces any L4 header and payload set before.
    pub fn vxlan(mut self, vni: u32, inner: &[u8]) -> Self {
        self.l4 = Some(L4::Udp { sport: entropy_port(inner), dport: vxlan::UDP_PORT });
        self.tunnel = Some(Tunnel::Vxlan { vni: vni & 0x00ff_ffff });
        self.payload = inner.to_vec();
        self
    }

    /// Makes the packet Geneve: a UDP header (source port a hash of `inner`,
    /// destination 6081), a Geneve header (version 0, protocol type 0x6558
    /// Ethernet, `vni` masked to 24 bits, no options yet), then `inner` as the
    /// payload. Call after `ipv4` or `ipv6`; replaces any L4 header and payload.
    pub fn geneve(mut self, vni: u32, inner: &[u8]) -> Self {
        self.l4 = Some(L4::Udp { sport: entropy_port(inner), dport: geneve::UDP_PORT });
        self.tunnel =
            Some(Tunnel::Geneve { vni: vni & 0x00ff_ffff, protocol: geneve::PROTO_ETHERNET, options: Vec::new() });
        self.payload = inner.to_vec();
        self
    }

    /// Appends a Geneve option TLV: `class`, `option_type`, and `data`
    /// zero-padded to a multiple of 4 bytes (at most 124). Call after `geneve`.
    pub fn geneve_option(mut self, class: u16, option_type: u8, data: &[u8]) -> Self {
        let Some(Tunnel::Geneve { options, .. }) = &mut self.tunnel else {
            panic!("geneve_option needs geneve() first");
        };
        let words = data.len().div_ceil(4);
        assert!(words <= 31, "a Geneve option holds at most 124 bytes of data");
        options.extend_from_slice(&class.to_be_bytes());
        options.extend_from_slice(&[option_type, words as u8]);
        options.extend_from_slice(data);
        options.resize(options.len() + words * 4 - data.len(), 0);
        self
    }

    /// Sets the Geneve protocol type (the EtherType of the payload), e.g.
    /// 0x0800 for a bare IPv4 packet instead of an Ethernet frame. Call after `geneve`.
    pub fn geneve_protocol(mut self, ethertype: u16) -> Self {
        let Some(Tunnel::Geneve { protocol, .. }) = &mut self.tunnel else {
            panic!("geneve_protocol needs geneve() first");
        };
        *protocol = ethertype;
        self
    }

    /// Sets the bytes after the last header.
    pub fn payload(mut self, bytes: &[u8]) -> Self {
        self.payload = bytes.to_vec();
        self
    }

    /// Zero-pads the frame to at least `len` bytes (60 = Ethernet minimum
    /// without FCS); IP lengths keep describing the unpadded datagram.
    pub fn pad_to(mut self, len: usize) -> Self {
        self.pad_to = len;
        self
    }

    /// Writes the frame.
    pub fn build(&self) -> Vec<u8> {
        let l4_len = self.l4_header_len() + self.payload.len();
        let (ip_len, ip_ethertype) = match &self.ip {
            None => (0, None),
            Some(Ip::V4 { options, .. }) => (IPV4_LEN + options.len().next_multiple_of(4), Some(ethertype::IPV4)),
            Some(Ip::V6 { ext, .. }) => (IPV6_LEN + ext.iter().map(|e| e.len()).sum::<usize>(), Some(ethertype::IPV6)),
        };
        assert!(self.ip.is_some() || self.l4.is_none(), "an L4 header needs ipv4() or ipv6()");
        assert!(
            self.tunnel.is_none() || matches!(self.l4, Some(L4::Udp { .. })),
            "vxlan()/geneve() set the UDP header; another L4 header replaced it"
        );
        let l2_len = ETH_LEN + VLAN_LEN * self.vlans.len();
        let mut buf = vec![0u8; (l2_len + ip_len + l4_len).max(self.pad_to)];
        let final_ethertype = self.ethertype.or(ip_ethertype).unwrap_or(DEFAULT_ETHERTYPE);

        // L2: each TPID/EtherType field names what follows it.
        let tpid = |i: usize| {
            if i == 0 && self.vlans.len() >= 2 {
                ethertype::QINQ
            } else {
                ethertype::VLAN
            }
        };
        let mut eth = EthernetFrame::new_unchecked(&mut buf[..ETH_LEN]);
        eth.set_dst_addr(self.dst_mac);
        eth.set_src_addr(self.src_mac);
        eth.set_ethertype(if self.vlans.is_empty() { final_ethertype } else { tpid(0) });
        for (i, &vid) in self.vlans.iter().enumerate() {
            let at = ETH_LEN + VLAN_LEN * i;
            let mut tag = VlanTag::new_unchecked(&mut buf[at..at + VLAN_LEN]);
            tag.set_tci(vid);
            tag.set_ethertype(if i + 1 < self.vlans.len() { tpid(i + 1) } else { final_ethertype });
        }

        // L4 first (it needs no pseudo-header yet), checksums after the IP layer.
        let l4_at = l2_len + ip_len;
        let protocol = self.l4.map_or(next_header::NO_NEXT_HEADER, L4::proto);
        let (l2_and_ip, l4_buf) = buf.split_at_mut(l4_at);
        let l4_buf = &mut l4_buf[..l4_len];
        self.write_l4(l4_buf);

        let ip_buf = &mut l2_and_ip[l2_len..];
        match &self.ip {
            None => {}
            Some(Ip::V4 { src, dst, options, frag }) => {
                ip_buf[IPV4_LEN..IPV4_LEN + options.len()].copy_from_slice(options);
                let mut ip = Ipv4Packet::new_unchecked(&mut *ip_buf);
                ip.set_version_and_header_len(ip_len);
                ip.set_total_len(u16::try_from(ip_len + l4_len).expect("IPv4 datagram over 64 KiB"));
                ip.set_ident(0x1234);
                ip.set_flags_and_offset(*frag);
                ip.set_ttl(self.ttl);
                ip.set_protocol(protocol);
                ip.set_src_addr(*src);
                ip.set_dst_addr(*dst);
                ip.fill_checksum();
                let pseudo = checksum::sum(&src.octets(), checksum::sum(&dst.octets(), 0));
                fill_l4_checksum(self.l4, l4_buf, pseudo + u32::from(protocol) + l4_len as u32);
            }
            Some(Ip::V6 { src, dst, ext }) => {
                let mut ip = Ipv6Packet::new_unchecked(&mut ip_buf[..IPV6_LEN]);
                ip.set_version();
                ip.set_payload_len(u16::try_from(ip_len - IPV6_LEN + l4_len).expect("IPv6 payload over 64 KiB"));
                ip.set_next_header(ext.first().map_or(protocol, |e| e.kind()));
                ip.set_hop_limit(self.ttl);
                ip.set_src_addr(*src);
                ip.set_dst_addr(*dst);
                let mut at = IPV6_LEN;
                for (i, e) in ext.iter().enumerate() {
                    let next = ext.get(i + 1).map_or(protocol, |n| n.kind());
                    e.write(&mut ip_buf[at..at + e.len()], next);
                    at += e.len();
                }
                let pseudo = checksum::sum(&src.octets(), checksum::sum(&dst.octets(), 0));
                fill_l4_checksum(self.l4, l4_buf, pseudo + u32::from(protocol) + l4_len as u32);
            }
        }
        buf
    }

    /// Bytes of L4 header, a tunnel header included.
    fn l4_header_len(&self) -> usize {
        self.l4.map_or(0, L4::header_len) + self.tunnel.as_ref().map_or(0, Tunnel::header_len)
    }

    /// Writes the L4 header (checksum still zero), any tunnel header, and the payload.
    fn write_l4(&self, buf: &mut [u8]) {
        let header_len = self.l4.map_or(0, L4::header_len);
        let payload_at = self.l4_header_len();
        buf[payload_at..].copy_from_slice(&self.payload);
        if let Some(t) = &self.tunnel {
            t.write(&mut buf[header_len..payload_at]);
        }
        match self.l4 {
            None | Some(L4::Raw(_)) => {}
            Some(L4::Tcp { sport, dport }) => {
                let mut t = TcpHeader::new_unchecked(buf);
                t.set_src_port(sport);
                t.set_dst_port(dport);
                let default = (1, if self.tcp_flags & tcp_flags::ACK != 0 { 1 } else { 0 });
                let (seq, ack) = self.tcp_seq_ack.unwrap_or(default);
                t.set_seq_ack(seq, ack);
                t.set_header_len(header_len);
                t.set_flags(self.tcp_flags);
                t.set_window(65535);
            }
            Some(L4::Udp { sport, dport }) => {
                let len = buf.len() as u16;
                let mut u = UdpHeader::new_unchecked(buf);
                u.set_src_port(sport);
                u.set_dst_port(dport);
                u.set_length(len);
            }
            Some(L4::Sctp { sport, dport }) => {
                let mut s = SctpHeader::new_unchecked(&mut *buf);
                s.set_src_port(sport);
                s.set_dst_port(dport);
                s.set_verification_tag(0x1234_5678);
            }
            Some(L4::Icmp { ty, code }) => {
                IcmpHeader::new_unchecked(&mut *buf).set_type_code(ty, code);
                buf[4..8].copy_from_slice(&[0, 1, 0, 1]);
            }
            Some(L4::Icmpv6 { ty, code }) => {
                Icmpv6Header::new_unchecked(&mut *buf).set_type_code(ty, code);
                buf[4..8].copy_from_slice(&[0, 1, 0, 1]);
            }
        }
    }
}

/// Fills the L4 checksum. `pseudo` is the running sum of the pseudo-header
/// (addresses, protocol, length), which ICMPv4 and SCTP do not use.
fn fill_l4_checksum(l4: Option<L4>, buf: &mut [u8], pseudo: u32) {
    let with_pseudo = checksum::finish(checksum::sum(buf, pseudo));
    match l4 {
        None | Some(L4::Raw(_)) => {}
        Some(L4::Tcp { .. }) => TcpHeader::new_unchecked(buf).set_checksum(with_pseudo),
        // Zero means "no checksum" in UDP, so a computed zero is sent as all ones.
        Some(L4::Udp { .. }) => {
            UdpHeader::new_unchecked(buf).set_checksum(if with_pseudo == 0 { 0xffff } else { with_pseudo })
        }
        Some(L4::Icmpv6 { .. }) => Icmpv6Header::new_unchecked(buf).set_checksum(with_pseudo),
        Some(L4::Icmp { .. }) => {
            let sum = checksum::finish(checksum::sum(buf, 0));
            IcmpHeader::new_unchecked(buf).set_checksum(sum);
        }
        Some(L4::Sctp { .. }) => {
            let crc = crc32c(buf);
            SctpHeader::new_unchecked(buf).set_checksum(crc);
        }
    }
}

/// CRC32c (Castagnoli), bitwise: SCTP's checksum. Slow, but only builders call it.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82f6_3b78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv6::Ipv6ExtHeader;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn crc32c_known_answer() {
        // RFC 3720 B.4 test vector: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn ipv4_tcp_round_trip() {
        let f = PacketBuilder::ethernet(A, B)
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
            .ttl(7)
            .tcp(1234, 80)
            .tcp_flags(tcp_flags::SYN)
            .payload(b"hi")
            .build();
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!((eth.src_addr(), eth.dst_addr(), eth.ethertype()), (A, B, ethertype::IPV4));
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!((ip.total_len(), ip.ttl(), ip.protocol()), (42, 7, proto::TCP));
        assert_eq!(checksum::finish(checksum::sum(&eth.payload()[..20], 0)), 0);
        let tcp = TcpHeader::new_checked(ip.payload()).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port(), tcp.flags()), (1234, 80, tcp_flags::SYN));
        // Pseudo-header + segment sums to zero when the checksum is right.
        let pseudo = checksum::sum(&[10, 0, 0, 1, 10, 0, 0, 2], 0) + 6 + 22;
        assert_eq!(checksum::finish(checksum::sum(ip.payload(), pseudo)), 0);
    }

    #[test]
    fn qinq_tags_and_padding() {
        let f = PacketBuilder::ethernet(A, B)
            .vlan(100)
            .vlan(200)
            .ethertype(ethertype::ARP)
            .payload(&[0; 28])
            .pad_to(64)
            .build();
        assert_eq!(f.len(), 64);
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(eth.ethertype(), ethertype::QINQ);
        let outer = VlanTag::new_checked(eth.payload()).unwrap();
        assert_eq!((outer.vid(), outer.ethertype()), (100, ethertype::VLAN));
        let inner = VlanTag::new_checked(outer.payload()).unwrap();
        assert_eq!((inner.vid(), inner.ethertype()), (200, ethertype::ARP));
        let single = PacketBuilder::ethernet(A, B).vlan(5).build();
        assert_eq!(EthernetFrame::new_checked(&single[..]).unwrap().ethertype(), ethertype::VLAN);
        assert_eq!(VlanTag::new_checked(&single[14..]).unwrap().ethertype(), DEFAULT_ETHERTYPE);
    }

    #[test]
    fn ipv6_ext_chain_round_trip() {
        let f = PacketBuilder::ethernet(A, B)
            .ipv6("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap())
            .ipv6_ext_hop_by_hop()
            .ipv6_ext(Ext::Routing)
            .ipv6_ext(Ext::Fragment { offset: 0, more: true })
            .ipv6_ext(Ext::Ah)
            .ipv6_ext(Ext::DestOpts)
            .udp(53, 5353)
            .build();
        let ip = Ipv6Packet::new_checked(&f[ETH_LEN..]).unwrap();
        assert_eq!(usize::from(ip.payload_len()), 8 + 8 + 8 + 24 + 8 + 8);
        let mut data = ip.payload();
        let mut nh = ip.next_header();
        let mut seen = Vec::new();
        while nh != proto::UDP {
            let h = Ipv6ExtHeader::new_checked(data, nh).unwrap();
            seen.push((nh, h.header_len()));
            nh = h.next_header();
            data = h.payload();
        }
        assert_eq!(seen, [(0, 8), (43, 8), (44, 8), (51, 24), (60, 8)]);
        let udp = UdpHeader::new_checked(data).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port(), udp.length()), (53, 5353, 8));
    }

    #[test]
    fn ipv4_options_are_padded() {
        let f = PacketBuilder::ethernet(A, B)
            .ipv4(Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2))
            .ipv4_options(&[0x94, 0x04, 0, 0, 0x01]) // router alert + NOP
            .icmp(8, 0)
            .build();
        let ip = Ipv4Packet::new_checked(&f[ETH_LEN..]).unwrap();
        assert_eq!((ip.header_len(), ip.total_len()), (28, 36));
        assert_eq!(checksum::finish(checksum::sum(ip.payload(), 0)), 0);
        let icmp = IcmpHeader::new_checked(ip.payload()).unwrap();
        assert_eq!((icmp.msg_type(), icmp.msg_code()), (8, 0));
    }

    #[test]
    fn sctp_checksum_verifies() {
        let f = PacketBuilder::ethernet(A, B)
            .ipv4(Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2))
            .sctp(2905, 2905)
            .build();
        let mut sctp = f[ETH_LEN + 20..].to_vec();
        let stored = SctpHeader::new_checked(&sctp[..]).unwrap().checksum();
        sctp[8..12].fill(0);
        assert_eq!(crc32c(&sctp), stored);
    }

    #[test]
    #[should_panic(expected = "needs ipv4() or ipv6()")]
    fn l4_without_ip_is_a_test_bug() {
        PacketBuilder::ethernet(A, B).udp(1, 2).build();
    }
}
