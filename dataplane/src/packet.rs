//! Packet buffers and the pools they come from.
//!
//! A [`Packet`] owns one buffer and a little metadata (ingress port, receive
//! timestamp). The buffer is either a heap buffer from a [`Pool`] filled
//! once at start-up (dropping the packet returns it with a lock-free push,
//! so the hot path neither allocates nor frees), or, with the `dpdk`
//! feature, a DPDK mbuf received by a DPDK port (dropping the packet frees
//! the mbuf). The packet keeps a data pointer, length and capacity of its
//! own next to the backing, so [`Packet::data`] is the same branch-free
//! slice for both; the worker only uses [`Packet::data`], [`Packet::len`]
//! and [`Packet::meta`].
//!
//! An mbuf-backed packet can be shared ([`Packet::share`]): the copy is a
//! reference-counted clone of the same mbuf, made without copying, and both
//! are read-only while shared. Clones can be bounded by a [`ShareLimit`], so
//! copies held by slow sinks can never take all of the receive pool's mbufs.

use crossbeam_queue::ArrayQueue;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Index of a port in the dataplane's port table.
pub type PortId = u16;

/// Metadata carried with a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Port the packet was received on.
    pub port: PortId,
    /// Receive time in nanoseconds since the Unix epoch; 0 when the port has
    /// no timestamp (the worker then stamps copies with the burst's time).
    pub ts_ns: u64,
    /// Length of the packet on the wire, when the buffer holds less (a sliced
    /// copy, a capture with a snap length). 0 means "same as `len()`".
    pub orig_len: u32,
}

/// What holds a packet's bytes.
enum Backing {
    /// A heap buffer (a `Box<[u8]>` given up with `into_raw`), returned to
    /// its pool on drop, or freed when it has none.
    Heap(Option<Arc<Pool>>),
    /// A DPDK mbuf reference (where its data is, the packet keeps), and the
    /// limit a shared clone counts against.
    #[cfg(feature = "dpdk")]
    Mbuf(dpdk::Mbuf, Option<Arc<ShareLimit>>),
}

/// One packet: a buffer, the length of the valid data in it, and metadata.
pub struct Packet {
    /// First byte of the buffer's data area; valid for `cap` bytes while `backing` holds it.
    ptr: NonNull<u8>,
    len: u32,
    cap: u32,
    /// Metadata: ingress port, timestamp, original length.
    pub meta: Meta,
    backing: Backing,
}

// SAFETY: a Packet owns its buffer (a heap box, or one mbuf reference whose
// count DPDK updates atomically); the raw pointer only points into it, so
// moving the packet to another thread moves that ownership with it.
#[allow(unsafe_code)]
unsafe impl Send for Packet {}
// SAFETY: through &Packet the bytes are only read; writes need &mut Packet
// and are refused while an mbuf is shared (see `room`).
#[allow(unsafe_code)]
unsafe impl Sync for Packet {}

impl Packet {
    /// A packet over a heap buffer given up by `Box::into_raw`.
    fn from_box(buf: Box<[u8]>, len: usize, meta: Meta, pool: Option<Arc<Pool>>) -> Packet {
        let cap = buf.len() as u32;
        let raw = Box::into_raw(buf) as *mut u8;
        // SAFETY: Box::into_raw never returns null (a dangling, non-null pointer for an empty box).
        #[allow(unsafe_code)]
        let ptr = unsafe { NonNull::new_unchecked(raw) };
        Packet { ptr, len: len.min(cap as usize) as u32, cap, meta, backing: Backing::Heap(pool) }
    }

    /// A packet holding a copy of `bytes` in a buffer of its own (allocates:
    /// for tests, set-up and slow paths, never the worker).
    pub fn from_slice(bytes: &[u8], meta: Meta) -> Packet {
        Packet::from_box(bytes.into(), bytes.len(), meta, None)
    }

