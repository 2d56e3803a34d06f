//! Ethernet devices: any ethdev the EAL probed (a PCI NIC allowed with
//! `-a`, or a `--vdev`), configured, started, and split into queues that
//! each belong to one thread.

use crate::eal::Eal;
use crate::ffi::{self, FsDevInfo, FsSeg, FsStats, RteMbuf};
use crate::mbuf::{Mbuf, Segment};
use crate::mempool::Mempool;
use crate::Error;
use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// Most packets one burst call moves.
pub const MAX_BURST: usize = 32;

/// How a device is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Receive queues (RSS spreads flows over them when there are several).
    pub rx_queues: u16,
    /// Transmit queues (one per thread that transmits).
    pub tx_queues: u16,
    /// Descriptors per receive queue (the device may round them).
    pub rx_descriptors: u16,
    /// Descriptors per transmit queue.
    pub tx_descriptors: u16,
    /// MTU to set; the device's default when `None`.
    pub mtu: Option<u16>,
    /// Receive frames for any destination MAC.
    pub promiscuous: bool,
}

/// Facts about a device, read before configuring it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevInfo {
    /// The driver (`net_memif`, `net_ixgbe`, ...).
    pub driver: String,
    /// Most receive queues.
    pub max_rx_queues: u16,
    /// Most transmit queues.
    pub max_tx_queues: u16,
    /// MTU range.
    pub min_mtu: u16,
    /// MTU range.
    pub max_mtu: u16,
    /// RSS hash types the device supports (0: no RSS).
    pub rss_offloads: u64,
}

/// Device counters, as the driver keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Packets the device dropped for lack of descriptors (we did not poll fast enough).
    pub imissed: u64,
    /// Erroneous packets received.
    pub ierrors: u64,
    /// Failed transmissions.
    pub oerrors: u64,
    /// Receive buffer allocation failures (the mempool ran empty).
    pub rx_nombuf: u64,
}

/// A device string: a PCI address or a virtual device, with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A PCI function (`0000:01:00.0`), passed to the EAL with `-a`.
    Pci(String),
    /// A virtual device (`net_memif0,role=server,...`), passed with `--vdev`.
    Vdev(String),
}

impl DeviceSpec {
    /// Parses and checks a device string. PCI addresses are
    /// `[domain:]bus:device.function` in hex, optionally followed by
    /// `,key=value` arguments; virtual devices are a driver name starting
    /// with `net_` (or DPDK's older `eth_`) and an instance suffix, then
    /// `,key=value` arguments.
    pub fn parse(s: &str) -> Result<DeviceSpec, String> {
        let (name, args) = s.split_once(',').unwrap_or((s, ""));
        if !args.is_empty() {
            for kv in args.split(',') {
                match kv.split_once('=') {
                    Some((k, _)) if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {}
                    _ => return Err(format!("device argument `{kv}` is not key=value")),
                }
            }
        }
        if is_pci(name) {
            return Ok(DeviceSpec::Pci(s.to_string()));
        }
        let driver = name.trim_end_matches(|c: char| c.is_ascii_digit());
        let known = name.starts_with("net_") || name.starts_with("eth_");
        if known && driver.len() > 4 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Ok(DeviceSpec::Vdev(s.to_string()));
        }
        Err(format!(
            "`{name}` is neither a PCI address (0000:01:00.0) nor a virtual device name (net_memif0, net_pcap1, ...)"
        ))
    }

    /// The ethdev name DPDK gives the device: the string before the first comma.
    pub fn name(&self) -> &str {
        let s = match self {
            DeviceSpec::Pci(s) | DeviceSpec::Vdev(s) => s,
        };
        s.split(',').next().unwrap_or(s)
    }
}

/// `[domain:]bus:device.function`, all hex.
fn is_pci(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit());
    let parts: Vec<&str> = s.split(':').collect();
    let (bus, devfn) = match parts.as_slice() {
        [d, b, df] if hex(d, 4) => (*b, *df),
        [b, df] => (*b, *df),
        _ => return false,
    };
    let Some((dev, func)) = devfn.split_once('.') else { return false };
    hex(bus, 2) && hex(dev, 2) && func.len() == 1 && matches!(func.as_bytes()[0], b'0'..=b'7')
}

/// A configured, started device. Stopped and closed when the last queue
/// and handle are gone.
#[derive(Debug)]
pub struct EthDev {
    port: u16,
    name: String,
    info: DevInfo,
    /// Queues handed out (each exactly once, so one thread owns each).
    taken: Mutex<(Vec<bool>, Vec<bool>)>,
    _pool: Arc<Mempool>,
    _eal: Arc<Eal>,
}

