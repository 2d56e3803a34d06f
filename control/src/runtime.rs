//! Starting, running and stopping the dataplane described by a [`Plan`].
//!
//! `run` puts one pinned thread per worker on its core and keeps the control
//! thread for the rate summary; `replay` runs a single worker in the calling
//! thread until the input capture is exhausted. Both stop the same way:
//! workers drain and flush, then sink threads write what is queued, then the
//! final counters are read.

use crate::compile::{Plan, PortPlan, Remote, SinkPlan, SinkTarget};
use crate::config::{FsyncCfg, PortKind};
use crate::report::Snapshot;
use crate::rules::RuleBook;
use chains::sink::erspan::{ErspanSink, ErspanVersion};
use chains::sink::gre::GreSink;
use chains::sink::pcapng::{Fsync, PcapngOptions, PcapngSink};
use chains::sink::port::PortSink;
use chains::sink::remote::RemoteCfg;
use chains::sink::vxlan::VxlanSink;
use chains::sink::{Names, Sink, SinkError, SinkQueue, SinkThread};
use chains::stage::StageSpec;
use chains::{ChainSet, ChainStats, OnFailure};
use dataplane::bypass::Bypass;
use dataplane::handover::Handover;
use dataplane::packet::{Pool, PortId, ShareLimit};
use dataplane::port::af_packet::{AfPacketConfig, AfPacketPort};
use dataplane::port::pcap::PcapPort;
use dataplane::port::Port;
use dataplane::publish::RuleTable;
use dataplane::stats::{PortCounters, WorkerStats};
use dataplane::watchdog::{Watchdog, WatchdogState};
use dataplane::worker::{Worker, WorkerConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest frame a port buffer or a copy buffer holds (jumbo frames).
pub const MAX_FRAME: usize = 9216;
/// Receive buffers per capture-file port.
const PCAP_RX_BUFFERS: usize = 1024;
/// Receive buffers per Linux-interface port (frames wait in the kernel's ring, not here).
const AF_PACKET_RX_BUFFERS: usize = 1024;
/// Buffers a tool-port sink builds VLAN-tagged copies in.
const TOOL_PORT_BUFFERS: usize = 256;

/// Why the dataplane could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A port could not be opened.
    #[error("port `{port}`: {message}")]
    Port {
        /// The port's name.
        port: String,
        /// What went wrong.
        message: String,
    },
    /// A sink could not be opened.
    #[error("sink `{sink}`: {message}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        message: String,
    },
    /// A worker could not be built or started.
    #[error("worker {worker}: {message}")]
    Worker {
        /// Worker index.
        worker: usize,
        /// What went wrong.
        message: String,
    },
    /// A command-line argument does not fit the configuration.
    #[error("{0}")]
    Usage(String),
    /// The control API could not start.
    #[error("{0}")]
    Control(String),
}

/// Everything shared between the running workers, the sinks and control.
#[derive(Clone)]
pub struct Shared {
    /// Port and rule names.
    pub names: Arc<Names>,
    /// Published rules.
    pub table: Arc<RuleTable>,
    /// Each worker's counters.
    pub workers: Vec<Arc<WorkerStats>>,
    /// Each worker's chain counters, by chain id.
    pub chains: Vec<Vec<Arc<ChainStats>>>,
    /// Sink queues, by sink index.
    pub sinks: Vec<Arc<SinkQueue>>,
    /// Chain names, by chain id.
    pub chain_names: Vec<String>,
    /// Stage kinds per chain.
    pub stage_kinds: Vec<Vec<&'static str>>,
    /// The copy-buffer pool.
    pub copy_pool: Arc<Pool>,
    /// Counters of the tool ports, which sinks own instead of workers.
    pub tool_ports: Vec<(PortId, Arc<PortCounters>)>,
    /// The bypass switch every worker obeys.
    pub bypass: Arc<Bypass>,
    /// The running rules and their counter slots; every rule change goes through it.
    pub book: Arc<RuleBook>,
    /// When the dataplane started (monitoring shares are of the time since).
    pub started: Instant,
    /// The monitoring budget every worker keeps to, if any.
    pub monitor_budget: Option<f64>,
    /// The worker watchdog's view of every worker, when it runs (`run` only).
    pub watchdog: Option<Arc<WatchdogState>>,
    /// The hand-over window of the guard's kernel bypass (see [`crate::heartbeat`]).
    pub handover: Arc<Handover>,
}

