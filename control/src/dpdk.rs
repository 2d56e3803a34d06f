//! DPDK in the configuration and at run time: the `dpdk:` section, `type:
//! dpdk` ports and the (port, queue) to worker map, compiled into plain data
//! ([`DpdkPlan`], [`DpdkPortPlan`]) that builds without DPDK; and, with the
//! `dpdk` feature, [`Dpdk`]: the EAL, the mbuf pool and the devices of a
//! running dataplane.
//!
//! Threads: workers stay flowsteer's own pinned threads. Each registers
//! itself with the EAL (`rte_thread_register`) the first time it polls a
//! DPDK port, which gives it an lcore id and so a per-lcore mempool cache;
//! launching workers as EAL lcores instead would hand their life cycle,
//! pinning and shutdown to the EAL and set DPDK workers apart from every
//! other backend's.

use crate::config::{Config, ConfigError, PortCfg, PortKind, Pos};
use dataplane::packet::PortId;
use std::collections::HashMap;

/// Default `dpdk.mbufs` (2^14 - 1: the mempool ring's best size).
const DEFAULT_MBUFS: u32 = 16383;
/// Default `dpdk.mbuf_cache`.
const DEFAULT_CACHE: u32 = 256;
/// DPDK's largest per-lcore mempool cache (RTE_MEMPOOL_CACHE_MAX_SIZE).
const MAX_CACHE: u32 = 512;
/// Default descriptors per queue.
const DEFAULT_DESCRIPTORS: u16 = 1024;
/// Data room of an mbuf for standard frames (RTE_MBUF_DEFAULT_DATAROOM).
const DEFAULT_DATA_ROOM: u32 = 2048;
/// Ethernet header, two VLAN tags and the FCS, on top of the MTU.
const L2_OVERHEAD: u32 = 14 + 8 + 4;

/// The `dpdk:` section, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkPlan {
    /// Extra EAL arguments.
    pub eal_args: Vec<String>,
    /// `--file-prefix`.
    pub file_prefix: String,
    /// `-m`.
    pub memory_mb: u32,
    /// `--no-huge`.
    pub no_huge: bool,
    /// `--in-memory`.
    pub in_memory: bool,
    /// Mbufs in the pool.
    pub mbufs: u32,
    /// Per-lcore cache.
    pub mbuf_cache: u32,
    /// Bytes of packet data per mbuf: enough for the largest configured MTU.
    pub data_room: u16,
    /// Mbufs that receive rings, transmit rings, lcore caches and bursts
    /// can hold: what copies may never take (see [`DpdkPlan::share_limit`]).
    pub reserved: u32,
}

impl DpdkPlan {
    /// Most refcount clones copies may hold at once: the pool less what
    /// receiving and transmitting need, and no more than the copy buffers.
    pub fn share_limit(&self, copy_buffers: usize) -> usize {
        (self.mbufs.saturating_sub(self.reserved) as usize).min(copy_buffers)
    }
}

/// A `type: dpdk` port, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkPortPlan {
    /// The device string (PCI address or vdev, with arguments).
    pub device: String,
    /// True for a PCI address (`-a`), false for a vdev (`--vdev`).
    pub pci: bool,
    /// Receive queues.
    pub rx_queues: u16,
    /// Transmit queues.
    pub tx_queues: u16,
    /// Descriptors per receive queue.
    pub rx_descriptors: u16,
    /// Descriptors per transmit queue.
    pub tx_descriptors: u16,
    /// MTU to set.
    pub mtu: Option<u16>,
}

fn at_kind(p: &PortCfg, i: usize) -> Pos {
    Pos::of(&p.kind, format!("ports[{i}].type"))
}

const NO_DPDK: &str =
    "this flowsteer was built without DPDK; build it with `cargo build --release --features control/dpdk` (needs libdpdk-dev)";