impl EthDev {
    /// Finds the probed device called `name` (see [`DeviceSpec::name`]),
    /// configures it with `cfg`, fills its receive queues from `pool`,
    /// starts it and sets promiscuous mode.
    pub fn open(eal: &Arc<Eal>, pool: &Arc<Mempool>, name: &str, cfg: &DeviceConfig) -> Result<Arc<EthDev>, Error> {
        let err = |message: String| Error::Device { device: name.to_string(), message };
        let cname = CString::new(name).map_err(|_| err("name contains a NUL byte".into()))?;
        let mut port = 0u16;
        // SAFETY: cname is a valid C string, port a valid out pointer.
        let rc = unsafe { ffi::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut port) };
        if rc != 0 {
            return Err(err(
                "no such DPDK device: the EAL did not probe it (driver missing, wrong PCI address or vdev arguments; see the EAL log above)".into(),
            ));
        }
        let info = dev_info(port).map_err(|e| err(format!("device info: {}", ffi::strerror(e))))?;
        if cfg.rx_queues == 0 || cfg.rx_queues > info.max_rx_queues {
            return Err(err(format!(
                "{} rx queues asked, the {} driver allows 1..={}",
                cfg.rx_queues, info.driver, info.max_rx_queues
            )));
        }
        if cfg.tx_queues == 0 || cfg.tx_queues > info.max_tx_queues {
            return Err(err(format!(
                "{} tx queues asked, the {} driver allows 1..={}",
                cfg.tx_queues, info.driver, info.max_tx_queues
            )));
        }
        let (mut nrxd, mut ntxd) = (cfg.rx_descriptors, cfg.tx_descriptors);
        let (mut rss, mut stage) = (0, 0);
        // SAFETY: port is a valid, stopped (never started) device; the out
        // pointers are valid; the pool outlives the device (we hold it).
        let rc = unsafe {
            ffi::fs_dev_configure(
                port,
                cfg.rx_queues,
                cfg.tx_queues,
                &mut nrxd,
                &mut ntxd,
                cfg.mtu.map_or(0, u32::from),
                pool.as_ptr(),
                &mut rss,
                &mut stage,
            )
        };
        if rc != 0 {
            let step = match stage {
                1 => "configure",
                2 => "descriptor counts",
                3 => "rx queue setup",
                _ => "tx queue setup",
            };
            let mtu = match cfg.mtu {
                Some(m) if stage == 1 => format!(" (MTU {m}; the driver allows {}..={})", info.min_mtu, info.max_mtu),
                _ => String::new(),
            };
            return Err(err(format!("{step}: {}{mtu}", ffi::strerror(rc))));
        }
        // SAFETY: the device is configured with its queues set up.
        let rc = unsafe { ffi::rte_eth_dev_start(port) };
        if rc != 0 {
            // SAFETY: a configured device may be closed.
            unsafe { ffi::rte_eth_dev_close(port) };
            return Err(err(format!("start: {}", ffi::strerror(rc))));
        }
        // SAFETY: a started device; promiscuous mode is a control call.
        let rc = unsafe {
            if cfg.promiscuous {
                ffi::rte_eth_promiscuous_enable(port)
            } else {
                ffi::rte_eth_promiscuous_disable(port)
            }
        };
        if rc != 0 {
            // Virtual devices without a MAC filter (ring, null, pcap) do not support the switch: nothing to do.
            log::debug!("dpdk: {name}: promiscuous mode {}: {}", cfg.promiscuous, ffi::strerror(rc));
        }
        if cfg.rx_queues > 1 && rss == 0 {
            log::warn!(
                "dpdk: {name}: the {} driver has no RSS: which of the {} rx queues a flow arrives on is up to the peer",
                info.driver,
                cfg.rx_queues
            );
        }
        log::info!(
            "dpdk: {name}: port {port}, driver {}, {} rx x {nrxd} / {} tx x {ntxd} descriptors{}",
            info.driver,
            cfg.rx_queues,
            cfg.tx_queues,
            if rss != 0 { ", symmetric RSS" } else { "" }
        );
        Ok(Arc::new(EthDev {
            port,
            name: name.to_string(),
            info,
            taken: Mutex::new((vec![false; cfg.rx_queues as usize], vec![false; cfg.tx_queues as usize])),
            _pool: Arc::clone(pool),
            _eal: Arc::clone(eal),
        }))
    }

    /// The EAL the device belongs to.
    pub fn eal(&self) -> &Arc<Eal> {
        &self._eal
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the driver reported.
    pub fn info(&self) -> &DevInfo {
        &self.info
    }

    /// Receive queue `q`, once: the caller's thread owns it from now on.
    pub fn rx_queue(self: &Arc<Self>, q: u16) -> Result<RxQueue, Error> {
        self.take(q, true)?;
        Ok(RxQueue { dev: Arc::clone(self), queue: q, dropped: 0 })
    }

    /// Transmit queue `q`, once.
    pub fn tx_queue(self: &Arc<Self>, q: u16) -> Result<TxQueue, Error> {
        self.take(q, false)?;
        Ok(TxQueue { dev: Arc::clone(self), queue: q })
    }

    fn take(&self, q: u16, rx: bool) -> Result<(), Error> {
        let mut t = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let list = if rx { &mut t.0 } else { &mut t.1 };
        let what = if rx { "rx" } else { "tx" };
        match list.get_mut(q as usize) {
            None => {
                Err(Error::Device { device: self.name.clone(), message: format!("{what} queue {q} does not exist") })
            }
            Some(true) => {
                Err(Error::Device { device: self.name.clone(), message: format!("{what} queue {q} is already taken") })
            }
            Some(slot) => {
                *slot = true;
                Ok(())
            }
        }
    }

    /// Whether the link is up (`None` when the driver cannot say). A control
    /// call: housekeeping, not per packet.
    pub fn link_up(&self) -> Option<bool> {
        // SAFETY: a started device; the shim reads the link without waiting.
        let rc = unsafe { ffi::fs_link_up(self.port) };
        (rc >= 0).then_some(rc == 1)
    }

    /// The driver's counters.
    pub fn stats(&self) -> Result<DevStats, Error> {
        let mut s = FsStats::default();
        // SAFETY: a valid device and out pointer.
        let rc = unsafe { ffi::fs_stats(self.port, &mut s) };
        if rc != 0 {
            return Err(Error::Device { device: self.name.clone(), message: format!("stats: {}", ffi::strerror(rc)) });
        }
        Ok(DevStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }
}

impl Drop for EthDev {
    fn drop(&mut self) {
        // SAFETY: the last handle and every queue are gone, so no thread
        // bursts on the device; stop then close releases its queues' mbufs.
        unsafe {
            let rc = ffi::rte_eth_dev_stop(self.port);
            if rc != 0 {
                log::warn!("dpdk: {}: stop: {}", self.name, ffi::strerror(rc));
            }
            let rc = ffi::rte_eth_dev_close(self.port);
            if rc != 0 {
                log::warn!("dpdk: {}: close: {}", self.name, ffi::strerror(rc));
            }
        }
    }
}

fn dev_info(port: u16) -> Result<DevInfo, i32> {
    // SAFETY: FsDevInfo is plain data; all-zero is a valid value.
    let mut i: FsDevInfo = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer; the shim checks the port id.
    let rc = unsafe { ffi::fs_dev_info(port, &mut i) };
    if rc != 0 {
        return Err(rc);
    }
    // SAFETY: the shim NUL-terminates the driver name within the array.
    let driver = unsafe { CStr::from_ptr(i.driver.as_ptr()) }.to_string_lossy().into_owned();
    Ok(DevInfo {
        driver,
        max_rx_queues: i.max_rx_queues,
        max_tx_queues: i.max_tx_queues,
        min_mtu: i.min_mtu,
        max_mtu: i.max_mtu,
        rss_offloads: i.rss_offloads,
    })
}

/// Received mbufs, filled by one [`RxQueue::rx_burst`] and taken with
/// [`RxBurst::drain`]. Mbufs not taken are freed on drop.
pub struct RxBurst {
    mbufs: [*mut RteMbuf; MAX_BURST],
    segs: [FsSeg; MAX_BURST],
    n: usize,
}

// SAFETY: the burst owns the mbuf references it holds (entries 0..n);
// moving it to another thread moves that ownership, as for Mbuf.
unsafe impl Send for RxBurst {}

impl Default for RxBurst {
    fn default() -> Self {
        RxBurst { mbufs: [std::ptr::null_mut(); MAX_BURST], segs: [FsSeg::EMPTY; MAX_BURST], n: 0 }
    }
}

impl RxBurst {
    /// Mbufs waiting to be taken.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when none are waiting.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Takes every waiting mbuf, in the order received; those the iterator
    /// does not yield are freed when it is dropped.
    ///
    /// The iterator is a value of its own rather than the burst (which
    /// lives behind a reference): its position stays in a register, where
    /// a field of the burst was stored and read back for every packet.
    #[inline]
    pub fn drain(&mut self) -> Drain<'_> {
        let n = std::mem::take(&mut self.n);
        Drain { entries: self.mbufs[..n].iter().zip(&self.segs[..n]) }
    }
}