impl Shared {
    /// Reads every counter now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::take(self)
    }
}

fn open_port(p: &PortPlan, id: PortId, rx: Option<&Path>, tx: Option<&Path>) -> Result<Box<dyn Port>, RuntimeError> {
    match p.kind {
        PortKind::AfPacket => {
            let iface = p.interface.as_deref().unwrap_or_default();
            let mut cfg = AfPacketConfig::new(iface);
            cfg.promiscuous = p.promiscuous;
            cfg.qdisc_bypass = p.qdisc_bypass;
            // One fanout group per port and process (group ids are per interface, system-wide).
            cfg.fanout_group = p.fanout.then(|| ((std::process::id() as u16).wrapping_mul(31)).wrapping_add(id));
            let pool = Pool::new(AF_PACKET_RX_BUFFERS, MAX_FRAME);
            let port = AfPacketPort::open(&p.name, id, &cfg, pool)
                .map_err(|e| RuntimeError::Port { port: p.name.clone(), message: e.to_string() })?;
            Ok(Box::new(port))
        }
        PortKind::Pcap => {
            let pool = Pool::new(PCAP_RX_BUFFERS, MAX_FRAME);
            let port = PcapPort::open(&p.name, id, rx, tx, pool)
                .map_err(|e| RuntimeError::Port { port: p.name.clone(), message: e.to_string() })?;
            Ok(Box::new(port))
        }
        // Opened per worker with the EAL (crate::dpdk::Dpdk::instances).
        PortKind::Dpdk => {
            Err(RuntimeError::Port { port: p.name.clone(), message: "dpdk ports are opened with the EAL".into() })
        }
    }
}

/// Each sink's queue and the sink itself, by sink index, and the counters
/// of the tool ports the sinks own.
type OpenSinks = (Vec<Arc<SinkQueue>>, Vec<Box<dyn Sink>>, Vec<(PortId, Arc<PortCounters>)>);

/// Opens every sink; `port` sinks take their tool port out of `slots`.
/// With `strict`, a sink that cannot be opened is an error; otherwise the
/// dataplane starts without it (fail-open) and the sink thread keeps trying.
fn open_sinks(plan: &Plan, slots: &mut [Option<Box<dyn Port>>], strict: bool) -> Result<OpenSinks, RuntimeError> {
    let mut queues = Vec::new();
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let mut tool_counters = Vec::new();
    for s in &plan.sinks {
        let queue = Arc::new(SinkQueue::new(&s.name, plan.sink_queue));
        let sink: Box<dyn Sink> = match &s.target {
            SinkTarget::Port { port, vlan } => {
                let p = slots.get_mut(*port as usize).and_then(Option::take).ok_or_else(|| RuntimeError::Sink {
                    sink: s.name.clone(),
                    message: format!("tool port {port} is not available"),
                })?;
                let counters = Arc::new(PortCounters::default());
                tool_counters.push((*port, Arc::clone(&counters)));
                Box::new(
                    PortSink::new(&s.name, p, *vlan, Pool::new(TOOL_PORT_BUFFERS, MAX_FRAME)).with_counters(counters),
                )
            }
            target => {
                let mut open = reopener(s.name.clone(), target.clone());
                match open() {
                    Ok(sink) => sink,
                    Err(e) => {
                        let why = match &e {
                            SinkError::Io { source, .. } => source.to_string(),
                            other => other.to_string(),
                        };
                        let err = RuntimeError::Sink {
                            sink: s.name.clone(),
                            message: format!("cannot open {}: {why}", describe(target)),
                        };
                        if strict {
                            return Err(err);
                        }
                        log::error!("{err}; starting without it: its copies are lost until it opens");
                        queue.start_down();
                        Box::new(Deferred { name: s.name.clone(), open, inner: None })
                    }
                }
            }
        };
        queues.push(queue);
        sinks.push(sink);
    }
    Ok((queues, sinks, tool_counters))
}

/// Where a sink writes, for error messages.
fn describe(t: &SinkTarget) -> String {
    let from = |r: &Remote| r.source.map(|s| format!(" from {s}")).unwrap_or_default();
    match t {
        SinkTarget::Pcapng { path, .. } => path.display().to_string(),
        SinkTarget::Port { port, .. } => format!("tool port {port}"),
        SinkTarget::Erspan { remote, .. } | SinkTarget::Gre { remote } => {
            format!("{}{}", remote.destination, from(remote))
        }
        SinkTarget::Vxlan { remote, dst_port, .. } => format!("{}:{dst_port}{}", remote.destination, from(remote)),
    }
}

