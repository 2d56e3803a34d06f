//! Ethernet II header view.

use super::{be16, set_be16, Error};
use crate::flow::MacAddr;

/// EtherType values the dataplane gives a meaning to.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP: keyed by L2 fields only.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1ad service VLAN tag (the outer tag of QinQ).
    pub const QINQ: u16 = 0x88a8;
    /// LLDP: keyed by L2 fields only.
    pub const LLDP: u16 = 0x88cc;
    /// Pre-standard QinQ TPID still emitted by some switches.
    pub const QINQ_OLD: u16 = 0x9100;

    /// Whether `ethertype` announces a VLAN tag (any of the three TPIDs in use).
    #[inline(always)]
    pub fn is_vlan_tpid(ethertype: u16) -> bool {
        matches!(ethertype, VLAN | QINQ | QINQ_OLD)
    }
}

/// Byte offsets of the Ethernet II header fields.
pub mod field {
    use core::ops::{Range, RangeFrom};
    /// Destination MAC.
    pub const DESTINATION: Range<usize> = 0..6;
    /// Source MAC.
    pub const SOURCE: Range<usize> = 6..12;
    /// EtherType (or the first VLAN TPID).
    pub const ETHERTYPE: usize = 12;
    /// Everything after the header.
    pub const PAYLOAD: RangeFrom<usize> = 14..;
}

/// Length of the Ethernet II header (no FCS: ports hand us frames without it).
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// An Ethernet II frame read (or written) in place.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps without checking; accessors panic if the buffer is shorter than
    /// [`HEADER_LEN`]. For the builder, which sized the buffer itself.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps after [`check_len`](Self::check_len), so no accessor can panic.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Verifies the buffer holds the whole header.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        let d = self.buffer.as_ref();
        MacAddr([d[0], d[1], d[2], d[3], d[4], d[5]])
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        let d = self.buffer.as_ref();
        MacAddr([d[6], d[7], d[8], d[9], d[10], d[11]])
    }

    /// EtherType, or the TPID of the first VLAN tag.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetFrame<&'a T> {
    /// The bytes after the header, with the lifetime of the underlying buffer
    /// so the parser can walk on without holding the view.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst_addr(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac.0);
    }

    /// Sets the source MAC address.
    pub fn set_src_addr(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac.0);
    }

    /// Sets the EtherType (or first TPID).
    pub fn set_ethertype(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::ETHERTYPE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Start of a real ARP request captured on a Linux bridge.
    const ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06, // eth
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
    ];

    #[test]
    fn fixture_fields() {
        let f = EthernetFrame::new_checked(&ARP_REQUEST[..]).unwrap();
        assert_eq!(f.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(f.src_addr(), MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(f.ethertype(), ethertype::ARP);
        assert_eq!(f.payload().len(), 28);
    }

    #[test]
    fn short_buffer_is_refused() {
        assert_eq!(EthernetFrame::new_checked(&ARP_REQUEST[..13]).unwrap_err(), Error::Truncated);
        assert!(EthernetFrame::new_checked(&ARP_REQUEST[..14]).unwrap().payload().is_empty());
    }

    #[test]
    fn set_then_get_round_trips() {
        let mut buf = [0u8; HEADER_LEN];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        f.set_dst_addr(MacAddr([1, 2, 3, 4, 5, 6]));
        f.set_src_addr(MacAddr([7, 8, 9, 10, 11, 12]));
        f.set_ethertype(ethertype::LLDP);
        let f = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.dst_addr().0, [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.src_addr().0, [7, 8, 9, 10, 11, 12]);
        assert_eq!(f.ethertype(), ethertype::LLDP);
        assert_eq!(f.into_inner().len(), HEADER_LEN);
    }
}
