//! A thin binding of DPDK 22.11 LTS for flowsteer: the EAL, packet mempools,
//! owned mbufs and ethdev queues.
//!
//! The C side is DPDK's exported functions (declared by hand in [`ffi`], no
//! bindgen) plus a small C shim (`csrc/shim.c`) for what DPDK only offers as
//! static inline functions or through its structs (rx/tx burst, mbuf
//! alloc/free/refcount, device configuration), so Rust never depends on a
//! DPDK struct layout. The shim works per burst: one call receives a whole
//! burst and returns each mbuf's data pointer and length with it.
//!
//! All of flowsteer's DPDK `unsafe` lives in this crate, each block with a
//! `// SAFETY:` note. The safe API keeps the rules DPDK leaves to the
//! caller: one EAL per process, each queue owned by one thread, mbufs freed
//! exactly once, pools and the EAL outliving every mbuf and device.

pub mod eal;
pub mod ethdev;
mod ffi;
pub mod mbuf;
pub mod mempool;

pub use eal::{Eal, EalConfig, Lcore};
pub use ethdev::{
    DevInfo, DevStats, DeviceConfig, DeviceSpec, Drain, EthDev, RxBurst, RxQueue, Sent, TxBurst, TxQueue, MAX_BURST,
};
pub use mbuf::{Mbuf, Segment};
pub use mempool::Mempool;

/// What went wrong talking to DPDK.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `rte_eal_init` can run once per process.
    #[error("the DPDK EAL is already initialised in this process (it can be initialised once)")]
    AlreadyInitialised,
    /// An EAL argument cannot be passed to C.
    #[error("EAL argument `{0}` contains a NUL byte")]
    Argument(String),
    /// The EAL refused to start or to register a thread.
    #[error("DPDK EAL: {message} (rte_errno {errno})")]
    Eal {
        /// rte_errno.
        errno: i32,
        /// DPDK's text for it, or what was being done.
        message: String,
    },
    /// A mempool could not be created.
    #[error("mempool {name}: {message}")]
    Mempool {
        /// Pool name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A device could not be found, configured or started.
    #[error("DPDK device {device}: {message}")]
    Device {
        /// Device name.
        device: String,
        /// What went wrong.
        message: String,
    },
}