impl Drop for RxBurst {
    fn drop(&mut self) {
        drop(self.drain());
    }
}

/// The received mbufs of an [`RxBurst`], each yielded once as a [`Segment`].
pub struct Drain<'a> {
    entries: std::iter::Zip<std::slice::Iter<'a, *mut RteMbuf>, std::slice::Iter<'a, FsSeg>>,
}

impl Iterator for Drain<'_> {
    type Item = Segment;

    #[inline]
    fn next(&mut self) -> Option<Segment> {
        let (&m, &seg) = self.entries.next()?;
        // SAFETY: the entries were filled by fs_rx_burst with received mbufs
        // we own and their data areas; the burst gave them up to this
        // iterator (its count is 0), which yields each once.
        Some(unsafe { Segment::from_raw(Mbuf::from_raw(NonNull::new_unchecked(m)), seg) })
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for Drain<'_> {}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        for seg in self.by_ref() {
            drop(seg);
        }
    }
}

/// One receive queue of a device, owned by one thread.
pub struct RxQueue {
    dev: Arc<EthDev>,
    queue: u16,
    dropped: u64,
}

impl RxQueue {
    /// Receives up to `max` (at most [`MAX_BURST`]) packets into `burst`,
    /// which must have been emptied. Returns how many arrived.
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut RxBurst, max: usize) -> usize {
        drop(burst.drain());
        let max = max.min(MAX_BURST) as u16;
        // SAFETY: this thread owns the queue (handed out once); the arrays
        // hold MAX_BURST entries and the shim writes at most max of each.
        let n = unsafe {
            ffi::fs_rx_burst(
                self.dev.port,
                self.queue,
                burst.mbufs.as_mut_ptr(),
                burst.segs.as_mut_ptr(),
                max,
                &mut self.dropped,
            )
        };
        burst.n = n as usize;
        n as usize
    }

    /// Packets dropped on receive because they spanned several mbufs.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Mbufs to transmit, with the length each must have on the wire.