/// Checks the DPDK fields of port `i` and compiles a `type: dpdk` port.
/// `workers` is the default transmit queue count.
pub(crate) fn compile_port(
    p: &PortCfg,
    i: usize,
    file: &str,
    workers: usize,
) -> Result<Option<DpdkPortPlan>, ConfigError> {
    let dpdk_only = [
        ("device", p.device.is_some()),
        ("rx_queues", p.rx_queues.is_some()),
        ("tx_queues", p.tx_queues.is_some()),
        ("rx_descriptors", p.rx_descriptors.is_some()),
        ("tx_descriptors", p.tx_descriptors.is_some()),
        ("mtu", p.mtu.is_some()),
    ];
    if p.kind.value != PortKind::Dpdk {
        if let Some((what, _)) = dpdk_only.iter().find(|(_, present)| *present) {
            return Err(at_kind(p, i)
                .error(file, format!("`{what}` does not apply to {} ports (only to dpdk ports)", p.kind.value)));
        }
        return Ok(None);
    }
    if !cfg!(feature = "dpdk") {
        return Err(at_kind(p, i).error(file, format!("port `{}` is a dpdk port, but {NO_DPDK}", p.name.value)));
    }
    for (what, present) in [
        ("rx", p.rx.is_some()),
        ("tx", p.tx.is_some()),
        ("interface", p.interface.is_some()),
        ("qdisc_bypass", p.qdisc_bypass.is_some()),
        ("fanout", p.fanout.is_some()),
    ] {
        if present {
            return Err(at_kind(p, i).error(
                file,
                format!("`{what}` does not apply to dpdk ports (the device string carries a vdev's own options)"),
            ));
        }
    }
    let Some(dev) = &p.device else {
        return Err(at_kind(p, i).error(
            file,
            format!(
                "dpdk port `{}` needs `device`: a PCI address (0000:01:00.0) or a vdev (net_memif0,role=server,...)",
                p.name.value
            ),
        ));
    };
    let pci = device_is_pci(&dev.value).map_err(|m| Pos::of(dev, format!("ports[{i}].device")).error(file, m))?;
    let count = |v: &Option<serde_saphyr::Spanned<u16>>, f: &str, default: u16, max: u16| -> Result<u16, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) if s.value >= 1 && s.value <= max => Ok(s.value),
            Some(s) => Err(Pos::of(s, format!("ports[{i}].{f}")).error(file, format!("must be between 1 and {max}"))),
        }
    };
    let mtu = match &p.mtu {
        Some(m) if !(68..=9600).contains(&m.value) => {
            return Err(Pos::of(m, format!("ports[{i}].mtu")).error(file, "must be between 68 and 9600"))
        }
        m => m.as_ref().map(|m| m.value),
    };
    Ok(Some(DpdkPortPlan {
        device: dev.value.clone(),
        pci,
        rx_queues: count(&p.rx_queues, "rx_queues", 1, 1024)?,
        tx_queues: count(&p.tx_queues, "tx_queues", workers.min(u16::MAX as usize) as u16, 1024)?,
        rx_descriptors: count(&p.rx_descriptors, "rx_descriptors", DEFAULT_DESCRIPTORS, 32768)?,
        tx_descriptors: count(&p.tx_descriptors, "tx_descriptors", DEFAULT_DESCRIPTORS, 32768)?,
        mtu,
    }))
}

#[cfg(feature = "dpdk")]
fn device_is_pci(s: &str) -> Result<bool, String> {
    use dataplane::port::dpdk::dpdk::DeviceSpec;
    DeviceSpec::parse(s).map(|d| matches!(d, DeviceSpec::Pci(_)))
}

#[cfg(not(feature = "dpdk"))]
fn device_is_pci(_: &str) -> Result<bool, String> {
    Err(NO_DPDK.into())
}

/// Which (port, rx queue) pairs each worker polls, by worker index.
pub(crate) type QueueMap = Vec<Vec<(PortId, u16)>>;

