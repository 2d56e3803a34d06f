//! VXLAN header view (RFC 7348): the 8 bytes after the outer UDP header.
//!
//! ```text
//! flags (0x08 = I, VNI valid) | reserved (3) | VNI (3) | reserved (1)
//! ```
//! An Ethernet frame follows directly.

use super::Error;

/// IANA UDP destination port of VXLAN.
pub const UDP_PORT: u16 = 4789;

/// Byte offsets inside the header.
pub mod field {
    /// Flags; only [`super::FLAG_I`] is defined.
    pub const FLAGS: usize = 0;
    /// The 24-bit VNI.
    pub const VNI: core::ops::Range<usize> = 4..7;
    /// The encapsulated Ethernet frame.
    pub const PAYLOAD: core::ops::RangeFrom<usize> = 8..;
}

/// Length of the header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// The I flag: set when the VNI is valid (always, in practice).
pub const FLAG_I: u8 = 0x08;

/// One VXLAN header read (or written) in place.
#[derive(Debug, Clone, Copy)]
pub struct VxlanHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    /// Wraps without checking; accessors panic on a buffer under [`HEADER_LEN`].
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        VxlanHeader { buffer }
    }

    /// Wraps after checking that the buffer holds the whole header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(Self::new_unchecked(buffer))
        }
    }

    /// The flags byte.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The 24-bit VXLAN network identifier.
    #[inline]
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> VxlanHeader<&'a T> {
    /// The encapsulated frame, borrowed from the underlying buffer.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanHeader<T> {
    /// Writes the flags (I set, reserved bits zero) and the VNI (masked to 24 bits).
    pub fn set_vni(&mut self, vni: u32) {
        let b = self.buffer.as_mut();
        b[..HEADER_LEN].fill(0);
        b[field::FLAGS] = FLAG_I;
        b[field::VNI].copy_from_slice(&vni.to_be_bytes()[1..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes() {
        let mut buf = [0xffu8; 10];
        VxlanHeader::new_unchecked(&mut buf[..]).set_vni(0x12_3456);
        assert_eq!(buf[..8], [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        let h = VxlanHeader::new_checked(&buf[..]).unwrap();
        assert_eq!((h.flags(), h.vni(), h.payload()), (FLAG_I, 0x12_3456, &[0xff, 0xff][..]));
        assert_eq!(VxlanHeader::new_checked(&buf[..7]).unwrap_err(), Error::Truncated);
    }
}
