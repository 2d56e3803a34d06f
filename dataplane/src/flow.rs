//! The flow key: the header fields steering rules match on.

use std::fmt;
use std::net::IpAddr;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let part = parts
                .next()
                .ok_or_else(|| format!("`{s}` is not a MAC address (want six hex bytes like 02:00:00:00:00:01)"))?;
            if part.len() != 2 {
                return Err(format!("`{s}` is not a MAC address (want six hex bytes like 02:00:00:00:00:01)"));
            }
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| format!("`{s}` is not a MAC address (want six hex bytes like 02:00:00:00:00:01)"))?;
        }
        if parts.next().is_some() {
            return Err(format!("`{s}` is not a MAC address (want six hex bytes like 02:00:00:00:00:01)"));
        }
        Ok(MacAddr(out))
    }
}

/// Value of [`FlowKey::outer_vlan`] / [`FlowKey::inner_vlan`] when the frame has no such tag.
pub const NO_VLAN: u16 = 0xffff;

/// Value of [`FlowKey::vni`] for a packet that is not tunnelled. VXLAN and
/// Geneve VNIs are 24 bits, so every real VNI is below it.
pub const NO_VNI: u32 = u32::MAX;

/// Values of [`FlowKey::tunnel`]: the overlay encapsulation the key was read through.
pub mod tunnel {
    /// Not tunnelled: the key describes the frame as received.
    pub const NONE: u8 = 0;
    /// VXLAN (RFC 7348, UDP destination port 4789).
    pub const VXLAN: u8 = 1;
    /// Geneve (RFC 8926, UDP destination port 6081) carrying Ethernet.
    pub const GENEVE: u8 = 2;
}

/// IP protocol numbers the parser understands beyond the IP header.
pub mod proto {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// The fields of one packet that steering rules match on, extracted by
/// [`crate::parser::parse`].
///
/// Fields that the packet does not have (a non-IP frame has no addresses, a
/// truncated TCP header has no ports) are zero, except VLANs, which are
/// [`NO_VLAN`]. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`) so
/// that one 16-byte field serves both families; `ip_version` tells them apart.
/// For ICMP and ICMPv6, `src_port` holds the type and `dst_port` the code, as
/// Open vSwitch does.
///
/// For a VXLAN or Geneve packet carrying Ethernet, every field but `in_port`
/// describes the *inner* (tenant) frame, and `vni`/`tunnel` say which overlay
/// network it came through; for any other packet `vni` is [`NO_VNI`] and
/// `tunnel` is [`tunnel::NONE`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FlowKey {
    /// Source IP address (IPv4-mapped for IPv4), zero when not IP.
    pub src_ip: [u8; 16],
    /// Destination IP address (IPv4-mapped for IPv4), zero when not IP.
    pub dst_ip: [u8; 16],
    /// Source MAC address.
    pub src_mac: MacAddr,
    /// Destination MAC address.
    pub dst_mac: MacAddr,
    /// Ingress port id.
    pub in_port: u16,
    /// VLAN id of the outer 802.1Q/802.1ad tag, or [`NO_VLAN`].
    pub outer_vlan: u16,
    /// VLAN id of the inner tag of a QinQ frame, or [`NO_VLAN`].
    pub inner_vlan: u16,
    /// EtherType after any VLAN tags (0x0800 IPv4, 0x86dd IPv6, 0x0806 ARP...).
    pub ethertype: u16,
    /// L4 source port, or ICMP type.
    pub src_port: u16,
    /// L4 destination port, or ICMP code.
    pub dst_port: u16,
    /// IP protocol (the last next-header for IPv6), 0 when not IP.
    pub proto: u8,
    /// 4, 6, or 0 when not IP.
    pub ip_version: u8,
    /// Overlay network id (24-bit VXLAN/Geneve VNI), or [`NO_VNI`].
    pub vni: u32,
    /// Encapsulation the fields were read through: a [`tunnel`] constant.
    pub tunnel: u8,
}

impl Default for FlowKey {
    fn default() -> Self {
        FlowKey {
            src_ip: [0; 16],
            dst_ip: [0; 16],
            src_mac: MacAddr::default(),
            dst_mac: MacAddr::default(),
            in_port: 0,
            outer_vlan: NO_VLAN,
            inner_vlan: NO_VLAN,
            ethertype: 0,
            src_port: 0,
            dst_port: 0,
            proto: 0,
            ip_version: 0,
            vni: NO_VNI,
            tunnel: tunnel::NONE,
        }
    }
}