/// Maps every receive queue of every polled DPDK port to one worker: as
/// `dataplane.workers[].queues` say, or queue q to worker q when none does.
/// `tool_ports` are not polled (a sink owns them).
pub(crate) fn assign_queues(
    cfg: &Config,
    file: &str,
    port_ix: &HashMap<String, usize>,
    ports: &[Option<DpdkPortPlan>],
    tool_ports: &[PortId],
) -> Result<QueueMap, ConfigError> {
    let workers = &cfg.dataplane.workers;
    let mut map: QueueMap = vec![Vec::new(); workers.len()];
    let mut owner: HashMap<(usize, u16), usize> = HashMap::new();
    let listed = workers.iter().any(|w| w.queues.is_some());
    for (w, wc) in workers.iter().enumerate() {
        for (k, q) in wc.queues.iter().flatten().enumerate() {
            let field = format!("dataplane.workers[{w}].queues[{k}]");
            let err = |m: String| Pos::of(q, field.clone()).error(file, m);
            let Some((name, num)) = q.value.rsplit_once(':') else {
                return Err(err(format!("`{}` is not `port:queue` (e.g. vm1:0)", q.value)));
            };
            let Some(&p) = port_ix.get(name) else {
                return Err(err(format!("unknown port `{name}`")));
            };
            let Some(plan) = &ports[p] else {
                return Err(err(format!("port `{name}` is not a dpdk port; only dpdk ports have queues to map")));
            };
            if tool_ports.contains(&(p as PortId)) {
                return Err(err(format!("port `{name}` is the tool port of a sink; no worker polls it")));
            }
            let qn: u16 = num.parse().map_err(|_| err(format!("queue `{num}` is not a number")))?;
            if qn >= plan.rx_queues {
                return Err(err(format!(
                    "port `{name}` has {} rx queues (0..={}); there is no queue {qn}",
                    plan.rx_queues,
                    plan.rx_queues - 1
                )));
            }
            if let Some(prev) = owner.insert((p, qn), w) {
                return Err(err(format!(
                    "queue {name}:{qn} is already polled by worker {prev}; a queue has one worker"
                )));
            }
            map[w].push((p as PortId, qn));
        }
    }
    for (p, plan) in ports.iter().enumerate() {
        let Some(plan) = plan else { continue };
        if tool_ports.contains(&(p as PortId)) {
            continue;
        }
        let pc = &cfg.ports[p];
        for q in 0..plan.rx_queues {
            if listed {
                if !owner.contains_key(&(p, q)) {
                    let pos = pc
                        .rx_queues
                        .as_ref()
                        .map(|r| Pos::of(r, format!("ports[{p}].rx_queues")))
                        .unwrap_or_else(|| Pos::of(&pc.name, format!("ports[{p}].name")));
                    return Err(pos.error(
                        file,
                        format!("rx queue {q} of dpdk port `{}` is polled by no worker: list `{}:{q}` in a worker's `queues`", pc.name.value, pc.name.value),
                    ));
                }
            } else if (q as usize) < map.len() {
                map[q as usize].push((p as PortId, q));
            } else {
                let pos = pc
                    .rx_queues
                    .as_ref()
                    .map(|r| Pos::of(r, format!("ports[{p}].rx_queues")))
                    .unwrap_or_else(|| at_kind(pc, p));
                return Err(pos.error(
                    file,
                    format!(
                        "{} rx queues but {} workers: queue q goes to worker q unless workers list their `queues`",
                        plan.rx_queues,
                        map.len()
                    ),
                ));
            }
        }
    }
    Ok(map)
}

