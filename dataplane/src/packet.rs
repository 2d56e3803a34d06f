//! Packet buffers and the pools they come from.
//!
//! A [`Packet`] owns one buffer and a little metadata (ingress port, receive
//! timestamp). Buffers come from a [`Pool`] filled once at start-up; dropping
//! a packet returns its buffer to the pool with a lock-free push, so the hot
//! path neither allocates nor frees. The worker only uses [`Packet::data`],
//! [`Packet::len`] and [`Packet::meta`], so another backing store (a DPDK
//! mbuf) can stand behind the same type without changing the worker.

use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// One packet: a buffer, the length of the valid data in it, and metadata.
pub struct Packet {
    buf: Box<[u8]>,
    len: u32,
    /// Metadata: ingress port, timestamp, original length.
    pub meta: Meta,
    pool: Option<Arc<Pool>>,
}

impl Packet {
    /// A packet holding a copy of `bytes` in a buffer of its own (allocates:
    /// for tests, set-up and slow paths, never the worker).
    pub fn from_slice(bytes: &[u8], meta: Meta) -> Packet {
        Packet { buf: bytes.into(), len: bytes.len() as u32, meta, pool: None }
    }

    /// The packet's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// The packet's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len as usize]
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

    /// Size of the buffer.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Replaces the content with `bytes`, truncated to the buffer's capacity.
    /// Returns the number of bytes stored.
    #[inline]
    pub fn fill_from(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.buf.len());
        self.buf[..n].copy_from_slice(&bytes[..n]);
        self.len = n as u32;
        n
    }

    /// Replaces the content with `a` followed by `b`, truncated to the
    /// buffer's capacity. Returns the number of bytes stored.
    #[inline]
    pub fn fill_from2(&mut self, a: &[u8], b: &[u8]) -> usize {
        let n = self.fill_from(a);
        let m = b.len().min(self.buf.len() - n);
        self.buf[n..n + m].copy_from_slice(&b[..m]);
        self.len = (n + m) as u32;
        n + m
    }

    /// Appends `bytes`, truncated to the room left in the buffer. Returns the
    /// number of bytes appended.
    #[inline]
    pub fn extend_from(&mut self, bytes: &[u8]) -> usize {
        let at = self.len as usize;
        let m = bytes.len().min(self.buf.len() - at);
        self.buf[at..at + m].copy_from_slice(&bytes[..m]);
        self.len = (at + m) as u32;
        m
    }

    /// Shortens the packet to `len` bytes (no-op when already shorter).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len as usize {
            self.len = len as u32;
        }
    }
}

impl Drop for Packet {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            // Taking the box leaves an empty one behind, which owns no memory.
            let buf = std::mem::take(&mut self.buf);
            pool.give_back(buf);
        }
    }
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet").field("len", &self.len).field("meta", &self.meta).finish()
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
            Some(buf) => Some(Packet { buf, len: 0, meta: Meta::default(), pool: Some(Arc::clone(self)) }),
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
}
