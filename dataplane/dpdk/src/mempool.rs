//! The packet-buffer pool: hugepage-backed mbufs (ordinary memory with
//! `no_huge`), with a per-lcore cache for registered threads.

use crate::eal::Eal;
use crate::ffi::{self, FsSeg, RteMempool};
use crate::mbuf::{Mbuf, Segment};
use crate::Error;
use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

/// A pool of packet mbufs.
///
/// Freed on drop only when every mbuf is back: freeing a pool with mbufs
/// still out would let them be returned into freed memory later, so a pool
/// that is not full at drop is leaked (with its EAL handle) and logged.
#[derive(Debug)]
pub struct Mempool {
    ptr: NonNull<RteMempool>,
    name: String,
    size: u32,
    data_room: u16,
    _eal: Arc<Eal>,
}

// SAFETY: a pktmbuf pool uses DPDK's default multi-producer/multi-consumer
// ring ops, so gets and puts from any thread are safe; the pointer itself is
// only freed in Drop, when no other handle exists.
unsafe impl Send for Mempool {}
// SAFETY: as above: every method through &self is a thread-safe DPDK call.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool called `name` (unique in the process) of `count` mbufs
    /// with `data_room` bytes each after DPDK's headroom, and a per-lcore
    /// cache of `cache` mbufs.
    pub fn new(eal: &Arc<Eal>, name: &str, count: u32, cache: u32, data_room: u16) -> Result<Arc<Mempool>, Error> {
        let err = |message: String| Error::Mempool { name: name.to_string(), message };
        let cname = CString::new(name).map_err(|_| err("name contains a NUL byte".into()))?;
        // SAFETY: a constant of the shim.
        let headroom = unsafe { ffi::fs_pktmbuf_headroom() };
        let room = data_room
            .checked_add(headroom)
            .ok_or_else(|| err(format!("data room {data_room} + headroom {headroom} exceeds 65535 bytes")))?;
        // SAFETY: the EAL is initialised (we hold it); cname is a valid C
        // string for the duration of the call.
        let ptr = unsafe { ffi::rte_pktmbuf_pool_create(cname.as_ptr(), count, cache, 0, room, ffi::SOCKET_ID_ANY) };
        let Some(ptr) = NonNull::new(ptr) else {
            // SAFETY: reads this thread's rte_errno after the failed call.
            let e = unsafe { ffi::fs_errno() };
            return Err(err(format!(
                "cannot create {count} mbufs of {room} bytes: {} (not enough hugepage memory? see dpdk.memory_mb)",
                ffi::strerror(e)
            )));
        };
        Ok(Arc::new(Mempool { ptr, name: name.to_string(), size: count, data_room, _eal: Arc::clone(eal) }))
    }

    pub(crate) fn as_ptr(&self) -> *mut RteMempool {
        self.ptr.as_ptr()
    }

    /// Mbufs in the pool when all are free.
    pub fn capacity(&self) -> u32 {
        self.size
    }

    /// Bytes of packet data an mbuf holds (after the headroom).
    pub fn data_room(&self) -> u16 {
        self.data_room
    }

    /// Mbufs free now, in the pool's ring and in every lcore cache.
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is valid while self lives; the count is a read.
        unsafe { ffi::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs out of the pool now (held by packets, devices, rings).
    pub fn in_use(&self) -> u32 {
        // SAFETY: as for available().
        unsafe { ffi::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// An empty mbuf, or `None` when the pool is empty.
    #[inline]
    pub fn alloc(&self) -> Option<Segment> {
        let mut seg = FsSeg::EMPTY;
        // SAFETY: the pool is valid; the shim writes seg only on success.
        let m = unsafe { ffi::fs_mbuf_alloc(self.ptr.as_ptr(), &mut seg) };
        let m = NonNull::new(m)?;
        // SAFETY: m is a fresh mbuf we own, seg describes its buffer.
        Some(unsafe { Segment::from_raw(Mbuf::from_raw(m), seg) })
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        let out = self.in_use();
        if out != 0 {
            log::error!("dpdk: mempool {}: {out} mbufs still in use at shutdown; leaking the pool", self.name);
            // Keep the EAL alive with the pool: cleaning it up would free the memory under those mbufs.
            std::mem::forget(Arc::clone(&self._eal));
            return;
        }
        // SAFETY: every mbuf is back and this is the last handle.
        unsafe { ffi::rte_mempool_free(self.ptr.as_ptr()) }
    }
}