/// Compiles the `dpdk:` section (defaults when absent but DPDK ports exist).
/// `None` when there are no DPDK ports.
pub(crate) fn compile_section(
    cfg: &Config,
    file: &str,
    ports: &[Option<DpdkPortPlan>],
    workers: usize,
    sinks: usize,
) -> Result<Option<DpdkPlan>, ConfigError> {
    let section = cfg.dpdk.as_ref();
    if let Some(s) = section {
        if !cfg!(feature = "dpdk") {
            return Err(Pos::of(s, "dpdk").error(file, NO_DPDK));
        }
    }
    if ports.iter().all(Option::is_none) {
        if let Some(s) = section {
            log::warn!("{file}:{}: the dpdk section is unused: no port has `type: dpdk`", s.referenced.line());
        }
        return Ok(None);
    }
    let d = section.map(|s| &s.value);
    let file_prefix = d.and_then(|d| d.file_prefix.as_ref());
    if let Some(fp) = file_prefix {
        if fp.value.is_empty() || !fp.value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(Pos::of(fp, "dpdk.file_prefix")
                .error(file, "must be letters, digits, `-`, `_` or `.` (it names files and directories)"));
        }
    }
    let memory_mb = d.and_then(|d| d.memory_mb.as_ref());
    if let Some(m) = memory_mb {
        if m.value < 64 {
            return Err(Pos::of(m, "dpdk.memory_mb").error(file, "must be at least 64"));
        }
    }
    let mbuf_cache = d.and_then(|d| d.mbuf_cache.as_ref());
    if let Some(c) = mbuf_cache {
        if c.value > MAX_CACHE {
            return Err(
                Pos::of(c, "dpdk.mbuf_cache").error(file, format!("must be at most {MAX_CACHE} (DPDK's limit)"))
            );
        }
    }
    let cache = mbuf_cache.map_or(DEFAULT_CACHE, |c| c.value);
    let mbufs = d.and_then(|d| d.mbufs.as_ref());
    // Rings full of mbufs, a cache per lcore (workers, sink threads, control; DPDK lets a cache hold
    // 1.5 times its size), and a burst per worker in flight: receiving needs all of them at once.
    let rings: u64 = ports
        .iter()
        .flatten()
        .map(|p| {
            u64::from(p.rx_queues) * u64::from(p.rx_descriptors) + u64::from(p.tx_queues) * u64::from(p.tx_descriptors)
        })
        .sum();
    let reserved =
        rings + (workers + sinks + 1) as u64 * u64::from(cache) * 3 / 2 + workers as u64 * 2 * dataplane::BURST as u64;
    let count = mbufs.map_or(DEFAULT_MBUFS, |m| m.value);
    if u64::from(count) <= reserved {
        let msg = format!("{count} mbufs cannot fill the rings and caches, which hold up to {reserved}: raise dpdk.mbufs or lower descriptors");
        return Err(match mbufs {
            Some(m) => Pos::of(m, "dpdk.mbufs").error(file, msg),
            None => match section {
                Some(s) => Pos::of(s, "dpdk").error(file, msg),
                None => ConfigError { file: file.into(), line: 0, column: 0, field: "dpdk.mbufs".into(), message: msg },
            },
        });
    }
    let max_mtu = ports.iter().flatten().filter_map(|p| p.mtu).max().map_or(0, u32::from);
    let data_room = DEFAULT_DATA_ROOM.max(max_mtu + L2_OVERHEAD) as u16;
    Ok(Some(DpdkPlan {
        eal_args: d.map(|d| d.eal_args.iter().map(|a| a.value.clone()).collect()).unwrap_or_default(),
        file_prefix: file_prefix.map_or_else(|| "flowsteer".to_string(), |f| f.value.clone()),
        memory_mb: memory_mb.map_or(512, |m| m.value),
        no_huge: d.is_some_and(|d| d.no_huge),
        in_memory: d.is_some_and(|d| d.in_memory),
        mbufs: count,
        mbuf_cache: cache,
        data_room,
        reserved: reserved as u32,
    }))
}

#[cfg(feature = "dpdk")]
pub use running::Dpdk;

#[cfg(feature = "dpdk")]
mod running {
    use crate::compile::Plan;
    use crate::runtime::RuntimeError;
    use dataplane::packet::{PortId, ShareLimit};
    use dataplane::port::dpdk::dpdk::{DeviceConfig, DeviceSpec, Eal, EalConfig, EthDev, Mempool};
    use dataplane::port::dpdk::DpdkPort;
    use dataplane::port::Port;
    use std::sync::Arc;

    /// The EAL, the mbuf pool and the started devices of a running dataplane.
    ///
    /// Dropped after the workers and sinks are gone: devices are stopped and
    /// closed (their rings give their mbufs back), then the pool is freed if
    /// every mbuf is back (logged either way), then the EAL is cleaned up.
    pub struct Dpdk {
        devices: Vec<Option<Arc<EthDev>>>,
        pool: Arc<Mempool>,
        share: Arc<ShareLimit>,
        _eal: Arc<Eal>,
    }

    fn port_err(name: &str, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Port { port: name.to_string(), message: e.to_string() }
    }

