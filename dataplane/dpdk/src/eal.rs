//! The Environment Abstraction Layer: initialised once per process, cleaned
//! up when the last handle goes.
//!
//! Threads: flowsteer keeps its own thread model (one pinned Rust thread per
//! worker, sink threads, the control thread) and makes each worker an EAL
//! thread with `rte_thread_register` ([`Eal::register_thread`]) instead of
//! launching workers as EAL lcores with `rte_eal_remote_launch`. A
//! registered thread gets an lcore id, so mempool gets and puts use its
//! per-lcore cache (no ring operation per packet), while the worker's life
//! cycle, pinning, watchdog and shutdown stay the same as with every other
//! backend. The EAL's main lcore is the control thread; it is mapped to every
//! CPU the process may use (`--lcores 0@(...)`), so EAL initialisation does not
//! pin the control thread (and the sink threads it starts) to one core.

use crate::ffi;
use crate::Error;
use std::ffi::CString;
use std::marker::PhantomData;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// EAL settings (the `dpdk:` section of flowsteer's configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EalConfig {
    /// `--file-prefix`: names the hugepage files and the runtime directory,
    /// so several DPDK processes can share a host.
    pub file_prefix: String,
    /// `-m`: megabytes of memory to reserve at start.
    pub memory_mb: u32,
    /// `--no-huge`: ordinary memory instead of hugepages (tests, no IOMMU DMA).
    pub no_huge: bool,
    /// `--in-memory`: no files under /dev/hugepages or /var/run/dpdk
    /// (`--no-shconf` with `no_huge`, which has no hugepage files anyway).
    pub in_memory: bool,
    /// `--vdev` devices (virtual ports: memif, vhost, pcap, ring, ...).
    pub vdevs: Vec<String>,
    /// `-a` PCI addresses. When empty, `--no-pci` keeps the EAL from taking
    /// PCI devices the configuration does not name.
    pub pci: Vec<String>,
    /// Further arguments, appended last.
    pub extra: Vec<String>,
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig {
            file_prefix: "flowsteer".into(),
            memory_mb: 512,
            no_huge: false,
            in_memory: false,
            vdevs: Vec::new(),
            pci: Vec::new(),
            extra: Vec::new(),
        }
    }
}

impl EalConfig {
    /// The EAL command line (without the program name).
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(cpus) = allowed_cpus() {
            a.push(format!("--lcores=0@({cpus})"));
        }
        a.push(format!("--file-prefix={}", self.file_prefix));
        a.push(format!("-m{}", self.memory_mb));
        if self.no_huge {
            a.push("--no-huge".into());
        }
        if !self.no_huge && !self.in_memory {
            // Hugepage files are unlinked once mapped: the memory goes back to the
            // kernel when the process exits, also when it is killed. (Secondary
            // processes such as dpdk-pdump cannot attach; flowsteer does not use them.)
            a.push("--huge-unlink".into());
        }
        if self.in_memory {
            // --no-huge implies legacy memory, which --in-memory refuses; without
            // hugepages only the shared config files are left to avoid.
            a.push(if self.no_huge { "--no-shconf" } else { "--in-memory" }.into());
        }
        if self.pci.is_empty() {
            a.push("--no-pci".into());
        }
        for p in &self.pci {
            a.push(format!("--allow={p}"));
        }
        for v in &self.vdevs {
            a.push(format!("--vdev={v}"));
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// The CPUs this process may run on, as a list (`0-3,6`), from /proc.
fn allowed_cpus() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    let list = line.trim();
    (!list.is_empty()).then(|| list.to_string())
}

/// Set once `rte_eal_init` has been called: DPDK cannot initialise twice,
/// not even after `rte_eal_cleanup`.
static INITIALISED: AtomicBool = AtomicBool::new(false);

/// The initialised EAL. Mempools and devices hold an `Arc` to it, so
/// `rte_eal_cleanup` runs only after they are all gone.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialises the EAL with `cfg`. Fails when it was initialised before
    /// in this process, or when DPDK refuses the arguments or the memory.
    pub fn init(cfg: &EalConfig) -> Result<Arc<Eal>, Error> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(Error::AlreadyInitialised);
        }
        let mut args = vec!["flowsteer".to_string()];
        args.extend(cfg.args());
        log::info!("dpdk: EAL arguments: {}", args[1..].join(" "));
        let owned: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| Error::Argument(a.clone())))
            .collect::<Result<_, _>>()?;
        // rte_eal_init may permute argv; it gets pointers into `owned`, which outlives the call.
        let mut argv: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        // SAFETY: argv holds argc valid NUL-terminated strings that live
        // until after the call; the EAL has not been initialised (checked above).
        let rc = unsafe { ffi::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
        if rc < 0 {
            // SAFETY: reads the calling thread's rte_errno, set by the failed init.
            let err = unsafe { ffi::fs_errno() };
            return Err(Error::Eal { errno: err, message: ffi::strerror(err) });
        }
        Ok(Arc::new(Eal { _private: () }))
    }

    /// Makes the calling thread an EAL thread with an lcore id of its own (a
    /// per-lcore mempool cache) until the returned guard is dropped, on the
    /// same thread. Call after pinning the thread: the lcore takes its CPU set.
    pub fn register_thread(self: &Arc<Self>) -> Result<Lcore, Error> {
        // SAFETY: the EAL is initialised (an Eal exists); registering a
        // thread that is not yet registered only touches the lcore table.
        let rc = unsafe { ffi::rte_thread_register() };
        if rc < 0 {
            // SAFETY: reads this thread's rte_errno after the failed call.
            let err = unsafe { ffi::fs_errno() };
            return Err(Error::Eal { errno: err, message: format!("rte_thread_register: {}", ffi::strerror(err)) });
        }
        // SAFETY: a plain read of this thread's lcore id.
        let id = unsafe { ffi::fs_lcore_id() };
        Ok(Lcore { id, _eal: Arc::clone(self), _not_send: PhantomData })
    }
}

