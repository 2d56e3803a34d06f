//! Geneve header view (RFC 8926): the fixed 8 bytes after the outer UDP
//! header, then `opt_len` × 4 bytes of options, then the payload.
//!
//! ```text
//! ver (2) | opt len (6) | O C rsvd (8) | protocol type (16) | VNI (24) | rsvd (8) | options...
//! ```

use super::{be16, set_be16, Error};

/// IANA UDP destination port of Geneve.
pub const UDP_PORT: u16 = 6081;

/// Protocol type of an encapsulated Ethernet frame (Transparent Ethernet Bridging).
pub const PROTO_ETHERNET: u16 = 0x6558;

/// Byte offsets inside the fixed header.
pub mod field {
    /// Version (top 2 bits) and option length in 4-byte words (low 6 bits).
    pub const VER_OPT_LEN: usize = 0;
    /// O (control packet) and C (critical options) flags.
    pub const FLAGS: usize = 1;
    /// EtherType of the payload.
    pub const PROTOCOL: usize = 2;
    /// The 24-bit VNI.
    pub const VNI: core::ops::Range<usize> = 4..7;
}

/// Length of the fixed header (without options).
pub const HEADER_LEN: usize = 8;

/// One Geneve header read (or written) in place.
#[derive(Debug, Clone, Copy)]
pub struct GeneveHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GeneveHeader<T> {
    /// Wraps without checking; accessors panic on a buffer under [`HEADER_LEN`]
    /// (and [`payload`](GeneveHeader::payload) on one shorter than [`header_len`](Self::header_len)).
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        GeneveHeader { buffer }
    }

    /// Wraps after checking that the buffer holds the fixed header and its
    /// options, and that the version is 0 ([`Error::BadVersion`] otherwise).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let data = buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header = Self::new_unchecked(buffer);
        if header.version() != 0 {
            return Err(Error::BadVersion);
        }
        if header.buffer.as_ref().len() < header.header_len() {
            return Err(Error::Truncated);
        }
        Ok(header)
    }

    /// Version (0 is the only one defined).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_OPT_LEN] >> 6
    }

    /// Fixed header plus options, in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + usize::from(self.buffer.as_ref()[field::VER_OPT_LEN] & 0x3f) * 4
    }

    /// EtherType of the payload ([`PROTO_ETHERNET`] for an Ethernet frame).
    #[inline]
    pub fn protocol(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PROTOCOL)
    }

    /// The 24-bit virtual network identifier.
    #[inline]
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> GeneveHeader<&'a T> {
    /// The bytes after the options, borrowed from the underlying buffer.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GeneveHeader<T> {
    /// Writes the fixed header: version 0, `options_len` bytes of options
    /// (a multiple of 4, at most 252), no flags, `protocol` and `vni`.
    pub fn set_fields(&mut self, options_len: usize, protocol: u16, vni: u32) {
        assert!(
            options_len.is_multiple_of(4) && options_len <= 63 * 4,
            "Geneve options must be 4-byte words, at most 252 bytes"
        );
        let b = self.buffer.as_mut();
        b[..HEADER_LEN].fill(0);
        b[field::VER_OPT_LEN] = (options_len / 4) as u8;
        set_be16(b, field::PROTOCOL, protocol);
        b[field::VNI].copy_from_slice(&vni.to_be_bytes()[1..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes() {
        let mut buf = [0xaau8; 8 + 8 + 2];
        GeneveHeader::new_unchecked(&mut buf[..]).set_fields(8, PROTO_ETHERNET, 0xab_cdef);
        let h = GeneveHeader::new_checked(&buf[..]).unwrap();
        assert_eq!((h.version(), h.header_len(), h.protocol(), h.vni()), (0, 16, PROTO_ETHERNET, 0xab_cdef));
        assert_eq!(h.payload(), &[0xaa, 0xaa]);
        // Options beyond the buffer, a short fixed header, a future version.
        assert_eq!(GeneveHeader::new_checked(&buf[..15]).unwrap_err(), Error::Truncated);
        assert_eq!(GeneveHeader::new_checked(&buf[..7]).unwrap_err(), Error::Truncated);
        buf[0] |= 0x40;
        assert_eq!(GeneveHeader::new_checked(&buf[..]).unwrap_err(), Error::BadVersion);
    }
}
