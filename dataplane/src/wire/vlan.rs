//! 802.1Q / 802.1ad VLAN tag view: the 4 bytes after a TPID (TCI + inner EtherType).
//!
//! The TPID itself belongs to the preceding header (Ethernet or the outer tag),
//! so a tag view starts at the TCI, exactly where the previous payload starts.

use super::{be16, set_be16, Error};

/// Byte offsets inside a tag (after the TPID).
pub mod field {
    /// Tag control information: PCP (3 bits), DEI (1 bit), VID (12 bits).
    pub const TCI: usize = 0;
    /// EtherType of what follows, or the TPID of the next tag.
    pub const ETHERTYPE: usize = 2;
    /// Everything after the tag.
    pub const PAYLOAD: core::ops::RangeFrom<usize> = 4..;
}

/// Length of a tag after its TPID.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// One VLAN tag read (or written) in place.
#[derive(Debug, Clone, Copy)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps without checking; accessors panic on a buffer under [`HEADER_LEN`].
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }

    /// Wraps after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let tag = Self::new_unchecked(buffer);
        tag.check_len()?;
        Ok(tag)
    }

    /// Verifies the buffer holds the whole tag.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// VLAN id (12 bits): what rules match on.
    #[inline]
    pub fn vid(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TCI) & 0x0fff
    }

    /// Priority code point, kept for sinks that re-tag copies.
    #[inline]
    pub fn pcp(&self) -> u8 {
        self.buffer.as_ref()[field::TCI] >> 5
    }

    /// EtherType after this tag (or the next TPID).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> VlanTag<&'a T> {
    /// The bytes after the tag, borrowed from the underlying buffer.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the whole TCI (PCP, DEI and VID).
    pub fn set_tci(&mut self, tci: u16) {
        set_be16(self.buffer.as_mut(), field::TCI, tci);
    }

    /// Sets the EtherType after the tag.
    pub fn set_ethertype(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::ETHERTYPE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_fields() {
        // PCP 5, DEI 1, VID 0x123, then IPv4.
        let bytes = [0xb1, 0x23, 0x08, 0x00, 0x45];
        let t = VlanTag::new_checked(&bytes[..]).unwrap();
        assert_eq!(t.vid(), 0x123);
        assert_eq!(t.pcp(), 5);
        assert_eq!(t.ethertype(), 0x0800);
        assert_eq!(t.payload(), &[0x45]);
        assert_eq!(VlanTag::new_checked(&bytes[..3]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn set_then_get_round_trips() {
        let mut buf = [0u8; 4];
        let mut t = VlanTag::new_unchecked(&mut buf[..]);
        t.set_tci(0xe000 | 4094);
        t.set_ethertype(0x86dd);
        let t = VlanTag::new_checked(&buf[..]).unwrap();
        assert_eq!((t.vid(), t.pcp(), t.ethertype()), (4094, 7, 0x86dd));
    }
}