/// Mbufs never transmitted are freed on drop.
pub struct TxBurst {
    mbufs: [*mut RteMbuf; MAX_BURST],
    lens: [u32; MAX_BURST],
    n: usize,
}

// SAFETY: as for RxBurst: entries 0..n are owned mbuf references.
unsafe impl Send for TxBurst {}

impl Default for TxBurst {
    fn default() -> Self {
        TxBurst { mbufs: [std::ptr::null_mut(); MAX_BURST], lens: [0; MAX_BURST], n: 0 }
    }
}

impl TxBurst {
    /// Adds an mbuf to send with `len` bytes of data (cut to what the mbuf
    /// can hold when it is sent); gives it back when the burst is full.
    #[inline]
    pub fn push(&mut self, mbuf: Mbuf, len: u32) -> Result<(), Mbuf> {
        if self.n == MAX_BURST {
            return Err(mbuf);
        }
        self.lens[self.n] = len;
        self.mbufs[self.n] = mbuf.into_raw();
        self.n += 1;
        Ok(())
    }

    /// Moves `(mbuf, length)` pairs from `items` into the burst until it is
    /// full or `items` runs out. Returns true when `items` ran out.
    ///
    /// The count stays in a register meanwhile: a [`TxBurst::push`] per
    /// packet stores it and reads it back behind the stores of the entry.
    #[inline]
    pub fn fill(&mut self, items: &mut impl Iterator<Item = (Mbuf, u32)>) -> bool {
        let TxBurst { mbufs, lens, n } = self;
        // Stores the count back also when `items` panics, so the mbufs
        // already moved in are still freed on drop.
        let mut count = Count { n: *n, out: n };
        loop {
            if count.n == MAX_BURST {
                return false;
            }
            let Some((mbuf, len)) = items.next() else { return true };
            lens[count.n] = len;
            mbufs[count.n] = mbuf.into_raw();
            count.n += 1;
        }
    }

    /// Mbufs waiting.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when none are waiting.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// True when no more fit.
    pub fn is_full(&self) -> bool {
        self.n == MAX_BURST
    }
}

/// A burst's count kept in a local while filling, stored back on every exit.
struct Count<'a> {
    n: usize,
    out: &'a mut usize,
}

impl Drop for Count<'_> {
    #[inline]
    fn drop(&mut self) {
        *self.out = self.n;
    }
}

