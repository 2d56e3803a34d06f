//! The C side: DPDK's exported functions that take only scalars and opaque
//! pointers, declared by hand, and the shim's functions (csrc/shim.c) for
//! everything inline or struct-shaped. Only this crate calls them.

use std::os::raw::{c_char, c_int, c_uint};

/// DPDK's `struct rte_mbuf`, opaque: only the shim looks inside.
#[repr(C)]
pub struct RteMbuf {
    _opaque: [u8; 0],
}

/// DPDK's `struct rte_mempool`, opaque.
#[repr(C)]
pub struct RteMempool {
    _opaque: [u8; 0],
}

/// `struct fs_seg` of the shim: a buffer's data start, length and room.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FsSeg {
    pub data: *mut u8,
    pub len: u32,
    pub room: u32,
}

impl FsSeg {
    pub const EMPTY: FsSeg = FsSeg { data: std::ptr::null_mut(), len: 0, room: 0 };
}

/// `struct fs_dev_info` of the shim.
#[repr(C)]
pub struct FsDevInfo {
    pub driver: [c_char; 64],
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub min_mtu: u16,
    pub max_mtu: u16,
    pub rss_offloads: u64,
    pub hash_key_size: u8,
    pub socket: i32,
}

/// `struct fs_stats` of the shim.
#[repr(C)]
#[derive(Default)]
pub struct FsStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// `SOCKET_ID_ANY`.
pub const SOCKET_ID_ANY: c_int = -1;

extern "C" {
    // EAL (librte_eal).
    pub fn rte_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
    pub fn rte_eal_cleanup() -> c_int;
    pub fn rte_thread_register() -> c_int;
    pub fn rte_thread_unregister();
    pub fn rte_strerror(errnum: c_int) -> *const c_char;
    pub fn rte_eal_get_runtime_dir() -> *const c_char;

    // Mempools (librte_mbuf, librte_mempool).
    pub fn rte_pktmbuf_pool_create(
        name: *const c_char,
        n: c_uint,
        cache_size: c_uint,
        priv_size: u16,
        data_room_size: u16,
        socket_id: c_int,
    ) -> *mut RteMempool;
    pub fn rte_mempool_free(mp: *mut RteMempool);
    pub fn rte_mempool_avail_count(mp: *const RteMempool) -> c_uint;
    pub fn rte_mempool_in_use_count(mp: *const RteMempool) -> c_uint;

    // ethdev (librte_ethdev).
    pub fn rte_eth_dev_get_port_by_name(name: *const c_char, port_id: *mut u16) -> c_int;
    pub fn rte_eth_dev_start(port_id: u16) -> c_int;
    pub fn rte_eth_dev_stop(port_id: u16) -> c_int;
    pub fn rte_eth_dev_close(port_id: u16) -> c_int;
    pub fn rte_eth_promiscuous_enable(port_id: u16) -> c_int;
    pub fn rte_eth_promiscuous_disable(port_id: u16) -> c_int;

    // The shim (csrc/shim.c).
    pub fn fs_errno() -> c_int;
    pub fn fs_lcore_id() -> c_uint;
    pub fn fs_pktmbuf_headroom() -> u16;
    pub fn fs_rx_burst(
        port: u16,
        queue: u16,
        mbufs: *mut *mut RteMbuf,
        segs: *mut FsSeg,
        n: u16,
        dropped: *mut u64,
    ) -> u16;
    pub fn fs_tx_burst(port: u16, queue: u16, mbufs: *mut *mut RteMbuf, lens: *mut u32, n: u16) -> u16;
    pub fn fs_mbuf_alloc(mp: *mut RteMempool, seg: *mut FsSeg) -> *mut RteMbuf;
    pub fn fs_mbuf_free(m: *mut RteMbuf);
    pub fn fs_mbuf_ref(m: *mut RteMbuf);
    pub fn fs_mbuf_refcnt(m: *const RteMbuf) -> u16;
    pub fn fs_dev_info(port: u16, out: *mut FsDevInfo) -> c_int;
    pub fn fs_dev_configure(
        port: u16,
        nrxq: u16,
        ntxq: u16,
        nrxd: *mut u16,
        ntxd: *mut u16,
        mtu: u32,
        mp: *mut RteMempool,
        rss: *mut c_int,
        stage: *mut c_int,
    ) -> c_int;
    pub fn fs_link_up(port: u16) -> c_int;
    #[cfg(test)]
    pub fn fs_symmetric_rss_key(key: *mut u8, len: c_uint);
    #[cfg(test)]
    pub fn fs_softrss_ipv4(key: *const u8, src: u32, dst: u32, sport: u16, dport: u16) -> u32;
    pub fn fs_stats(port: u16, out: *mut FsStats) -> c_int;
}

/// DPDK's text for an errno value (positive or negative).
pub fn strerror(err: c_int) -> String {
    // SAFETY: rte_strerror accepts any value and returns a pointer to a
    // static or thread-local NUL-terminated string, read before anything
    // else can overwrite it on this thread.
    unsafe {
        let p = rte_strerror(err.abs());
        if p.is_null() {
            return format!("error {err}");
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}