    /// A packet over a received (or freshly allocated) mbuf, without copying.
    #[cfg(feature = "dpdk")]
    #[inline]
    pub fn from_mbuf(seg: dpdk::Segment, meta: Meta) -> Packet {
        let (ptr, len, cap) = (seg.data(), seg.len(), seg.room());
        Packet { ptr, len, cap, meta, backing: Backing::Mbuf(seg.into_mbuf(), None) }
    }

    /// A reference-counted clone of an mbuf-backed packet: the same bytes,
    /// no copy, read-only (capacity 0) like the original while both live.
    /// `None` for heap packets (always, without the `dpdk` feature), and
    /// when `limit` has no room: the caller then copies instead.
    #[inline]
    pub fn share(&self, limit: Option<&Arc<ShareLimit>>) -> Option<Packet> {
        #[cfg(feature = "dpdk")]
        if let Backing::Mbuf(mbuf, _) = &self.backing {
            if let Some(l) = limit {
                if !l.acquire() {
                    return None;
                }
            }
            let backing = Backing::Mbuf(mbuf.clone(), limit.cloned());
            return Some(Packet { ptr: self.ptr, len: self.len, cap: 0, meta: self.meta, backing });
        }
        let _ = limit;
        None
    }

    /// True when the bytes are in a DPDK mbuf.
    #[cfg(feature = "dpdk")]
    #[inline]
    pub fn is_mbuf(&self) -> bool {
        matches!(self.backing, Backing::Mbuf(..))
    }

    /// The mbuf and the packet's length, for a DPDK transmit queue; the
    /// packet itself back when it is not mbuf-backed (it must be copied).
    #[cfg(feature = "dpdk")]
    #[inline]
    pub fn into_mbuf(self) -> Result<(dpdk::Mbuf, u32), Packet> {
        // Taken apart without running Drop, so handing an mbuf to a device
        // costs no drop call per packet. The two fields are read where they
        // lie: copying the whole backing out first made the variant test
        // wait on a load from that copy (a third of `tx_burst`'s samples).
        let this = std::mem::ManuallyDrop::new(self);
        match &this.backing {
            Backing::Mbuf(mbuf, limit) => {
                // SAFETY: `this` is never dropped nor used again, so each
                // field read here has exactly one owner, as it had before.
                #[allow(unsafe_code)]
                let (mbuf, limit) = unsafe { (std::ptr::read(mbuf), std::ptr::read(limit)) };
                // The clone leaves the copy budget for the device's ring, which is sized apart.
                if let Some(l) = limit {
                    l.release();
                }
                Ok((mbuf, this.len))
            }
            Backing::Heap(_) => Err(std::mem::ManuallyDrop::into_inner(this)),
        }
    }