impl Drop for TxBurst {
    fn drop(&mut self) {
        for &m in &self.mbufs[..self.n] {
            // SAFETY: entries 0..n are references we own.
            drop(unsafe { Mbuf::from_raw(NonNull::new_unchecked(m)) });
        }
    }
}

/// One transmit queue of a device, owned by one thread.
pub struct TxQueue {
    dev: Arc<EthDev>,
    queue: u16,
}

impl TxQueue {
    /// The device.
    pub fn device(&self) -> &Arc<EthDev> {
        &self.dev
    }

    /// Transmits the burst, leaving it empty: each mbuf's length is set,
    /// what the device does not take is freed. Returns how many were sent,
    /// and their bytes.
    #[inline]
    pub fn tx_burst(&mut self, burst: &mut TxBurst) -> Sent {
        if burst.n == 0 {
            return Sent::default();
        }
        // SAFETY: this thread owns the queue; entries 0..n are owned mbufs,
        // whose ownership passes to the device or (unsent) back to the pool;
        // the shim cuts each length to its mbuf's room before the device reads
        // it, writing only lens[0..n], borrowed uniquely through `burst`.
        let sent = unsafe {
            ffi::fs_tx_burst(
                self.dev.port,
                self.queue,
                burst.mbufs.as_mut_ptr(),
                burst.lens.as_mut_ptr(),
                burst.n as u16,
            )
        };
        burst.n = 0;
        let packets = usize::from(sent);
        // The lengths as sent: the shim wrote back any it cut to its mbuf's room.
        Sent { packets, bytes: burst.lens[..packets].iter().map(|&l| u64::from(l)).sum() }
    }
}

/// What one [`TxQueue::tx_burst`] transmitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Packets the device took.
    pub packets: usize,
    /// Their bytes.
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DPDK's software Toeplitz hash of an IPv4 4-tuple under `key`.
    fn toeplitz(key: &[u8], t: (u32, u32, u16, u16)) -> u32 {
        assert!(key.len() >= 16, "rte_softrss reads 16 key bytes for an IPv4 4-tuple");
        // SAFETY: the key holds the 16 bytes the hash reads; a pure function.
        unsafe { ffi::fs_softrss_ipv4(key.as_ptr(), t.0, t.1, t.2, t.3) }
    }

    #[test]
    fn the_rss_key_sends_both_directions_of_a_flow_to_one_queue() {
        let mut key = [0u8; 40];
        // SAFETY: the shim writes exactly `len` bytes into the array.
        unsafe { ffi::fs_symmetric_rss_key(key.as_mut_ptr(), key.len() as u32) };
        assert_eq!(&key[..4], &[0x6d, 0x5a, 0x6d, 0x5a]);
        // A pseudo-random key, like a NIC's default: flows and their reverses hash apart, which
        // shows this test can tell.
        let asymmetric: Vec<u8> = (0..40u32).map(|i| (i.wrapping_mul(0x9e37_79b9) >> 11) as u8 | 1).collect();
        let (mut x, mut differ) = (0x1234_5678u32, 0);
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let flow = (0x0a00_0000 | x >> 8, 0x0a01_0000 | (x & 0xffff), (x >> 3) as u16, (x >> 16) as u16 | 1);
            let reverse = (flow.1, flow.0, flow.3, flow.2);
            let (h, r) = (toeplitz(&key, flow), toeplitz(&key, reverse));
            assert_eq!(h, r, "flow {flow:x?} and its reverse hash apart");
            for queues in [2, 4, 8] {
                assert_eq!(h % queues, r % queues);
            }
            differ += usize::from(toeplitz(&asymmetric, flow) != toeplitz(&asymmetric, reverse));
        }
        assert!(differ > 900, "only {differ} of 1000 flows hash apart under an asymmetric key");
    }

    #[test]
    fn device_strings() {
        assert_eq!(DeviceSpec::parse("0000:01:00.0").unwrap(), DeviceSpec::Pci("0000:01:00.0".into()));
        assert_eq!(DeviceSpec::parse("01:00.1").unwrap().name(), "01:00.1");
        let m = DeviceSpec::parse("net_memif0,role=server,socket=/run/x.sock,id=0").unwrap();
        assert_eq!((matches!(m, DeviceSpec::Vdev(_)), m.name()), (true, "net_memif0"));
        assert!(DeviceSpec::parse("net_pcap1,rx_pcap=/tmp/a.pcap").is_ok());
        assert!(DeviceSpec::parse("eth_ring0").is_ok());
        for bad in ["eth0", "0000:01:00.9", "net_", "net_memif0,role", "net_memif0,=x", "01:00", ""] {
            assert!(DeviceSpec::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