/// Stores an IP address the way [`FlowKey`] does (IPv4-mapped for IPv4).
pub fn ip_to_key_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// An address field as two big-endian words (high, low): words 0-1 (source)
/// and 2-3 (destination) of [`FlowKey::address_words`].
#[inline]
pub(crate) fn ip_words(ip: &[u8; 16]) -> [u64; 2] {
    let v = u128::from_be_bytes(*ip);
    [(v >> 64) as u64, v as u64]
}

/// A MAC address in the low 48 bits of a word.
#[inline]
fn mac_word(m: MacAddr) -> u64 {
    let [a, b, c, d, e, f] = m.0;
    u64::from_be_bytes([0, 0, a, b, c, d, e, f])
}

impl FlowKey {
    /// Addresses, MACs, ingress port and EtherType packed into six words, the
    /// same way for the classifier's masked keys and the flow cache's slots.
    #[inline]
    pub(crate) fn address_words(&self) -> [u64; 6] {
        let [s0, s1] = ip_words(&self.src_ip);
        let [d0, d1] = ip_words(&self.dst_ip);
        [s0, s1, d0, d1, self.src_mac_word(), self.dst_mac_word()]
    }

    /// Word 4 of [`FlowKey::address_words`]: source MAC and ingress port.
    #[inline]
    pub(crate) fn src_mac_word(&self) -> u64 {
        mac_word(self.src_mac) << 16 | u64::from(self.in_port)
    }

    /// Word 5 of [`FlowKey::address_words`]: destination MAC and EtherType.
    #[inline]
    pub(crate) fn dst_mac_word(&self) -> u64 {
        mac_word(self.dst_mac) << 16 | u64::from(self.ethertype)
    }

    /// The key of the reverse direction: addresses and ports swapped; the
    /// ingress port, VLANs and overlay (`vni`, `tunnel`) stay.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src_ip: self.dst_ip,
            dst_ip: self.src_ip,
            src_mac: self.dst_mac,
            dst_mac: self.src_mac,
            src_port: self.dst_port,
            dst_port: self.src_port,
            ..*self
        }
    }

    /// Source address as an [`IpAddr`], if the packet is IP.
    pub fn src_addr(&self) -> Option<IpAddr> {
        key_bytes_to_ip(self.ip_version, self.src_ip)
    }

    /// Destination address as an [`IpAddr`], if the packet is IP.
    pub fn dst_addr(&self) -> Option<IpAddr> {
        key_bytes_to_ip(self.ip_version, self.dst_ip)
    }
}

fn key_bytes_to_ip(version: u8, bytes: [u8; 16]) -> Option<IpAddr> {
    let v6 = std::net::Ipv6Addr::from(bytes);
    match version {
        4 => v6.to_ipv4_mapped().map(IpAddr::V4),
        6 => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_and_prints() {
        let m: MacAddr = "02:00:0a:00:00:01".parse().unwrap();
        assert_eq!(m.0, [2, 0, 10, 0, 0, 1]);
        assert_eq!(m.to_string(), "02:00:0a:00:00:01");
        assert!("02:00:0a:00:00".parse::<MacAddr>().is_err());
        assert!("02:00:0a:00:00:01:02".parse::<MacAddr>().is_err());
        assert!("zz:00:0a:00:00:01".parse::<MacAddr>().is_err());
    }

    #[test]
    fn reversed_swaps_both_ends() {
        let k = FlowKey {
            src_ip: ip_to_key_bytes("10.0.0.1".parse().unwrap()),
            dst_ip: ip_to_key_bytes("10.0.0.2".parse().unwrap()),
            src_port: 1000,
            dst_port: 80,
            ip_version: 4,
            ..FlowKey::default()
        };
        let r = k.reversed();
        assert_eq!(r.src_addr(), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(r.dst_port, 1000);
        assert_eq!(r.reversed(), k);
    }

    #[test]
    fn reversed_keeps_the_overlay() {
        let k = FlowKey { vni: 5001, tunnel: tunnel::VXLAN, src_port: 1, ..FlowKey::default() };
        let r = k.reversed();
        assert_eq!((r.vni, r.tunnel, r.dst_port), (5001, tunnel::VXLAN, 1));
        assert_eq!(FlowKey::default().vni, NO_VNI);
    }
}