    /// The packet's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: ptr is valid for cap >= len bytes while the backing is
        // held, and &self keeps it; nobody writes them meanwhile (writes need
        // &mut and an unshared buffer).
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr(), self.len as usize)
        }
    }

    /// Bytes that may be written: the capacity, or 0 while an mbuf is
    /// shared with a clone (its bytes are then read-only).
    #[inline]
    fn room(&self) -> usize {
        match &self.backing {
            Backing::Heap(_) => self.cap as usize,
            #[cfg(feature = "dpdk")]
            Backing::Mbuf(mbuf, _) if !mbuf.is_shared() => self.cap as usize,
            #[cfg(feature = "dpdk")]
            _ => 0,
        }
    }

    /// The writable buffer, `room()` bytes long.
    #[inline]
    fn buf_mut(&mut self) -> &mut [u8] {
        let room = self.room();
        // SAFETY: ptr is valid for cap >= room bytes, we hold &mut self, and
        // room is 0 when the bytes are shared with another handle.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr(), room)
        }
    }

    /// The packet's bytes, writable (empty while an mbuf is shared: shared
    /// bytes are read-only).
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let len = self.len as usize;
        let buf = self.buf_mut();
        let n = len.min(buf.len());
        &mut buf[..n]
    }

    /// Length of the valid data.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when the packet holds no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Length on the wire: `meta.orig_len` when set, else `len()`.
    #[inline]
    pub fn wire_len(&self) -> usize {
        if self.meta.orig_len != 0 {
            self.meta.orig_len as usize
        } else {
            self.len as usize
        }
    }

    /// Size of the buffer (0 for a shared clone, which cannot be written).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// Replaces the content with `bytes`, truncated to the buffer's capacity.
    /// Returns the number of bytes stored.
    #[inline]
    pub fn fill_from(&mut self, bytes: &[u8]) -> usize {
        let buf = self.buf_mut();
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        self.len = n as u32;
        n
    }

    /// Replaces the content with `a` followed by `b`, truncated to the
    /// buffer's capacity. Returns the number of bytes stored.
    #[inline]
    pub fn fill_from2(&mut self, a: &[u8], b: &[u8]) -> usize {
        let n = self.fill_from(a);
        let buf = self.buf_mut();
        let m = b.len().min(buf.len() - n);
        buf[n..n + m].copy_from_slice(&b[..m]);
        self.len = (n + m) as u32;
        n + m
    }

    /// Appends `bytes`, truncated to the room left in the buffer. Returns the
    /// number of bytes appended.
    #[inline]
    pub fn extend_from(&mut self, bytes: &[u8]) -> usize {
        let at = self.len as usize;
        let buf = self.buf_mut();
        let at = at.min(buf.len());
        let m = bytes.len().min(buf.len() - at);
        buf[at..at + m].copy_from_slice(&bytes[..m]);
        self.len = (at + m) as u32;
        m
    }

    /// Shortens the packet to `len` bytes (no-op when already shorter, and
    /// while an mbuf is shared: its length is the mbuf's on transmit).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len as usize && self.room() > 0 {
            self.len = len as u32;
        }
    }
}

impl Drop for Packet {
    fn drop(&mut self) {
        #[cfg(feature = "dpdk")]
        if let Backing::Mbuf(_, Some(limit)) = &self.backing {
            limit.release();
        }
        // Without the dpdk feature the heap is the only backing.
        #[allow(irrefutable_let_patterns)]
        if let Backing::Heap(pool) = &mut self.backing {
            let pool = pool.take();
            let raw = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.cap as usize);
            // SAFETY: ptr/cap came from Box::into_raw of a Box<[u8]> of cap
            // bytes (from_box) and the box is rebuilt exactly once, here.
            #[allow(unsafe_code)]
            let buf = unsafe { Box::from_raw(raw) };
            if let Some(pool) = pool {
                pool.give_back(buf);
            }
        }
        // An mbuf backing frees its reference as the field drops.
    }
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet").field("len", &self.len).field("meta", &self.meta).finish()
    }
}

/// A bound on outstanding shared clones ([`Packet::share`]) of received
/// mbufs. Every clone a sink holds keeps an mbuf out of the receive pool; the
/// limit keeps enough of the pool for receiving, so slow sinks lose copies
/// (counted by the caller) and never make a port drop originals.
#[derive(Debug)]
pub struct ShareLimit {
    out: AtomicUsize,
    max: usize,
}

impl ShareLimit {
    /// At most `max` clones out at once (0: never share).
    pub fn new(max: usize) -> Arc<ShareLimit> {
        Arc::new(ShareLimit { out: AtomicUsize::new(0), max })
    }