/// A sink that could not be opened at start (directory not writable yet,
/// no route to the analyser): the dataplane runs anyway (fail-open), the sink
/// thread counts its copies as lost and retries the open with backoff.
struct Deferred {
    name: String,
    open: Box<dyn FnMut() -> Result<Box<dyn Sink>, SinkError> + Send>,
    inner: Option<Box<dyn Sink>>,
}

impl Sink for Deferred {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, rec: &chains::sink::CopyRecord, names: &Names) -> Result<(), SinkError> {
        if self.inner.is_none() {
            self.inner = Some((self.open)()?);
            log::info!("sink {}: opened", self.name);
        }
        match &mut self.inner {
            Some(s) => s.write(rec, names),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        match &mut self.inner {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }
}

/// Opens a file or remote sink again (for [`Deferred`]).
fn reopener(name: String, target: SinkTarget) -> Box<dyn FnMut() -> Result<Box<dyn Sink>, SinkError> + Send> {
    Box::new(move || -> Result<Box<dyn Sink>, SinkError> {
        Ok(match &target {
            SinkTarget::Pcapng { path, rotate_bytes, rotate_every, keep, fsync } => Box::new(PcapngSink::with_options(
                &name,
                path,
                PcapngOptions {
                    rotate_bytes: *rotate_bytes,
                    rotate_every: *rotate_every,
                    keep: *keep,
                    fsync: match fsync {
                        FsyncCfg::Never => Fsync::Never,
                        FsyncCfg::OnRotate => Fsync::OnRotate,
                        FsyncCfg::EveryFlush => Fsync::EveryFlush,
                    },
                },
            )?),
            SinkTarget::Erspan { remote, erspan_type, session } => Box::new(ErspanSink::new(
                &name,
                remote_cfg(remote),
                if *erspan_type == 3 { ErspanVersion::III } else { ErspanVersion::II },
                *session,
            )?),
            SinkTarget::Vxlan { remote, vni, dst_port } => {
                Box::new(VxlanSink::new(&name, remote_cfg(remote), *vni, *dst_port)?)
            }
            SinkTarget::Gre { remote } => Box::new(GreSink::new(&name, remote_cfg(remote))?),
            SinkTarget::Port { .. } => {
                return Err(SinkError::Format {
                    sink: name.clone(),
                    message: "a tool port is opened with the dataplane".into(),
                })
            }
        })
    })
}

fn remote_cfg(r: &Remote) -> RemoteCfg {
    RemoteCfg { destination: r.destination, source: r.source }
}

/// A running dataplane.
pub struct Running {
    /// Counters and names.
    pub shared: Shared,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Worker<ChainSet>>>,
    sink_threads: Vec<SinkThread>,
    watchdog: Option<Watchdog>,
}

/// Opens ports and sinks and starts the workers.
/// Opens sinks and builds the workers; with `spawn_threads` each worker gets
/// its pinned thread, otherwise they are returned for the caller to run.
/// `strict_sinks`: a sink that cannot be opened is an error (else it is retried).
fn start(
    plan: &Plan,
    ports: Vec<Box<dyn Port>>,
    mut extra: Vec<Box<dyn Port>>,
    spawn_threads: bool,
    strict_sinks: bool,
    share: Option<&Arc<ShareLimit>>,
) -> Result<(Running, Vec<Worker<ChainSet>>), RuntimeError> {
    let names = Arc::new(Names {
        ports: plan.ports.iter().map(|p| p.name.clone()).collect(),
        rules: plan.rules.rules().iter().map(|r| r.name.clone()).collect::<Vec<_>>().into(),
        chains: plan.chains.iter().map(|c| c.name.clone()).collect(),
    });
    // Counters first: sized for every rule counter slot, they take a moment to build, which
    // must not pass between the sinks starting (and their retry clocks) and the workers.
    let counter_slots = plan.control.counter_slots().max(plan.rules.len());
    let worker_stats: Vec<Arc<WorkerStats>> =
        plan.workers.iter().map(|_| Arc::new(WorkerStats::new(plan.ports.len(), counter_slots))).collect();
    let mut slots: Vec<Option<Box<dyn Port>>> = ports.into_iter().map(Some).collect();
    let (queues, sinks, tool_ports) = open_sinks(plan, &mut slots, strict_sinks)?;
    let mut sink_threads = Vec::new();
    for (q, s) in queues.iter().zip(sinks) {
        sink_threads.push(
            SinkThread::spawn(s, Arc::clone(q), Arc::clone(&names))
                .map_err(|e| RuntimeError::Sink { sink: q.name().to_string(), message: e.to_string() })?,
        );
    }
    let t = Instant::now();
    let copy_pool = Pool::new(plan.copy_buffers, MAX_FRAME);
    // A start-up phase: part of every restart's outage (docs/RELIABILITY.md).
    log::info!("copy pool of {} buffers created in {:.1} ms", plan.copy_buffers, t.elapsed().as_secs_f64() * 1e3);
    let table = RuleTable::new(Arc::clone(&plan.rules));
    let bypass = Arc::new(Bypass::new());
    // With a guard configured, nothing is forwarded until the heartbeat knows whether a bypass is in place.
    let handover = Arc::new(Handover::new());
    if plan.guard.is_some() {
        handover.close();
    }
    let guarded = crate::guard::guarded_ports(plan);
    let mut workers = Vec::new();
    let mut chain_stats = Vec::new();
    for (i, wp) in plan.workers.iter().enumerate() {
        let mine: Vec<Box<dyn Port>> = wp
            .ports
            .iter()
            .filter_map(|&p| {
                // The port itself, or for a fanned-out port the next worker's own instance of it.
                slots.get_mut(p as usize).and_then(Option::take).or_else(|| {
                    let k = extra.iter().position(|x| x.id() == p)?;
                    // In order: a DPDK port's instances are listed in worker order.
                    Some(extra.remove(k))
                })
            })
            .collect();
        let stats = Arc::clone(&worker_stats[i]);
        let mut chains = ChainSet::new(&plan.chains, &queues, &copy_pool, i, plan.workers.len());
        if let Some(limit) = share {
            chains = chains.with_share_limit(limit);
        }
        chain_stats.push(chains.stats());
        let cfg = WorkerConfig { id: i, ..plan.worker.clone() };
        let w = Worker::new(cfg, mine, &plan.forwarding, Arc::clone(&table), chains, Arc::clone(&stats))
            .map_err(|e| RuntimeError::Worker { worker: i, message: e.to_string() })?
            .with_bypass(Arc::clone(&bypass))
            .with_handover(Arc::clone(&handover), &guarded);
        workers.push(w);
    }
    let book = Arc::new(RuleBook::new(
        Arc::clone(&table),
        worker_stats.clone(),
        Arc::clone(&names),
        plan.control.max_rules,
        counter_slots,
    ));
    let shared = Shared {
        names,
        table,
        workers: worker_stats,
        chains: chain_stats,
        sinks: queues,
        chain_names: plan.chains.iter().map(|c| c.name.clone()).collect(),
        stage_kinds: plan.chains.iter().map(|c| c.stages.iter().map(StageSpec::kind).collect()).collect(),
        copy_pool,
        tool_ports,
        bypass,
        book,
        started: Instant::now(),
        monitor_budget: plan.worker.monitor_budget,
        watchdog: None,
        handover,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut running = Running { shared, stop: Arc::clone(&stop), threads: Vec::new(), sink_threads, watchdog: None };
    if !spawn_threads {
        return Ok((running, workers));
    }
    if let Some(cfg) = plan.watchdog {
        let mut watched = Vec::with_capacity(workers.len());
        let mut forwarders = Vec::with_capacity(workers.len());
        for (i, w) in workers.into_iter().enumerate() {
            let closed = plan.chains.iter().map(|c| c.on_failure == OnFailure::FailClosed).collect();
            let (w, f) = w
                .watched(&plan.forwarding, closed)
                .map_err(|e| RuntimeError::Worker { worker: i, message: e.to_string() })?;
            watched.push(w);
            forwarders.push(f);
        }
        workers = watched;
        let (dog, state) = Watchdog::spawn(cfg, forwarders)
            .map_err(|e| RuntimeError::Usage(format!("cannot start the watchdog: {e}")))?;
        log::info!(
            "watchdog: a worker without heartbeat for {} ms has its ports forwarded without copies until it recovers",
            cfg.timeout.as_millis()
        );
        running.shared.watchdog = Some(state);
        running.watchdog = Some(dog);
    }
    for (i, (mut w, wp)) in workers.into_iter().zip(&plan.workers).enumerate() {
        let stop = Arc::clone(&stop);
        let core = wp.core;
        let h = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                if let Some(c) = core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                        log::warn!("worker {i}: could not pin to core {c}; running unpinned");
                    }
                }
                log::info!(
                    "worker {i}: polling {} port(s) on core {}",
                    w.port_count(),
                    core.map_or("any".into(), |c| c.to_string())
                );
                w.run(&stop);
                w
            })
            .map_err(|e| RuntimeError::Worker { worker: i, message: e.to_string() })?;
        running.threads.push(h);
    }
    Ok((running, Vec::new()))
}

