//! Zero-copy header views, smoltcp style (STYLE habit 1).
//!
//! Each header is a thin wrapper over a byte buffer (`Frame<T: AsRef<[u8]>>`)
//! whose accessors read fields in place, so the per-packet parser never copies
//! or allocates. `new_checked` verifies once that every fixed field is inside
//! the buffer; after that the accessors cannot go out of bounds. Field offsets
//! live in a `field` module per header so the reader and the writer agree by
//! construction. The owned [`build::PacketBuilder`] (tests, benches, other
//! crates' fixtures) writes through the same views.

pub mod ethernet;
pub mod geneve;
pub mod ipv4;
pub mod ipv6;
pub mod l4;
pub mod vlan;
pub mod vxlan;

#[cfg(any(test, feature = "testutil"))]
pub mod build;

/// Why a view refused a buffer. Kept coarse on purpose: the parser maps it to
/// a per-layer [`crate::parser::Malformed`] reason, which is what gets counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The buffer ends before the header (or its declared header length) does.
    Truncated,
    /// The version nibble does not belong to this header (IPv4/IPv6).
    BadVersion,
    /// A header-length field below the protocol minimum (IPv4 IHL < 5).
    BadHeaderLen,
}

/// Reads a big-endian u16 at `at`. Callers have checked the length already;
/// a shared helper keeps the views' accessors one-liners.
#[inline(always)]
pub(crate) fn be16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// Writes a big-endian u16 at `at` (builder side of [`be16`]).
#[inline(always)]
pub(crate) fn set_be16(data: &mut [u8], at: usize, value: u16) {
    data[at..at + 2].copy_from_slice(&value.to_be_bytes());
}