thread_local! {
    /// This thread's registration, made by [`Eal::ensure_registered`];
    /// unregistered when the thread exits.
    static REGISTERED: std::cell::RefCell<Option<Lcore>> = const { std::cell::RefCell::new(None) };
}

impl Eal {
    /// Registers the calling thread once (see [`Eal::register_thread`]),
    /// unless it already is an EAL thread (the main lcore). The registration
    /// lasts until the thread exits. A failure (no lcore id left) is logged:
    /// the thread still works, only without a mempool cache.
    pub fn ensure_registered(self: &Arc<Self>) {
        // SAFETY: a plain read of this thread's lcore id.
        if unsafe { ffi::fs_lcore_id() } != LCORE_ID_ANY {
            return;
        }
        match self.register_thread() {
            Ok(l) => {
                log::debug!("dpdk: thread {:?} registered as lcore {}", std::thread::current().name(), l.id());
                REGISTERED.with(|r| *r.borrow_mut() = Some(l));
            }
            Err(e) => {
                log::warn!("dpdk: thread {:?}: {e}; running without a mempool cache", std::thread::current().name())
            }
        }
    }
}

/// `LCORE_ID_ANY`: the lcore id of a thread the EAL does not know.
const LCORE_ID_ANY: u32 = u32::MAX;

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: the EAL is initialised; the string is the EAL's own,
        // copied before cleanup can free it.
        let dir = unsafe {
            let p = ffi::rte_eal_get_runtime_dir();
            (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        // SAFETY: the last handle is gone, so no mempool, device or
        // registered thread (each holds an Arc<Eal>) is left to use the EAL.
        let rc = unsafe { ffi::rte_eal_cleanup() };
        if rc != 0 {
            log::warn!("dpdk: rte_eal_cleanup: {}", ffi::strerror(rc));
        } else {
            log::info!("dpdk: EAL cleaned up");
        }
        // The runtime directory (/var/run/dpdk/<prefix>: config, memory maps,
        // the multi-process socket) only serves secondary processes, which
        // flowsteer does not support (registering threads disables them):
        // remove it so a clean exit leaves nothing behind.
        if let Some(dir) = dir {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                log::debug!("dpdk: removing {dir}: {e}");
            }
        }
    }
}

/// A registered EAL thread; unregisters on drop. Not `Send`: it must be
/// dropped on the thread it registered.
#[derive(Debug)]
pub struct Lcore {
    id: u32,
    _eal: Arc<Eal>,
    _not_send: PhantomData<*const ()>,
}

impl Lcore {
    /// The lcore id DPDK gave the thread.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for Lcore {
    fn drop(&mut self) {
        // SAFETY: this thread registered itself in register_thread and the
        // guard cannot leave the thread (not Send).
        unsafe { ffi::rte_thread_unregister() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_follow_the_config() {
        let cfg = EalConfig {
            no_huge: true,
            in_memory: true,
            vdevs: vec!["net_null0".into()],
            extra: vec!["--log-level=lib.eal:warning".into()],
            ..EalConfig::default()
        };
        let a = cfg.args();
        assert!(a[0].starts_with("--lcores=0@("), "{a:?}");
        assert_eq!(
            &a[1..],
            [
                "--file-prefix=flowsteer",
                "-m512",
                "--no-huge",
                "--no-shconf",
                "--no-pci",
                "--vdev=net_null0",
                "--log-level=lib.eal:warning"
            ]
        );
        let pci = EalConfig { pci: vec!["0000:01:00.0".into()], ..EalConfig::default() }.args();
        assert!(pci.contains(&"--allow=0000:01:00.0".to_string()) && !pci.contains(&"--no-pci".to_string()));
        assert!(pci.contains(&"--huge-unlink".to_string()), "hugepage files do not outlive the process");
    }
}
