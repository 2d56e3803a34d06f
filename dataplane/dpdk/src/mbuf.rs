//! Owned mbufs: dropping one frees it (or drops one reference), cloning one
//! takes another reference to the same buffer.

use crate::ffi::{self, FsSeg, RteMbuf};
use std::ptr::NonNull;

/// One owned reference to a single-segment packet mbuf.
///
/// `clone` bumps DPDK's reference count instead of copying: both handles
/// then point at the same bytes, which must not be written while shared
/// ([`Mbuf::is_shared`]). `drop` calls `rte_pktmbuf_free`, which returns the
/// mbuf to its pool when the last reference goes.
#[derive(Debug)]
pub struct Mbuf {
    ptr: NonNull<RteMbuf>,
}

// SAFETY: an Mbuf is one reference to an mbuf; the reference count is updated
// atomically by DPDK, and returning it to its pool is thread-safe
// (multi-producer ring ops), so a reference may move to another thread.
unsafe impl Send for Mbuf {}
// SAFETY: &Mbuf only allows reading the reference count (atomic) and
// cloning (an atomic increment).
unsafe impl Sync for Mbuf {}

impl Mbuf {
    /// Takes ownership of one reference to `ptr`.
    ///
    /// # Safety
    /// `ptr` must be a valid single-segment packet mbuf whose reference the
    /// caller owns and gives up.
    pub(crate) unsafe fn from_raw(ptr: NonNull<RteMbuf>) -> Mbuf {
        Mbuf { ptr }
    }

    /// Gives up ownership without freeing (the device now owns it).
    pub(crate) fn into_raw(self) -> *mut RteMbuf {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }

    /// References to this mbuf (1 when this handle is the only one).
    pub fn refcnt(&self) -> u16 {
        // SAFETY: the mbuf is valid while we hold a reference; an atomic read.
        unsafe { ffi::fs_mbuf_refcnt(self.ptr.as_ptr()) }
    }

    /// True when another handle (a clone, a device queue) refers to the same buffer.
    pub fn is_shared(&self) -> bool {
        self.refcnt() > 1
    }
}

impl Clone for Mbuf {
    #[inline]
    fn clone(&self) -> Mbuf {
        // SAFETY: we hold a reference, so the mbuf is live; the new
        // reference is owned by the returned handle.
        unsafe { ffi::fs_mbuf_ref(self.ptr.as_ptr()) };
        Mbuf { ptr: self.ptr }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own one reference; rte_pktmbuf_free drops it and
        // returns the mbuf to its pool when it was the last.
        unsafe { ffi::fs_mbuf_free(self.ptr.as_ptr()) }
    }
}

/// An mbuf with where its data is: the start, the length of the packet, and
/// the room from the start to the end of the buffer.
///
/// Only this crate makes them, from DPDK's own mbuf fields, so `data()` is
/// valid for `room()` bytes for as long as `mbuf` is alive, and `len() <= room()`.
#[derive(Debug)]
pub struct Segment {
    mbuf: Mbuf,
    data: NonNull<u8>,
    len: u32,
    room: u32,
}

// SAFETY: a Segment is an owned mbuf reference (Send, see Mbuf) plus a
// pointer into that mbuf's buffer, which moves with it.
unsafe impl Send for Segment {}
// SAFETY: &Segment only reads the bytes (bytes()) and clones the reference.
unsafe impl Sync for Segment {}

impl Segment {
    /// # Safety
    /// `seg` must describe the data area of `mbuf` (as the shim fills it).
    pub(crate) unsafe fn from_raw(mbuf: Mbuf, seg: FsSeg) -> Segment {
        // SAFETY: the shim never returns a null data pointer for a live mbuf.
        let data = unsafe { NonNull::new_unchecked(seg.data) };
        Segment { mbuf, data, len: seg.len.min(seg.room), room: seg.room }
    }

    /// The first byte of packet data.
    pub fn data(&self) -> NonNull<u8> {
        self.data
    }

    /// Bytes of packet data.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when the mbuf holds no data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes from the data start to the end of the buffer.
    pub fn room(&self) -> u32 {
        self.room
    }

    /// The packet's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: data is valid for room >= len bytes while the mbuf lives
        // (the type's invariant), and &self keeps it alive.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len as usize) }
    }

    /// Replaces the packet's bytes with `bytes` (cut to the room). Returns
    /// the length stored, or `None`, writing nothing, when the buffer is
    /// shared with another handle.
    pub fn fill(&mut self, bytes: &[u8]) -> Option<usize> {
        if self.mbuf.is_shared() {
            return None;
        }
        let n = bytes.len().min(self.room as usize);
        // SAFETY: the buffer is ours alone (not shared), valid for room
        // bytes, and `bytes` cannot overlap it (we hold the only reference).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data.as_ptr(), n) };
        self.len = n as u32;
        Some(n)
    }

    /// The mbuf.
    pub fn mbuf(&self) -> &Mbuf {
        &self.mbuf
    }

    /// The mbuf, giving up the data pointer.
    pub fn into_mbuf(self) -> Mbuf {
        self.mbuf
    }
}
