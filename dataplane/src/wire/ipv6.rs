//! IPv6 fixed header and extension-header views.
//!
//! The parser walks hop-by-hop, routing, destination-options, fragment and AH
//! headers to find the upper-layer protocol; ESP (encrypted) ends the walk.

use super::{be16, set_be16, Error};
use core::net::Ipv6Addr;

/// Next-header values of the extension headers the parser walks over.
pub mod next_header {
    /// Hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating security payload: the rest is encrypted, the walk stops.
    pub const ESP: u8 = 50;
    /// Authentication header (length in 4-byte units, unlike the others).
    pub const AH: u8 = 51;
    /// No next header.
    pub const NO_NEXT_HEADER: u8 = 59;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
}

/// Byte offsets of the IPv6 fixed header fields.
pub mod field {
    use core::ops::{Range, RangeFrom};
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    /// Payload length: everything after the fixed header, extensions included.
    pub const LENGTH: usize = 4;
    /// Next header: first extension header or upper-layer protocol.
    pub const NXT_HDR: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC_ADDR: Range<usize> = 8..24;
    /// Destination address.
    pub const DST_ADDR: Range<usize> = 24..40;
    /// Everything after the fixed header.
    pub const PAYLOAD: RangeFrom<usize> = 40..;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// An IPv6 fixed header read (or written) in place.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps without checking; accessors panic on a buffer under [`HEADER_LEN`].
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Verifies the fixed header is in the buffer and the version is 6. The
    /// payload length is the caller's policy, as for IPv4's total length.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else if self.version() != 6 {
            Err(Error::BadVersion)
        } else {
            Ok(())
        }
    }

    /// Version nibble (6 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Payload length (extension headers included, fixed header excluded).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// First next-header value.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address as 16 bytes (what the flow key stores).
    #[inline]
    pub fn src_octets(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        out
    }

    /// Destination address as 16 bytes.
    #[inline]
    pub fn dst_octets(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        out
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_octets())
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_octets())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6Packet<&'a T> {
    /// Everything after the fixed header, to the end of the buffer (the
    /// caller bounds it by [`payload_len`](Ipv6Packet::payload_len)).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6 with zero traffic class and flow label.
    pub fn set_version(&mut self) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&[0x60, 0, 0, 0]);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the first next-header value.
    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = value;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }
}

/// Byte offsets shared by every extension header the parser walks.
pub mod ext_field {
    /// Next header after this one.
    pub const NXT_HDR: usize = 0;
    /// Length field (units depend on the header type).
    pub const LENGTH: usize = 1;
    /// Fragment offset (13 bits, 8-byte units) and M flag, fragment header only.
    pub const FRAG_OFF: usize = 2;
}

/// An extension header (hop-by-hop, routing, destination options, fragment or
/// AH) read in place. One type for all of them: they share the next-header
/// byte and differ only in how the length is coded.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
    header_len: usize,
}

impl<T: AsRef<[u8]>> Ipv6ExtHeader<T> {
    /// Wraps an extension header of type `kind` (a [`next_header`] value)
    /// after checking that its fixed part and its declared length are in the
    /// buffer. `kind` selects the length coding: fixed 8 bytes for a
    /// fragment, 4-byte units + 2 for AH, 8-byte units + 1 otherwise.
    #[inline]
    pub fn new_checked(buffer: T, kind: u8) -> Result<Self, Error> {
        let data = buffer.as_ref();
        if data.len() < 8 {
            return Err(Error::Truncated);
        }
        let len_field = usize::from(data[ext_field::LENGTH]);
        let header_len = match kind {
            next_header::FRAGMENT => 8,
            next_header::AH => (len_field + 2) * 4,
            _ => (len_field + 1) * 8,
        };
        if data.len() < header_len {
            return Err(Error::Truncated);
        }
        Ok(Ipv6ExtHeader { buffer, header_len })
    }

    /// Next header after this one.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ext_field::NXT_HDR]
    }

    /// Length of this header in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Fragment offset in 8-byte units; only meaningful for a fragment header.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), ext_field::FRAG_OFF) >> 3
    }

    /// M (more fragments) flag; only meaningful for a fragment header.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), ext_field::FRAG_OFF) & 1 != 0
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6ExtHeader<&'a T> {
    /// The bytes after this header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed header of a real ICMPv6 echo request fe80::1 -> ff02::1 with a
    /// hop-by-hop header (router alert) and 8 bytes of ICMPv6 after it.
    const PACKET: [u8; 56] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x01, // ver, plen 16, HBH, hlim 1
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // src
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // dst
        0x3a, 0x00, 0x05, 0x02, 0x00, 0x00, 0x01, 0x00, // HBH: next ICMPv6, router alert, PadN
        0x80, 0x00, 0x00, 0x00, 0x12, 0x34, 0x00, 0x01, // echo request
    ];

    #[test]
    fn fixture_fields_and_ext_walk() {
        let p = Ipv6Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.payload_len(), 16);
        assert_eq!(p.next_header(), next_header::HOP_BY_HOP);
        assert_eq!(p.hop_limit(), 1);
        assert_eq!(p.src_addr(), "fe80::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "ff02::1".parse::<Ipv6Addr>().unwrap());
        let hbh = Ipv6ExtHeader::new_checked(p.payload(), next_header::HOP_BY_HOP).unwrap();
        assert_eq!(hbh.next_header(), 58);
        assert_eq!(hbh.header_len(), 8);
        assert_eq!(hbh.payload()[0], 0x80);
    }

    #[test]
    fn bad_headers_are_refused() {
        assert_eq!(Ipv6Packet::new_checked(&PACKET[..39]).unwrap_err(), Error::Truncated);
        let mut v4 = PACKET;
        v4[0] = 0x45;
        assert_eq!(Ipv6Packet::new_checked(&v4[..]).unwrap_err(), Error::BadVersion);
        // Routing header claiming 16 bytes with 8 in the buffer.
        let routing = [6, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(Ipv6ExtHeader::new_checked(&routing[..], next_header::ROUTING).unwrap_err(), Error::Truncated);
        assert_eq!(Ipv6ExtHeader::new_checked(&routing[..7], next_header::FRAGMENT).unwrap_err(), Error::Truncated);
        // AH length 1 => (1 + 2) * 4 = 12 bytes.
        let ah = [6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(Ipv6ExtHeader::new_checked(&ah[..], next_header::AH).unwrap().header_len(), 12);
    }

    #[test]
    fn fragment_fields() {
        // Next TCP, offset 185 (×8 = 1480), M set.
        let frag = [6, 0, (185u16 << 3 >> 8) as u8, (185u16 << 3) as u8 | 1, 0, 0, 0, 7];
        let f = Ipv6ExtHeader::new_checked(&frag[..], next_header::FRAGMENT).unwrap();
        assert_eq!((f.next_header(), f.frag_offset(), f.more_frags()), (6, 185, true));
        assert!(f.payload().is_empty());
    }

    #[test]
    fn set_then_get_round_trips() {
        let mut buf = [0u8; HEADER_LEN];
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
        p.set_version();
        p.set_payload_len(8);
        p.set_next_header(17);
        p.set_hop_limit(64);
        p.set_src_addr("2001:db8::1".parse().unwrap());
        p.set_dst_addr("2001:db8::2".parse().unwrap());
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!((p.payload_len(), p.next_header(), p.hop_limit()), (8, 17, 64));
        assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
    }
}