    impl Dpdk {
        /// Initialises the EAL with every DPDK port's device, creates the
        /// pool and starts the devices. `None` when the plan has no DPDK ports.
        pub fn start(plan: &Plan) -> Result<Option<Dpdk>, RuntimeError> {
            let Some(d) = &plan.dpdk else { return Ok(None) };
            let mut cfg = EalConfig {
                file_prefix: d.file_prefix.clone(),
                memory_mb: d.memory_mb,
                no_huge: d.no_huge,
                in_memory: d.in_memory,
                extra: d.eal_args.clone(),
                ..EalConfig::default()
            };
            for p in plan.ports.iter().filter_map(|p| p.dpdk.as_ref()) {
                if p.pci {
                    cfg.pci.push(p.device.clone());
                } else {
                    cfg.vdevs.push(p.device.clone());
                }
            }
            // Start-up phases are logged with their durations: after a crash, the
            // restart's outage on vhost-user and memif ports is mostly this (docs/RELIABILITY.md).
            let t = std::time::Instant::now();
            let eal = Eal::init(&cfg).map_err(|e| RuntimeError::Usage(format!("dpdk: {e}")))?;
            log::info!("dpdk: EAL initialised in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
            let t = std::time::Instant::now();
            let pool = Mempool::new(&eal, "flowsteer", d.mbufs, d.mbuf_cache, d.data_room)
                .map_err(|e| RuntimeError::Usage(format!("dpdk: {e}")))?;
            log::info!("dpdk: mempool of {} mbufs created in {:.1} ms", d.mbufs, t.elapsed().as_secs_f64() * 1e3);
            let t = std::time::Instant::now();
            let mut devices = Vec::new();
            for p in &plan.ports {
                let Some(dp) = &p.dpdk else {
                    devices.push(None);
                    continue;
                };
                let name = DeviceSpec::parse(&dp.device).map_err(|e| port_err(&p.name, e))?;
                let dc = DeviceConfig {
                    rx_queues: dp.rx_queues,
                    tx_queues: dp.tx_queues,
                    rx_descriptors: dp.rx_descriptors,
                    tx_descriptors: dp.tx_descriptors,
                    mtu: dp.mtu,
                    promiscuous: p.promiscuous,
                };
                devices.push(Some(EthDev::open(&eal, &pool, name.name(), &dc).map_err(|e| port_err(&p.name, e))?));
            }
            log::info!("dpdk: ports started in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
            let share = ShareLimit::new(d.share_limit(plan.copy_buffers));
            log::info!(
                "dpdk: {} mbufs of {} bytes, {} kept for rings and caches, up to {} refcount clones for copies; workers register as EAL threads",
                d.mbufs,
                d.data_room,
                d.reserved,
                share.max()
            );
            Ok(Some(Dpdk { devices, pool, share, _eal: eal }))
        }

        /// The bound on copies held as mbuf clones.
        pub fn share_limit(&self) -> &Arc<ShareLimit> {
            &self.share
        }

        /// The instances of DPDK port `id`: one per worker polling it, in
        /// worker order (each with that worker's rx queues and a tx queue of
        /// its own), or for a tool port one instance with tx queue 0.
        pub fn instances(&self, plan: &Plan, id: PortId) -> Result<Vec<Box<dyn Port>>, RuntimeError> {
            let name = &plan.ports[id as usize].name;
            let Some(Some(dev)) = self.devices.get(id as usize) else {
                return Err(port_err(name, "not a dpdk port"));
            };
            let mut out: Vec<Box<dyn Port>> = Vec::new();
            for w in plan.workers.iter().filter(|w| w.ports.contains(&id)) {
                let rx: Vec<u16> = w.queues.iter().filter(|(p, _)| *p == id).map(|&(_, q)| q).collect();
                let tx = out.len() as u16;
                let port = DpdkPort::new(name, id, dev, &rx, tx, Arc::clone(&self.pool), tx == 0)
                    .map_err(|e| port_err(name, e))?;
                out.push(Box::new(port));
            }
            if out.is_empty() {
                out.push(Box::new(
                    DpdkPort::new(name, id, dev, &[], 0, Arc::clone(&self.pool), true)
                        .map_err(|e| port_err(name, e))?,
                ));
            }
            Ok(out)
        }
    }

    impl Drop for Dpdk {
        fn drop(&mut self) {
            // Stop and close every device; their rings hand their mbufs back.
            self.devices.clear();
            let (free, all) = (self.pool.available(), self.pool.capacity());
            if free == all {
                log::info!(
                    "dpdk: ports stopped and closed; mempool full again ({free} of {all} mbufs); EAL cleaned up"
                );
            } else {
                log::error!("dpdk: {} of {all} mbufs not returned at shutdown (leak)", all - free);
            }
        }
    }
}