impl Running {
    /// Stops the workers (they drain and flush), then the sinks (they write
    /// what is queued). Returns the final counters.
    pub fn stop(mut self) -> Snapshot {
        // The forwarders first, so every port is back with its worker to drain.
        if let Some(dog) = self.watchdog.take() {
            dog.stop();
        }
        self.stop.store(true, Ordering::Relaxed);
        for h in self.threads.drain(..) {
            if h.join().is_err() {
                log::error!("a worker thread panicked");
            }
        }
        for s in self.sink_threads.drain(..) {
            s.stop();
        }
        self.shared.snapshot()
    }
}

/// Runs the dataplane until `stop` is set (SIGINT/SIGTERM), printing a rate
/// summary every `plan.stats_interval`. Returns the final counters.
pub fn run(plan: &Plan, stop: &AtomicBool) -> Result<Snapshot, RuntimeError> {
    run_with(plan, stop, |_| Ok(()))
}

/// [`run`], with `attach` called once the workers run; what it returns (the
/// control API, the reload watcher) lives until the dataplane stops, and is
/// dropped before the workers are stopped.
pub fn run_with<T>(
    plan: &Plan,
    stop: &AtomicBool,
    attach: impl FnOnce(&Shared) -> Result<T, RuntimeError>,
) -> Result<Snapshot, RuntimeError> {
    let mut heartbeat = plan.guard.as_ref().map(crate::heartbeat::Heartbeat::connect);
    let mut ports = Vec::new();
    let mut extra = Vec::new();
    // Dropped after `running` (declared first): devices close once workers and sinks are gone.
    #[cfg(feature = "dpdk")]
    let dpdk = crate::dpdk::Dpdk::start(plan)?;
    for (i, p) in plan.ports.iter().enumerate() {
        #[cfg(feature = "dpdk")]
        if let (Some(d), Some(_)) = (&dpdk, &p.dpdk) {
            // The first instance takes the port's slot, the other workers' follow in `extra`.
            let mut inst = d.instances(plan, i as PortId)?.into_iter();
            ports.extend(inst.next());
            extra.extend(inst);
            continue;
        }
        ports.push(open_port(p, i as PortId, p.rx.as_deref(), p.tx.as_deref())?);
        if p.fanout {
            // Every further worker polls an instance of its own in the same fanout group.
            for _ in 1..plan.workers.len() {
                extra.push(open_port(p, i as PortId, None, None)?);
            }
        }
    }
    #[cfg(feature = "dpdk")]
    let share = dpdk.as_ref().map(|d| d.share_limit());
    #[cfg(not(feature = "dpdk"))]
    let share = None;
    let (running, _) = start(plan, ports, extra, true, false, share)?;
    let attached = match attach(&running.shared) {
        Ok(a) => a,
        Err(e) => {
            running.stop();
            return Err(e);
        }
    };
    if let Some(hb) = &mut heartbeat {
        let free = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .find(|c| !plan.workers.iter().any(|w| w.core == Some(*c)));
        if let Err(e) = hb.start(Arc::clone(&running.shared.handover), free) {
            log::error!("guard: cannot start the heartbeat thread: {e}; the guard will bypass");
        }
    }
    let mut last = running.shared.snapshot();
    let mut last_t = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(i) = running.threads.iter().position(|h| h.is_finished()) {
            // A worker only returns when told to stop: this one died and its ports stopped forwarding.
            // Exit with an error so the service manager (and the guard's bypass) can take over.
            drop(attached);
            drop(heartbeat);
            let snap = running.stop();
            print!("{}", snap.report());
            return Err(RuntimeError::Worker {
                worker: i,
                message: "stopped unexpectedly (panicked); its ports no longer forward".into(),
            });
        }
        if let Some(iv) = plan.stats_interval {
            if last_t.elapsed() >= iv {
                let now = running.shared.snapshot();
                println!("{}", now.rate_line(&last, last_t.elapsed()));
                last = now;
                last_t = Instant::now();
            }
        }
    }
    drop(attached);
    // The guard's bypass takes over before the workers stop.
    drop(heartbeat);
    Ok(running.stop())
}