    /// Takes a slot; false when all are taken.
    #[inline]
    pub fn acquire(&self) -> bool {
        if self.out.fetch_add(1, Ordering::Relaxed) < self.max {
            true
        } else {
            self.out.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    /// Gives a slot back.
    #[inline]
    pub fn release(&self) {
        self.out.fetch_sub(1, Ordering::Relaxed);
    }

    /// Clones out now.
    pub fn outstanding(&self) -> usize {
        self.out.load(Ordering::Relaxed)
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// Asks the CPU to start loading the cache line holding `r`. A hint: it
/// never faults and changes nothing, so the worker can issue it for a whole
/// burst before touching any of it.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only needs SSE, which every x86_64 CPU has; it
    // reads nothing architecturally and cannot fault, and `r` is a valid reference.
    #[allow(unsafe_code)]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// A fixed set of equally sized buffers, allocated once.
///
/// [`Pool::alloc`] and the return of a buffer on drop are lock-free and never
/// allocate. When the pool is empty, `alloc` returns `None` and counts it: the
/// caller drops whatever it wanted the buffer for (a copy, a received frame)
/// and counts that too.
pub struct Pool {
    free: ArrayQueue<Box<[u8]>>,
    buf_size: usize,
    capacity: usize,
    empty: AtomicU64,
}

impl Pool {
    /// A pool of `count` buffers of `buf_size` bytes each.
    pub fn new(count: usize, buf_size: usize) -> Arc<Pool> {
        let count = count.max(1);
        let free = ArrayQueue::new(count);
        for _ in 0..count {
            // The queue has exactly `count` slots, so this cannot fail.
            let _ = free.push(vec![0u8; buf_size].into_boxed_slice());
        }
        Arc::new(Pool { free, buf_size, capacity: count, empty: AtomicU64::new(0) })
    }

    /// Takes a buffer; the packet is empty (`len() == 0`) with default metadata.
    #[inline]
    pub fn alloc(self: &Arc<Self>) -> Option<Packet> {
        match self.free.pop() {
            Some(buf) => Some(Packet::from_box(buf, 0, Meta::default(), Some(Arc::clone(self)))),
            None => {
                self.empty.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn give_back(&self, buf: Box<[u8]>) {
        // A buffer always fits: only buffers taken from this pool come back.
        let _ = self.free.push(buf);
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Buffers in the pool when all are free.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Buffers free right now.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// How many times `alloc` found the pool empty.
    pub fn empty_count(&self) -> u64 {
        self.empty.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packets are moved by value at every step of a burst (receive, stage,
    /// transmit): their size is a per-packet cost, so it must not creep up.
    #[test]
    fn packet_fits_in_48_bytes() {
        assert!(std::mem::size_of::<Packet>() <= 48, "Packet is {} bytes", std::mem::size_of::<Packet>());
    }

    #[test]
    fn pool_recycles_buffers_on_drop() {
        let pool = Pool::new(2, 64);
        let mut a = pool.alloc().unwrap();
        assert_eq!(a.fill_from(&[1, 2, 3]), 3);
        assert_eq!(a.data(), &[1, 2, 3]);
        let b = pool.alloc().unwrap();
        assert!(pool.alloc().is_none());
        assert_eq!(pool.empty_count(), 1);
        drop(a);
        drop(b);
        assert_eq!(pool.available(), 2);
        let c = pool.alloc().unwrap();
        assert_eq!(c.len(), 0);
        assert_eq!(c.capacity(), 64);
    }

    #[test]
    fn fill_truncates_to_capacity() {
        let pool = Pool::new(1, 4);
        let mut p = pool.alloc().unwrap();
        assert_eq!(p.fill_from(&[9; 10]), 4);
        assert_eq!(p.len(), 4);
        p.truncate(2);
        assert_eq!(p.data(), &[9, 9]);
        p.meta.orig_len = 10;
        assert_eq!(p.wire_len(), 10);
    }

    #[test]
    fn share_limit_bounds_slots() {
        let l = ShareLimit::new(2);
        assert!(l.acquire() && l.acquire());
        assert!(!l.acquire());
        assert_eq!(l.outstanding(), 2);
        l.release();
        assert!(l.acquire());
        assert_eq!((l.outstanding(), l.max()), (2, 2));
    }

    #[test]
    fn heap_packets_free_their_buffers() {
        let p = Packet::from_slice(&[1, 2, 3], Meta::default());
        assert_eq!((p.data(), p.capacity()), (&[1u8, 2, 3][..], 3));
        drop(p);
        let e = Packet::from_slice(&[], Meta::default());
        assert!(e.is_empty());
        let pool = Pool::new(1, 8);
        let mut q = pool.alloc().unwrap();
        assert_eq!(q.fill_from2(&[1, 2, 3, 4, 5], &[6, 7, 8, 9]), 8);
        assert_eq!(q.extend_from(&[10]), 0);
        q.data_mut()[0] = 42;
        assert_eq!(q.data()[..2], [42, 2]);
    }
}
