//! IPv4 header view (options included via IHL).

use super::{be16, set_be16, Error};
use core::net::Ipv4Addr;

/// Byte offsets of the IPv4 header fields.
pub mod field {
    use core::ops::Range;
    /// Version (high nibble) and IHL (low nibble, 32-bit words).
    pub const VER_IHL: usize = 0;
    /// DSCP and ECN.
    pub const DSCP_ECN: usize = 1;
    /// Total length of the datagram, header included.
    pub const LENGTH: usize = 2;
    /// Identification.
    pub const IDENT: usize = 4;
    /// Flags (3 bits) and fragment offset (13 bits, 8-byte units).
    pub const FLG_OFF: usize = 6;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol of the payload.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: usize = 10;
    /// Source address.
    pub const SRC_ADDR: Range<usize> = 12..16;
    /// Destination address.
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// Length of a header without options (IHL 5).
pub const MIN_HEADER_LEN: usize = field::DST_ADDR.end;

/// "Don't fragment" flag in the flags/offset word.
pub const FLAG_DF: u16 = 0x4000;
/// "More fragments" flag in the flags/offset word.
pub const FLAG_MF: u16 = 0x2000;

/// An IPv4 header read (or written) in place.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps without checking; accessors panic on a buffer under
    /// [`MIN_HEADER_LEN`], and [`payload`](Ipv4Packet::payload) if it is
    /// shorter than [`header_len`](Self::header_len).
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Verifies the version, that IHL is at least 5 and that the whole header
    /// (options included) is in the buffer. The total-length field is left to
    /// the caller: Ethernet padding makes the buffer longer than the datagram,
    /// and what to do with a datagram longer than the buffer is policy.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::BadVersion);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        if len < header_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Version nibble (4 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Total length field: header plus payload, without Ethernet padding.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification field.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Whether more fragments follow.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in 8-byte units; non-zero means no L4 header here.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address as its four bytes (what the flow key stores).
    #[inline]
    pub fn src_octets(&self) -> [u8; 4] {
        let d = self.buffer.as_ref();
        [d[12], d[13], d[14], d[15]]
    }

    /// Destination address as its four bytes.
    #[inline]
    pub fn dst_octets(&self) -> [u8; 4] {
        let d = self.buffer.as_ref();
        [d[16], d[17], d[18], d[19]]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_octets())
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_octets())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// Everything after the header (options skipped), up to the end of the
    /// buffer: the caller bounds it by [`total_len`](Ipv4Packet::total_len).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length in bytes (a multiple of 4).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | (header_len / 4) as u8;
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::IDENT, value);
    }

    /// Sets the flags/fragment-offset word (see [`FLAG_DF`], [`FLAG_MF`]).
    pub fn set_flags_and_offset(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::FLG_OFF, value);
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the payload protocol.
    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Stores the header checksum of the first [`header_len`](Self::header_len)
    /// bytes; call last, after every other field is set.
    pub fn fill_checksum(&mut self) {
        set_be16(self.buffer.as_mut(), field::CHECKSUM, 0);
        let header_len = self.header_len();
        let sum = checksum::finish(checksum::sum(&self.buffer.as_ref()[..header_len], 0));
        set_be16(self.buffer.as_mut(), field::CHECKSUM, sum);
    }
}

/// Internet checksum (RFC 1071), shared by the IPv4 header and the
/// pseudo-header checksums of TCP, UDP and ICMP.
pub mod checksum {
    /// Adds `data` as big-endian 16-bit words to a running 32-bit sum.
    pub fn sum(data: &[u8], mut acc: u32) -> u32 {
        let mut words = data.chunks_exact(2);
        for w in &mut words {
            acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            acc += u32::from(*last) << 8;
        }
        acc
    }

    /// Folds the carries and complements: the value to store.
    pub fn finish(mut acc: u32) -> u16 {
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4 header of a UDP datagram used as the worked checksum example on Wikipedia.
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
        0x00, 0xc7,
    ];

    #[test]
    fn fixture_fields_and_checksum() {
        let p = Ipv4Packet::new_checked(&HEADER[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 0x73);
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.more_frags());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert_eq!(p.checksum(), 0xb861);
        assert!(p.payload().is_empty());
        // A correct header sums to zero.
        assert_eq!(checksum::finish(checksum::sum(&HEADER, 0)), 0);
        let mut copy = HEADER;
        Ipv4Packet::new_unchecked(&mut copy[..]).fill_checksum();
        assert_eq!(copy, HEADER);
    }

    #[test]
    fn bad_headers_are_refused() {
        assert_eq!(Ipv4Packet::new_checked(&HEADER[..19]).unwrap_err(), Error::Truncated);
        let mut v6 = HEADER;
        v6[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&v6[..]).unwrap_err(), Error::BadVersion);
        let mut ihl4 = HEADER;
        ihl4[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&ihl4[..]).unwrap_err(), Error::BadHeaderLen);
        let mut ihl6 = HEADER;
        ihl6[0] = 0x46;
        assert_eq!(Ipv4Packet::new_checked(&ihl6[..]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn set_then_get_round_trips() {
        let mut buf = [0u8; 24];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version_and_header_len(24);
        p.set_total_len(24);
        p.set_ident(0x1234);
        p.set_flags_and_offset(FLAG_MF | 185);
        p.set_ttl(3);
        p.set_protocol(6);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.fill_checksum();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 185);
        assert_eq!((p.ttl(), p.protocol()), (3, 6));
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(checksum::finish(checksum::sum(&buf, 0)), 0);
    }
}