/// What `replay` should read and write.
#[derive(Debug, Clone)]
pub struct ReplayArgs {
    /// The capture to push through the rules.
    pub input: PathBuf,
    /// The port the capture enters by (default: the first linked port).
    pub in_port: Option<String>,
    /// Write every copy to this one pcapng file instead of the configured sinks.
    pub output: Option<PathBuf>,
    /// Write what the dataplane forwards out of the input port's peer.
    pub forwarded: Option<PathBuf>,
}

/// Pushes a capture through the rules and chains offline, in this thread.
pub fn replay(plan: &mut Plan, args: &ReplayArgs) -> Result<Snapshot, RuntimeError> {
    let in_id = match &args.in_port {
        Some(name) => plan
            .ports
            .iter()
            .position(|p| &p.name == name)
            .ok_or_else(|| RuntimeError::Usage(format!("--in-port `{name}` is not a port in the configuration")))?,
        None => (0..plan.ports.len())
            .find(|&p| plan.links.peer(p as PortId).is_some())
            .or(if plan.ports.is_empty() { None } else { Some(0) })
            .ok_or_else(|| RuntimeError::Usage("the configuration has no ports to replay into".into()))?,
    } as PortId;
    // Never write over the capture being read.
    let same = |p: &Path| match (std::fs::canonicalize(p), std::fs::canonicalize(&args.input)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    for (flag, p) in [("--output", &args.output), ("--forwarded", &args.forwarded)] {
        if p.as_deref().is_some_and(same) {
            return Err(RuntimeError::Usage(format!(
                "{flag} names the input capture {}; it would be overwritten",
                args.input.display()
            )));
        }
    }
    let out_id = plan.links.peer(in_id);
    if args.forwarded.is_some() && out_id.is_none() {
        return Err(RuntimeError::Usage(format!(
            "--forwarded: port `{}` is not linked, nothing is forwarded",
            plan.ports[in_id as usize].name
        )));
    }
    if let Some(out) = &args.output {
        // One file for every copy: each copy stage copies to it once.
        plan.sinks = vec![SinkPlan {
            name: "replay".into(),
            target: SinkTarget::Pcapng {
                path: out.clone(),
                rotate_bytes: None,
                rotate_every: None,
                keep: None,
                fsync: FsyncCfg::Never,
            },
        }];
        for c in &mut plan.chains {
            for s in &mut c.stages {
                if let StageSpec::Copy { to } = s {
                    *to = vec![0];
                }
            }
        }
    }
    // Offline, the input is always a backlog and the clock is not the capture's:
    // no budget or overload shedding, every matched packet runs its chain.
    plan.worker.monitor_budget = None;
    plan.worker.overload_bursts = None;
    // One worker owns every port, in this thread.
    plan.workers = vec![crate::compile::WorkerPlan {
        core: None,
        ports: (0..plan.ports.len() as PortId).collect(),
        queues: Vec::new(),
    }];
    let mut ports = Vec::new();
    for (i, p) in plan.ports.iter().enumerate() {
        let id = i as PortId;
        let rx = (id == in_id).then_some(args.input.as_path());
        // Tool ports keep their configured output: that is where their copies go (a DPDK device
        // is not opened offline: its copies are discarded). Every other port's output is discarded (written to /dev/null, so it counts as sent, not dropped).
        let discard = Path::new("/dev/null");
        let tx = if Some(id) == out_id {
            Some(args.forwarded.as_deref().unwrap_or(discard))
        } else if plan.tool_ports.contains(&id) && args.output.is_none() && p.kind != PortKind::Dpdk {
            p.tx.as_deref()
        } else {
            Some(discard)
        };
        // Offline: every port is a capture-file port, whatever its configured backend.
        let offline = PortPlan { kind: PortKind::Pcap, fanout: false, dpdk: None, ..p.clone() };
        ports.push(open_port(&offline, id, rx, tx)?);
    }
    let (running, mut workers) = start(plan, ports, Vec::new(), false, args.output.is_some(), None)?;
    let never = AtomicBool::new(false);
    for w in &mut workers {
        w.run_to_end(&never);
    }
    drop(workers);
    Ok(running.stop())
}
