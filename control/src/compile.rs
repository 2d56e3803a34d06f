//! Validated configuration in, compiled form out.
//!
//! [`compile`] checks everything that crosses fields (names that must exist,
//! names that must be unique, match fields that need each other, rules that
//! overlap) and produces a [`Plan`]: the dataplane's and the chains' own
//! structures, immutable, with no trace of YAML left.

use crate::config::{
    ActionCfg, Config, ConfigError, FsyncCfg, MalformedCfg, MatchCfg, OnFailureCfg, PortKind, Pos, RuleCfg, SamplePer,
    SinkCfg, SinkKind, StageCfg, StripCfg,
};
use crate::dpdk::{DpdkPlan, DpdkPortPlan};
use chains::stage::{StageSpec, StripLayer};
use chains::{ChainSpec, OnFailure};
use dataplane::classifier::{Action, Match, Rule, RuleError, RuleSet};
use dataplane::flow::proto;
use dataplane::forward::{BridgeConfig, Forwarding, Links};
use dataplane::packet::PortId;
use dataplane::watchdog::WatchdogConfig;
use dataplane::worker::{MalformedPolicy, WorkerConfig};
use serde_saphyr::Spanned;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A port to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    /// Name.
    pub name: String,
    /// Backend.
    pub kind: PortKind,
    /// Input capture (`pcap`).
    pub rx: Option<PathBuf>,
    /// Output capture (`pcap`).
    pub tx: Option<PathBuf>,
    /// Linux interface (`af_packet`).
    pub interface: Option<String>,
    /// Promiscuous mode (`af_packet`).
    pub promiscuous: bool,
    /// Bypass the qdisc on transmit (`af_packet`).
    pub qdisc_bypass: bool,
    /// Shared by every worker through PACKET_FANOUT (`af_packet`).
    pub fanout: bool,
    /// Device, queues and descriptors (`dpdk`).
    pub dpdk: Option<DpdkPortPlan>,
}

/// A MAC-learning bridge to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePlan {
    /// Name.
    pub name: String,
    /// Its ports.
    pub ports: Vec<PortId>,
    /// How long a learned MAC lives without traffic.
    pub ageing: Duration,
}

/// Where a remote sink sends its copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    /// The analyser's address.
    pub destination: IpAddr,
    /// Our address, or `None` for the one of the route to the destination.
    pub source: Option<IpAddr>,
}

/// What a sink writes to.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkTarget {
    /// A pcapng file, rotated or not.
    Pcapng {
        /// File, or file name pattern when rotating.
        path: PathBuf,
        /// Rotate at this size.
        rotate_bytes: Option<u64>,
        /// Rotate after this long.
        rotate_every: Option<Duration>,
        /// Files kept.
        keep: Option<usize>,
        /// fsync policy.
        fsync: FsyncCfg,
    },
    /// A tool port (not polled by any worker).
    Port {
        /// The port.
        port: PortId,
        /// VLAN pushed on the copies.
        vlan: Option<u16>,
    },
    /// ERSPAN over GRE.
    Erspan {
        /// Addresses.
        remote: Remote,
        /// 2 or 3.
        erspan_type: u8,
        /// Session id.
        session: u16,
    },
    /// VXLAN.
    Vxlan {
        /// Addresses.
        remote: Remote,
        /// VNI.
        vni: u32,
        /// UDP destination port.
        dst_port: u16,
    },
    /// GRE (transparent Ethernet bridging).
    Gre {
        /// Addresses.
        remote: Remote,
    },
}

/// A sink to open.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkPlan {
    /// Name.
    pub name: String,
    /// What it writes to.
    pub target: SinkTarget,
}

/// One worker thread: its core and its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPlan {
    /// Pinned core, if any.
    pub core: Option<usize>,
    /// Port ids it polls.
    pub ports: Vec<PortId>,
    /// The (port, rx queue) pairs of DPDK ports it polls.
    pub queues: Vec<(PortId, u16)>,
}

/// Everything needed to start the dataplane.
pub struct Plan {
    /// Ports, indexed by port id.
    pub ports: Vec<PortPlan>,
    /// Link pairs.
    pub links: Links,
    /// MAC-learning bridges.
    pub bridges: Vec<BridgePlan>,
    /// Links and bridges as the workers use them.
    pub forwarding: Forwarding,
    /// Sinks, indexed as the chains' `copy` stages refer to them.
    pub sinks: Vec<SinkPlan>,
    /// Ports owned by `port` sinks (tool ports): no worker polls them.
    pub tool_ports: Vec<PortId>,
    /// Chains, indexed by chain id.
    pub chains: Vec<ChainSpec>,
    /// The compiled rules.
    pub rules: Arc<RuleSet>,
    /// Workers and their ports.
    pub workers: Vec<WorkerPlan>,
    /// Settings shared by every worker (`id` is set per worker).
    pub worker: WorkerConfig,
    /// Buffers in the copy pool.
    pub copy_buffers: usize,
    /// Capacity of each sink's queue.
    pub sink_queue: usize,
    /// Interval of the running rate summary; `None` when off.
    pub stats_interval: Option<Duration>,
    /// The EAL and the mbuf pool, when there are DPDK ports.
    pub dpdk: Option<DpdkPlan>,
    /// Run-time control settings.
    pub control: ControlPlan,
    /// The worker watchdog's timing; `None` when off.
    pub watchdog: Option<WatchdogConfig>,
    /// The process guard's heartbeat and bypass settings (`guard:`).
    pub guard: Option<crate::guard::GuardSettings>,
}

/// Default path of the control API's Unix socket.
pub const DEFAULT_SOCKET: &str = "/run/flowsteer/flowsteer.sock";
/// Default of `control.max_rules`.
pub const DEFAULT_MAX_RULES: u32 = 65_536;
/// Largest `control.max_rules` (each worker keeps 2 x 16 bytes of counters per rule).
pub const MAX_MAX_RULES: u32 = 1 << 20;

/// How the running dataplane is controlled (`control:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlan {
    /// The control API's Unix socket.
    pub socket: PathBuf,
    /// Where the metrics-only TCP listener listens, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Reload the rules when the file changes.
    pub watch: bool,
    /// The most rules the running set may hold.
    pub max_rules: usize,
}

impl ControlPlan {
    /// Counter slots per worker: twice `max_rules`, so that replacing a full
    /// set by one of all-new names still finds a slot for every new rule
    /// while the old ones are counted until the workers leave them.
    pub fn counter_slots(&self) -> usize {
        self.max_rules * 2
    }
}

fn compile_control(c: &crate::config::ControlCfg, file: &str, rules: usize) -> Result<ControlPlan, ConfigError> {
    let metrics_listen = match &c.metrics_listen {
        None => None,
        Some(m) => {
            let t = m.value.trim();
            let addr = match t.parse::<u16>() {
                Ok(port) => Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
                Err(_) => t.parse::<std::net::SocketAddr>(),
            };
            Some(addr.map_err(|_| {
                Pos::of(m, "control.metrics_listen")
                    .error(file, format!("`{t}` is not addr:port or a port (want e.g. 127.0.0.1:9417 or [::1]:9417)"))
            })?)
        }
    };
    let max_rules = match &c.max_rules {
        None => DEFAULT_MAX_RULES,
        Some(m) if !(1..=MAX_MAX_RULES).contains(&m.value) => {
            return Err(Pos::of(m, "control.max_rules").error(file, format!("must be between 1 and {MAX_MAX_RULES}")))
        }
        Some(m) if (m.value as usize) < rules => {
            return Err(
                Pos::of(m, "control.max_rules").error(file, format!("is {} but the file has {rules} rules", m.value))
            )
        }
        Some(m) => m.value,
    };
    let socket = match &c.socket {
        Some(p) if p.value.as_os_str().is_empty() => {
            return Err(Pos::of(p, "control.socket").error(file, "must not be empty"))
        }
        Some(p) => p.value.clone(),
        None => PathBuf::from(DEFAULT_SOCKET),
    };
    Ok(ControlPlan { socket, metrics_listen, watch: c.watch.unwrap_or(true), max_rules: max_rules as usize })
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("ports", &self.ports)
            .field("links", &self.links)
            .field("sinks", &self.sinks)
            .field("chains", &self.chains)
            .field("rules", &self.rules.len())
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// Builds name → index maps, refusing duplicates.
fn index_names<'a>(
    file: &str,
    what: &str,
    items: impl Iterator<Item = (&'a Spanned<String>, String)>,
) -> Result<HashMap<String, usize>, ConfigError> {
    let mut map: HashMap<String, usize> = HashMap::new();
    for (i, (name, field)) in items.enumerate() {
        if name.value.is_empty() {
            return Err(Pos::of(name, field).error(file, format!("{what} name must not be empty")));
        }
        if map.insert(name.value.clone(), i).is_some() {
            return Err(Pos::of(name, field).error(file, format!("{what} `{}` is defined twice", name.value)));
        }
    }
    Ok(map)
}

fn lookup(
    map: &HashMap<String, usize>,
    name: &Spanned<String>,
    field: String,
    file: &str,
    what: &str,
) -> Result<usize, ConfigError> {
    map.get(&name.value).copied().ok_or_else(|| {
        let mut known: Vec<&str> = map.keys().map(String::as_str).collect();
        known.sort_unstable();
        let hint = if known.is_empty() {
            format!("no {what}s are defined")
        } else {
            format!("known {what}s: {}", known.join(", "))
        };
        Pos::of(name, field).error(file, format!("unknown {what} `{}` ({hint})", name.value))
    })
}

/// Checks a parsed configuration and compiles it. `file` names the file in errors.
pub fn compile(cfg: &Config, file: &str) -> Result<Plan, ConfigError> {
    let dp = &cfg.dataplane;
    // Dataplane settings.
    if !(1..=dataplane::BURST as u32).contains(&dp.burst.value) {
        return Err(
            Pos::of(&dp.burst, "dataplane.burst").error(file, format!("must be between 1 and {}", dataplane::BURST))
        );
    }
    for (v, f) in [
        (&dp.flow_cache, "dataplane.flow_cache"),
        (&dp.copy_buffers, "dataplane.copy_buffers"),
        (&dp.sink_queue, "dataplane.sink_queue"),
    ] {
        if v.value == 0 {
            return Err(Pos::of(v, f).error(file, "must be at least 1"));
        }
    }
    if !(dp.stats_interval.value >= 0.0 && dp.stats_interval.value.is_finite()) {
        return Err(Pos::of(&dp.stats_interval, "dataplane.stats_interval")
            .error(file, "must be 0 (off) or a number of seconds"));
    }
    let budget = dp.monitor_budget.value;
    if !(budget > 0.0 && budget <= 1.0) {
        return Err(Pos::of(&dp.monitor_budget, "dataplane.monitor_budget").error(
            file,
            format!("must be a share of the worker's time above 0 and at most 1 (1 = no cap), not {budget}"),
        ));
    }
    let wd = &dp.watchdog;
    if wd.timeout_ms.value == 0 {
        return Err(Pos::of(&wd.timeout_ms, "dataplane.watchdog.timeout_ms").error(file, "must be at least 1"));
    }
    if wd.check_ms.value == 0 || wd.check_ms.value > wd.timeout_ms.value {
        return Err(Pos::of(&wd.check_ms, "dataplane.watchdog.check_ms")
            .error(file, format!("must be at least 1 and at most timeout_ms ({})", wd.timeout_ms.value)));
    }
    if dp.workers.is_empty() {
        return Err(ConfigError {
            file: file.into(),
            line: 0,
            column: 0,
            field: "dataplane.workers".into(),
            message: "at least one worker is needed".into(),
        });
    }
    let cores = core_affinity::get_core_ids().map(|c| c.len()).unwrap_or(usize::MAX);
    for (i, w) in dp.workers.iter().enumerate() {
        if let Some(c) = &w.core {
            if c.value >= cores {
                return Err(Pos::of(c, format!("dataplane.workers[{i}].core")).error(
                    file,
                    format!("core {} does not exist (this machine has cores 0-{})", c.value, cores.saturating_sub(1)),
                ));
            }
            if dp.workers[..i].iter().any(|o| o.core.as_ref().map(|x| x.value) == Some(c.value)) {
                return Err(Pos::of(c, format!("dataplane.workers[{i}].core")).error(
                    file,
                    format!("core {} already has a worker; a busy-polling worker owns its core", c.value),
                ));
            }
        }
    }

    // Ports.
    let port_ix =
        index_names(file, "port", cfg.ports.iter().enumerate().map(|(i, p)| (&p.name, format!("ports[{i}].name"))))?;
    if cfg.ports.len() > PortId::MAX as usize {
        return Err(ConfigError {
            file: file.into(),
            line: 0,
            column: 0,
            field: "ports".into(),
            message: "too many ports".into(),
        });
    }
    let mut ports = Vec::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        let dpdk = crate::dpdk::compile_port(p, i, file, dp.workers.len())?;
        let only = |what: &str, present: bool| -> Result<(), ConfigError> {
            if present {
                Err(Pos::of(&p.kind, format!("ports[{i}].type"))
                    .error(file, format!("`{what}` does not apply to {} ports", p.kind.value)))
            } else {
                Ok(())
            }
        };
        match p.kind.value {
            PortKind::AfPacket => {
                only("rx", p.rx.is_some())?;
                only("tx", p.tx.is_some())?;
                if p.interface.is_none() {
                    return Err(Pos::of(&p.kind, format!("ports[{i}].type")).error(
                        file,
                        format!("af_packet port `{}` needs `interface` (a Linux interface name)", p.name.value),
                    ));
                }
            }
            PortKind::Pcap => {
                only("fanout", p.fanout.is_some())?;
                only("interface", p.interface.is_some())?;
                only("promiscuous", p.promiscuous.is_some())?;
                only("qdisc_bypass", p.qdisc_bypass.is_some())?;
                if p.rx.is_none() && p.tx.is_none() {
                    return Err(Pos::of(&p.kind, format!("ports[{i}].type")).error(
                        file,
                        format!(
                            "pcap port `{}` needs `rx` (a capture to read), `tx` (a capture to write), or both",
                            p.name.value
                        ),
                    ));
                }
            }
            // Checked by compile_port.
            PortKind::Dpdk => {}
        }
        ports.push(PortPlan {
            name: p.name.value.clone(),
            kind: p.kind.value,
            rx: p.rx.as_ref().map(|s| s.value.clone()),
            tx: p.tx.as_ref().map(|s| s.value.clone()),
            interface: p.interface.as_ref().map(|s| s.value.clone()),
            promiscuous: p.promiscuous.unwrap_or(true),
            qdisc_bypass: p.qdisc_bypass.unwrap_or(true),
            fanout: p.fanout.unwrap_or(false),
            dpdk,
        });
    }

    // Links.
    let mut pairs = Vec::new();
    let mut linked: HashMap<usize, usize> = HashMap::new();
    for (i, l) in cfg.links.iter().enumerate() {
        if l.value.len() != 2 {
            return Err(Pos::of(l, format!("links[{i}]"))
                .error(file, format!("a link joins exactly two ports, this one lists {}", l.value.len())));
        }
        let a = lookup(&port_ix, &l.value[0], format!("links[{i}][0]"), file, "port")?;
        let b = lookup(&port_ix, &l.value[1], format!("links[{i}][1]"), file, "port")?;
        if a == b {
            return Err(Pos::of(&l.value[1], format!("links[{i}][1]"))
                .error(file, format!("port `{}` cannot be linked to itself", l.value[0].value)));
        }
        for (j, p) in [(0, a), (1, b)] {
            if let Some(prev) = linked.insert(p, i) {
                return Err(Pos::of(&l.value[j], format!("links[{i}][{j}]")).error(
                    file,
                    format!("port `{}` is already in links[{prev}]; a port belongs to one link", l.value[j].value),
                ));
            }
        }
        pairs.push((a as PortId, b as PortId));
    }
    let links = Links::new(ports.len(), &pairs).map_err(|e| ConfigError {
        file: file.into(),
        line: 0,
        column: 0,
        field: "links".into(),
        message: e.to_string(),
    })?;

    // Bridges: each over ports of its own, none of them linked.
    let mut bridges = Vec::new();
    for (i, b) in cfg.bridges.iter().enumerate() {
        if b.ports.value.len() < 2 {
            return Err(
                Pos::of(&b.ports, format!("bridges[{i}].ports")).error(file, "a bridge joins at least two ports")
            );
        }
        let mut members = Vec::new();
        for (j, p) in b.ports.value.iter().enumerate() {
            let field = format!("bridges[{i}].ports[{j}]");
            let id = lookup(&port_ix, p, field.clone(), file, "port")?;
            if let Some(l) = linked.get(&id) {
                return Err(Pos::of(p, field)
                    .error(file, format!("port `{}` is in links[{l}]; a port is in one link or one bridge", p.value)));
            }
            if members.contains(&(id as PortId))
                || bridges.iter().any(|x: &BridgePlan| x.ports.contains(&(id as PortId)))
            {
                return Err(Pos::of(p, field).error(file, format!("port `{}` is already in a bridge", p.value)));
            }
            members.push(id as PortId);
        }
        let ageing = match &b.ageing_seconds {
            Some(a) if !(a.value > 0.0 && a.value.is_finite()) => {
                return Err(Pos::of(a, format!("bridges[{i}].ageing_seconds"))
                    .error(file, "must be a positive number of seconds"))
            }
            Some(a) => Duration::from_secs_f64(a.value),
            None => Duration::from_secs(300),
        };
        bridges.push(BridgePlan { name: b.name.value.clone(), ports: members, ageing });
    }
    for b in &bridges {
        for &p in &b.ports {
            linked.insert(p as usize, usize::MAX);
        }
    }
    let forwarding = Forwarding::new(
        links.clone(),
        bridges.iter().map(|b| BridgeConfig { ageing: b.ageing, ..BridgeConfig::new(b.ports.clone()) }).collect(),
    )
    .map_err(|e| ConfigError {
        file: file.into(),
        line: 0,
        column: 0,
        field: "bridges".into(),
        message: e.to_string(),
    })?;

    // Sinks.
    let sink_ix =
        index_names(file, "sink", cfg.sinks.iter().enumerate().map(|(i, s)| (&s.name, format!("sinks[{i}].name"))))?;
    let mut sinks = Vec::new();
    let mut tool_ports: Vec<PortId> = Vec::new();
    for (i, s) in cfg.sinks.iter().enumerate() {
        let target = compile_sink(s, i, file, &port_ix, &linked)?;
        if let SinkTarget::Port { port, .. } = target {
            if tool_ports.contains(&port) {
                let p = s
                    .port
                    .as_ref()
                    .map(|p| Pos::of(p, format!("sinks[{i}].port")))
                    .unwrap_or_else(|| Pos::of(&s.name, format!("sinks[{i}]")));
                return Err(p.error(file, "this port is already the tool port of another sink"));
            }
            tool_ports.push(port);
        }
        sinks.push(SinkPlan { name: s.name.value.clone(), target });
    }

    // Chains.
    let chain_ix =
        index_names(file, "chain", cfg.chains.iter().enumerate().map(|(i, c)| (&c.name, format!("chains[{i}].name"))))?;
    let mut chains = Vec::new();
    for (i, c) in cfg.chains.iter().enumerate() {
        if c.stages.is_empty() {
            return Err(Pos::of(&c.name, format!("chains[{i}].stages"))
                .error(file, format!("chain `{}` has no stages", c.name.value)));
        }
        let mut stages = Vec::new();
        for (j, st) in c.stages.iter().enumerate() {
            let field = format!("chains[{i}].stages[{j}]");
            if let Some(StageSpec::Copy { .. }) = stages.last() {
                return Err(Pos::of(st, &field).error(
                    file,
                    format!("`{}` after `copy` can never run: `copy` must be the last stage", stage_name(&st.value)),
                ));
            }
            stages.push(compile_stage(st, &field, file, &port_ix, &sink_ix)?);
        }
        if !matches!(stages.last(), Some(StageSpec::Copy { .. })) {
            return Err(Pos::of(&c.name, format!("chains[{i}].stages"))
                .error(file, format!("chain `{}` makes no copies: its last stage must be `copy`", c.name.value)));
        }
        chains.push(ChainSpec {
            name: c.name.value.clone(),
            on_failure: match c.on_failure {
                OnFailureCfg::FailOpen => OnFailure::FailOpen,
                OnFailureCfg::FailClosed => OnFailure::FailClosed,
            },
            stages,
        });
    }

    // Rules.
    let rule_ix =
        index_names(file, "rule", cfg.rules.iter().enumerate().map(|(i, r)| (&r.name, format!("rules[{i}].name"))))?;
    debug_assert_eq!(rule_ix.len(), cfg.rules.len());
    let mut rules = Vec::new();
    for (i, r) in cfg.rules.iter().enumerate() {
        rules.push(compile_rule(r, &format!("rules[{i}]"), file, &port_ix, &chain_ix)?);
    }
    let rules = RuleSet::new(rules).map(Arc::new).map_err(|e| match e {
        RuleError::Overlap { second, .. } | RuleError::DuplicateName { second, .. } => {
            let r = &cfg.rules[second as usize];
            Pos::of(&r.priority, format!("rules[{second}].priority")).error(file, e.to_string())
        }
        RuleError::Unmatchable { rule, .. } => {
            let r = &cfg.rules[rule as usize];
            Pos::of(&r.name, format!("rules[{rule}].match")).error(file, e.to_string())
        }
    })?;
    for (c, spec) in cfg.chains.iter().zip(&chains) {
        if !cfg.rules.iter().any(|r| r.chain.as_ref().map(|s| &s.value) == Some(&spec.name)) {
            log::warn!("{file}:{}: chain `{}` is not used by any rule", c.name.referenced.line(), spec.name);
        }
    }

    let control = compile_control(&cfg.control, file, cfg.rules.len())?;

    // Workers: both ports of a link on one worker; links spread round-robin,
    // unlinked ports to the least loaded worker.
    let dpdk_ports: Vec<Option<DpdkPortPlan>> = ports.iter().map(|p| p.dpdk.clone()).collect();
    let queue_map = crate::dpdk::assign_queues(cfg, file, &port_ix, &dpdk_ports, &tool_ports)?;
    let mut workers: Vec<WorkerPlan> = dp
        .workers
        .iter()
        .zip(queue_map)
        .map(|(w, queues)| WorkerPlan { core: w.core.as_ref().map(|c| c.value), ports: Vec::new(), queues })
        .collect();
    let n = workers.len();
    // A unit (a link or a bridge) whose ports fan out goes to every worker;
    // the others go round-robin.
    let mut units: Vec<Vec<PortId>> = links.pairs().iter().map(|&(a, b)| vec![a, b]).collect();
    units.extend(bridges.iter().map(|b| b.ports.clone()));
    let mut unit = 0;
    for ids in &units {
        // A unit with DPDK ports goes to the workers polling their queues: each
        // transmits on a queue of its own, so all of them can forward to any port of the unit.
        if ids.iter().any(|&p| ports[p as usize].dpdk.is_some()) {
            let owners: Vec<usize> =
                (0..n).filter(|&w| workers[w].queues.iter().any(|(p, _)| ids.contains(p))).collect();
            if owners.len() > 1 {
                if let Some(&other) = ids.iter().find(|&&p| ports[p as usize].dpdk.is_none()) {
                    let o = other as usize;
                    return Err(Pos::of(&cfg.ports[o].name, format!("ports[{o}]")).error(
                        file,
                        format!("port `{}` is linked or bridged with dpdk ports whose queues are on workers {owners:?}; a {} port is polled by one worker, so put those queues on one worker", ports[o].name, ports[o].kind),
                    ));
                }
            }
            for w in owners {
                workers[w].ports.extend(ids);
            }
            continue;
        }
        let fanned = ids.iter().filter(|&&p| ports[p as usize].fanout).count();
        if fanned == ids.len() {
            for w in workers.iter_mut() {
                w.ports.extend(ids);
            }
        } else if fanned > 0 {
            let names: Vec<&str> = ids.iter().map(|&p| ports[p as usize].name.as_str()).collect();
            let first = ids.iter().find(|&&p| !ports[p as usize].fanout).copied().unwrap_or(ids[0]) as usize;
            return Err(Pos::of(&cfg.ports[first].name, format!("ports[{first}].fanout")).error(
                file,
                format!(
                    "ports {} are linked or bridged together: give all of them `fanout: true` or none",
                    names.join(", ")
                ),
            ));
        } else {
            workers[unit % n].ports.extend(ids);
            unit += 1;
        }
    }
    for p in 0..ports.len() as PortId {
        let bridged = bridges.iter().any(|b| b.ports.contains(&p));
        if links.peer(p).is_none() && !bridged && !tool_ports.contains(&p) {
            if ports[p as usize].dpdk.is_some() {
                for w in workers.iter_mut().filter(|w| w.queues.iter().any(|&(q, _)| q == p)) {
                    w.ports.push(p);
                }
                continue;
            }
            if let Some(w) = workers.iter_mut().min_by_key(|w| w.ports.len()) {
                w.ports.push(p);
            }
        }
    }
    // Each worker using a DPDK port transmits on a queue of its own.
    for (p, plan) in ports.iter().enumerate() {
        let Some(d) = &plan.dpdk else { continue };
        let users = workers.iter().filter(|w| w.ports.contains(&(p as PortId))).count();
        if users > d.tx_queues as usize {
            let pc = &cfg.ports[p];
            let pos = pc
                .tx_queues
                .as_ref()
                .map(|t| Pos::of(t, format!("ports[{p}].tx_queues")))
                .unwrap_or_else(|| Pos::of(&pc.kind, format!("ports[{p}].type")));
            return Err(pos.error(file, format!("{users} workers transmit on port `{}`, each on a tx queue of its own: tx_queues must be at least {users}", plan.name)));
        }
    }
    let dpdk = crate::dpdk::compile_section(cfg, file, &dpdk_ports, workers.len(), sinks.len())?;
    for (i, w) in workers.iter().enumerate() {
        if w.ports.is_empty() {
            log::warn!("{file}: worker {i} has no ports (more workers than links)");
        }
    }

    Ok(Plan {
        ports,
        links,
        bridges,
        forwarding,
        sinks,
        tool_ports,
        chains,
        rules,
        workers,
        worker: WorkerConfig {
            id: 0,
            flow_cache: dp.flow_cache.value as usize,
            burst: dp.burst.value as usize,
            malformed: match dp.malformed {
                MalformedCfg::Forward => MalformedPolicy::Forward,
                MalformedCfg::Drop => MalformedPolicy::Drop,
            },
            monitor_budget: (dp.monitor_budget.value < 1.0).then_some(dp.monitor_budget.value),
            overload_bursts: (dp.overload_bursts.value > 0).then_some(dp.overload_bursts.value),
        },
        copy_buffers: {
            // Every sink may hold a full queue of copies, and one stuck sink must not starve the
            // others of buffers: by default there are enough for all queues full plus room to spare.
            let needed = cfg.sinks.len() * dp.sink_queue.value as usize + 1024;
            if dp.copy_buffers.referenced.line() == 0 {
                needed.max(dp.copy_buffers.value as usize)
            } else {
                if (dp.copy_buffers.value as usize) < needed {
                    log::warn!(
                        "{file}:{}: copy_buffers {} is less than {needed} ({} sinks x sink_queue {} + 1024): a stuck sink can starve the others of copy buffers",
                        dp.copy_buffers.referenced.line(),
                        dp.copy_buffers.value,
                        cfg.sinks.len(),
                        dp.sink_queue.value
                    );
                }
                dp.copy_buffers.value as usize
            }
        },
        sink_queue: dp.sink_queue.value as usize,
        stats_interval: (dp.stats_interval.value > 0.0).then(|| Duration::from_secs_f64(dp.stats_interval.value)),
        dpdk,
        control,
        watchdog: dp.watchdog.enabled.then(|| WatchdogConfig {
            timeout: Duration::from_millis(dp.watchdog.timeout_ms.value.into()),
            check: Duration::from_millis(dp.watchdog.check_ms.value.into()),
        }),
        guard: crate::guard::settings(cfg, file)?,
    })
}

/// `prefix.field`, or just `field` under an empty prefix.
fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

/// Compiles one rule found under field path `prefix` (`rules[3]`, or empty
/// for a rule on its own, as the control API receives them).
pub(crate) fn compile_rule(
    r: &RuleCfg,
    prefix: &str,
    file: &str,
    port_ix: &HashMap<String, usize>,
    chain_ix: &HashMap<String, usize>,
) -> Result<Rule, ConfigError> {
    let at = |s: &dyn SpanOf, f: &str| Pos { line: s.line(), column: s.column(), field: join(prefix, f) };
    let action = match (&r.chain, &r.action) {
        (Some(c), None) => Action::Chain(lookup(chain_ix, c, join(prefix, "chain"), file, "chain")? as u16),
        (None, Some(a)) => match a.value {
            ActionCfg::Drop => Action::Drop,
        },
        (Some(c), Some(_)) => {
            return Err(
                at(c, "chain").error(file, format!("rule `{}` has both `chain` and `action`; give one", r.name.value))
            )
        }
        (None, None) => {
            return Err(at(&r.name, "name")
                .error(file, format!("rule `{}` needs `chain: <chain name>` or `action: drop`", r.name.value)))
        }
    };
    let matches = compile_match(&r.matches, &join(prefix, "match"), file, port_ix)?;
    Ok(Rule { name: r.name.value.clone(), priority: r.priority.value, matches, symmetric: r.symmetric, action })
}

/// Compiles match fields (of a rule, or of a `filter` stage under `prefix`).
fn compile_match(
    m: &MatchCfg,
    prefix: &str,
    file: &str,
    port_ix: &HashMap<String, usize>,
) -> Result<Match, ConfigError> {
    let at = |s: &dyn SpanOf, f: &str| Pos { line: s.line(), column: s.column(), field: format!("{prefix}.{f}") };
    let mut out = Match::default();
    if let Some(p) = &m.in_port {
        out.in_port = Some(lookup(port_ix, p, format!("{prefix}.in_port"), file, "port")? as PortId);
    }
    out.src_mac = m.src_mac.as_ref().map(|s| s.value.0);
    out.dst_mac = m.dst_mac.as_ref().map(|s| s.value.0);
    for (v, f) in [(&m.vlan, "vlan"), (&m.inner_vlan, "inner_vlan")] {
        if let Some(v) = v {
            if v.value > 4095 {
                return Err(at(v, f).error(file, format!("VLAN id {} is out of range (0..=4095)", v.value)));
            }
        }
    }
    if let (Some(inner), None) = (&m.inner_vlan, &m.vlan) {
        return Err(at(inner, "inner_vlan").error(file, "inner_vlan needs vlan (the outer tag) too"));
    }
    out.vlan = m.vlan.as_ref().map(|v| v.value);
    out.inner_vlan = m.inner_vlan.as_ref().map(|v| v.value);
    out.ethertype = m.ethertype.as_ref().map(|e| e.value.0);
    out.src_ip = m.src.as_ref().map(|s| s.value.0);
    out.dst_ip = m.dst.as_ref().map(|s| s.value.0);
    if let (Some(s), Some(d)) = (&m.src, &m.dst) {
        if s.value.0.addr().is_ipv4() != d.value.0.addr().is_ipv4() {
            return Err(
                at(d, "dst").error(file, "src and dst are of different IP families; the rule could never match")
            );
        }
    }
    let family = m.src.as_ref().or(m.dst.as_ref()).map(|s| if s.value.0.addr().is_ipv4() { 0x0800u16 } else { 0x86dd });
    if let (Some(fam), Some(et)) = (family, &m.ethertype) {
        if et.value.0 != fam {
            return Err(at(et, "ethertype").error(
                file,
                format!(
                    "ethertype {:#06x} contradicts the {} addresses in src/dst; the rule could never match",
                    et.value.0,
                    if fam == 0x0800 { "IPv4" } else { "IPv6" }
                ),
            ));
        }
    }
    out.proto = m.proto.as_ref().map(|p| p.value.0);
    if let Some(p) = &m.proto {
        let v6only = p.value.0 == proto::ICMPV6;
        let v4only = p.value.0 == proto::ICMP;
        if (family == Some(0x0800) && v6only) || (family == Some(0x86dd) && v4only) {
            return Err(at(p, "proto")
                .error(file, "this protocol does not exist in the IP family of src/dst; the rule could never match"));
        }
    }
    for (pr, f) in [(&m.src_port, "src_port"), (&m.dst_port, "dst_port")] {
        if let Some(pr) = pr {
            let ok = matches!(out.proto, Some(proto::TCP | proto::UDP | proto::SCTP));
            if !ok {
                return Err(at(pr, f).error(file, "port matches need `proto: tcp`, `udp` or `sctp` in the same match"));
            }
        }
    }
    out.src_port = m.src_port.as_ref().map(|p| p.value.0);
    out.dst_port = m.dst_port.as_ref().map(|p| p.value.0);
    if let Some(v) = &m.vni {
        if v.value > 0x00ff_ffff {
            return Err(at(v, "vni").error(file, format!("VNI {} is out of range (0..=16777215)", v.value)));
        }
        out.vni = Some(v.value);
    }
    Ok(out)
}

fn stage_name(s: &StageCfg) -> &'static str {
    match s {
        StageCfg::Filter(_) => "filter",
        StageCfg::Sample { .. } => "sample",
        StageCfg::Dedup { .. } => "dedup",
        StageCfg::Strip(_) => "strip",
        StageCfg::Slice { .. } => "slice",
        StageCfg::Budget { .. } => "budget",
        #[cfg(feature = "chaos")]
        StageCfg::Stall { .. } => "stall",
        StageCfg::Copy { .. } => "copy",
    }
}

/// Compiles one stage; `field` is its path (`chains[0].stages[2]`).
fn compile_stage(
    st: &Spanned<StageCfg>,
    field: &str,
    file: &str,
    port_ix: &HashMap<String, usize>,
    sink_ix: &HashMap<String, usize>,
) -> Result<StageSpec, ConfigError> {
    let err = |s: &dyn SpanOf, f: &str, msg: String| {
        Pos { line: s.line(), column: s.column(), field: format!("{field}.{f}") }.error(file, msg)
    };
    Ok(match &st.value {
        StageCfg::Filter(m) => {
            StageSpec::Filter { matches: compile_match(m, &format!("{field}.filter"), file, port_ix)? }
        }
        StageCfg::Sample { one_in, per, seed } => {
            if one_in.value == 0 {
                return Err(err(one_in, "sample.one_in", "must be at least 1 (1 keeps every packet)".into()));
            }
            StageSpec::Sample { one_in: one_in.value, per_flow: *per == SamplePer::Flow, seed: *seed }
        }
        StageCfg::Dedup { window_ms } => {
            let w = window_ms.value;
            if !(w > 0.0 && w <= 10_000.0) {
                return Err(err(
                    window_ms,
                    "dedup.window_ms",
                    format!("window {w} ms is out of range (more than 0, at most 10000)"),
                ));
            }
            StageSpec::Dedup { window_ns: (w * 1e6) as u64 }
        }
        StageCfg::Strip(layers) => {
            if layers.value.is_empty() {
                return Err(err(layers, "strip", "name at least one layer: vxlan, geneve, vlan".into()));
            }
            let mut out = Vec::new();
            for (k, l) in layers.value.iter().enumerate() {
                let layer = match l.value {
                    StripCfg::Vxlan => StripLayer::Vxlan,
                    StripCfg::Geneve => StripLayer::Geneve,
                    StripCfg::Vlan => StripLayer::Vlan,
                };
                if out.contains(&layer) {
                    return Err(err(l, &format!("strip[{k}]"), "this layer is listed twice".into()));
                }
                out.push(layer);
            }
            StageSpec::Strip { layers: out }
        }
        StageCfg::Slice { snaplen } => {
            if !(14..=65_535).contains(&snaplen.value) {
                return Err(err(
                    snaplen,
                    "slice.snaplen",
                    format!("snap length {} is out of range (14..=65535: at least an Ethernet header)", snaplen.value),
                ));
            }
            StageSpec::Slice { snaplen: snaplen.value }
        }
        StageCfg::Budget { pps, bps } => {
            if pps.is_none() && bps.is_none() {
                return Err(Pos::of(st, field).error(file, "budget needs `pps`, `bps` or both"));
            }
            for (v, f) in [(pps, "budget.pps"), (bps, "budget.bps")] {
                if let Some(v) = v {
                    if v.value == 0 {
                        return Err(err(
                            v,
                            f,
                            "a zero budget would shed every copy; remove the copy stage instead".into(),
                        ));
                    }
                }
            }
            StageSpec::Budget { pps: pps.as_ref().map(|v| v.value), bps: bps.as_ref().map(|v| v.value) }
        }
        #[cfg(feature = "chaos")]
        StageCfg::Stall { after, ms } => StageSpec::Stall { after: after.value, ms: ms.value },
        StageCfg::Copy { to } => {
            if to.is_empty() {
                return Err(Pos::of(st, format!("{field}.copy.to")).error(file, "copy needs at least one sink in `to`"));
            }
            let mut idx = Vec::new();
            for (k, s) in to.iter().enumerate() {
                let n = lookup(sink_ix, s, format!("{field}.copy.to[{k}]"), file, "sink")?;
                if idx.contains(&n) {
                    return Err(err(s, &format!("copy.to[{k}]"), format!("sink `{}` is listed twice", s.value)));
                }
                idx.push(n);
            }
            StageSpec::Copy { to: idx }
        }
    })
}

/// Compiles one sink, refusing fields that do not apply to its type.
fn compile_sink(
    s: &SinkCfg,
    i: usize,
    file: &str,
    port_ix: &HashMap<String, usize>,
    linked: &HashMap<usize, usize>,
) -> Result<SinkTarget, ConfigError> {
    let kind = s.kind.value;
    let name = &s.name.value;
    let f = |n: &str| format!("sinks[{i}].{n}");
    let kind_str = match kind {
        SinkKind::Pcapng => "pcapng",
        SinkKind::Port => "port",
        SinkKind::Erspan => "erspan",
        SinkKind::Vxlan => "vxlan",
        SinkKind::Gre => "gre",
    };
    // Which fields each type takes.
    let allowed: &[&str] = match kind {
        SinkKind::Pcapng => &["path", "rotate_mb", "rotate_seconds", "keep", "fsync"],
        SinkKind::Port => &["port", "vlan"],
        SinkKind::Erspan => &["destination", "source", "session", "erspan_type"],
        SinkKind::Vxlan => &["destination", "source", "vni", "dst_port"],
        SinkKind::Gre => &["destination", "source"],
    };
    let present: [(&str, Option<Pos>); 13] = [
        ("path", s.path.as_ref().map(|v| Pos::of(v, f("path")))),
        ("rotate_mb", s.rotate_mb.as_ref().map(|v| Pos::of(v, f("rotate_mb")))),
        ("rotate_seconds", s.rotate_seconds.as_ref().map(|v| Pos::of(v, f("rotate_seconds")))),
        ("keep", s.keep.as_ref().map(|v| Pos::of(v, f("keep")))),
        ("fsync", s.fsync.as_ref().map(|v| Pos::of(v, f("fsync")))),
        ("port", s.port.as_ref().map(|v| Pos::of(v, f("port")))),
        ("vlan", s.vlan.as_ref().map(|v| Pos::of(v, f("vlan")))),
        ("destination", s.destination.as_ref().map(|v| Pos::of(v, f("destination")))),
        ("source", s.source.as_ref().map(|v| Pos::of(v, f("source")))),
        ("vni", s.vni.as_ref().map(|v| Pos::of(v, f("vni")))),
        ("dst_port", s.dst_port.as_ref().map(|v| Pos::of(v, f("dst_port")))),
        ("session", s.session.as_ref().map(|v| Pos::of(v, f("session")))),
        ("erspan_type", s.erspan_type.as_ref().map(|v| Pos::of(v, f("erspan_type")))),
    ];
    for (field, pos) in &present {
        if let Some(p) = pos {
            if !allowed.contains(field) {
                return Err(p.error(
                    file,
                    format!("`{field}` does not apply to {kind_str} sinks (they take: {})", allowed.join(", ")),
                ));
            }
        }
    }
    let need = |what: &str| Pos::of(&s.kind, f("type")).error(file, format!("{kind_str} sink `{name}` needs `{what}`"));
    let remote = || -> Result<Remote, ConfigError> {
        let d = s.destination.as_ref().ok_or_else(|| need("destination"))?;
        if let Some(src) = &s.source {
            if src.value.is_ipv4() != d.value.is_ipv4() {
                return Err(
                    Pos::of(src, f("source")).error(file, "source and destination are of different IP families")
                );
            }
        }
        Ok(Remote { destination: d.value, source: s.source.as_ref().map(|v| v.value) })
    };
    Ok(match kind {
        SinkKind::Pcapng => {
            let path = s.path.as_ref().ok_or_else(|| need("path"))?.value.clone();
            let rotate_bytes = match &s.rotate_mb {
                Some(v) if !(v.value > 0.0 && v.value.is_finite()) => {
                    return Err(Pos::of(v, f("rotate_mb")).error(file, "must be a positive number of megabytes"))
                }
                Some(v) => Some((v.value * 1e6) as u64),
                None => None,
            };
            let rotate_every = match &s.rotate_seconds {
                Some(v) if !(v.value > 0.0 && v.value.is_finite()) => {
                    return Err(Pos::of(v, f("rotate_seconds")).error(file, "must be a positive number of seconds"))
                }
                Some(v) => Some(Duration::from_secs_f64(v.value)),
                None => None,
            };
            let keep = match &s.keep {
                Some(v) if v.value == 0 => return Err(Pos::of(v, f("keep")).error(file, "must keep at least 1 file")),
                Some(v) if rotate_bytes.is_none() && rotate_every.is_none() => {
                    return Err(
                        Pos::of(v, f("keep")).error(file, "`keep` needs rotation (`rotate_mb` or `rotate_seconds`)")
                    )
                }
                Some(v) => Some(v.value as usize),
                None => None,
            };
            SinkTarget::Pcapng {
                path,
                rotate_bytes,
                rotate_every,
                keep,
                fsync: s.fsync.as_ref().map(|v| v.value).unwrap_or_default(),
            }
        }
        SinkKind::Port => {
            let p = s.port.as_ref().ok_or_else(|| need("port"))?;
            let port = lookup(port_ix, p, f("port"), file, "port")?;
            if let Some(&l) = linked.get(&port) {
                let place = if l == usize::MAX { "a bridge".to_string() } else { format!("links[{l}]") };
                return Err(Pos::of(p, f("port"))
                    .error(file, format!("port `{}` is in {place}; a tool port carries copies only", p.value)));
            }
            if let Some(v) = &s.vlan {
                if v.value > 4095 {
                    return Err(
                        Pos::of(v, f("vlan")).error(file, format!("VLAN id {} is out of range (0..=4095)", v.value))
                    );
                }
            }
            SinkTarget::Port { port: port as PortId, vlan: s.vlan.as_ref().map(|v| v.value) }
        }
        SinkKind::Erspan => {
            let remote = remote()?;
            let session = s.session.as_ref().ok_or_else(|| need("session"))?;
            if session.value > 1023 {
                return Err(Pos::of(session, f("session"))
                    .error(file, format!("ERSPAN session id {} is out of range (0..=1023)", session.value)));
            }
            let t = s.erspan_type.as_ref().map(|v| (v.value, Some(v))).unwrap_or((2, None));
            if !(t.0 == 2 || t.0 == 3) {
                let p = t.1.map(|v| Pos::of(v, f("erspan_type"))).unwrap_or_else(|| Pos::of(&s.kind, f("type")));
                return Err(p.error(file, format!("erspan_type {} is not 2 (type II) or 3 (type III)", t.0)));
            }
            SinkTarget::Erspan { remote, erspan_type: t.0, session: session.value }
        }
        SinkKind::Vxlan => {
            let remote = remote()?;
            let vni = s.vni.as_ref().ok_or_else(|| need("vni"))?;
            if vni.value > 0x00ff_ffff {
                return Err(
                    Pos::of(vni, f("vni")).error(file, format!("VNI {} is out of range (0..=16777215)", vni.value))
                );
            }
            SinkTarget::Vxlan { remote, vni: vni.value, dst_port: s.dst_port.as_ref().map(|v| v.value).unwrap_or(4789) }
        }
        SinkKind::Gre => SinkTarget::Gre { remote: remote()? },
    })
}

/// Anything with a position in the file.
trait SpanOf {
    fn line(&self) -> u32;
    fn column(&self) -> u32;
}

impl<T> SpanOf for Spanned<T> {
    fn line(&self) -> u32 {
        self.referenced.line() as u32
    }
    fn column(&self) -> u32 {
        self.referenced.column() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    const BASE: &str = "ports:\n  - { name: a, type: pcap, rx: in.pcap }\n  - { name: b, type: pcap, tx: out.pcap }\nlinks:\n  - [a, b]\nsinks:\n  - { name: cap, type: pcapng, path: copies.pcapng }\nchains:\n  - name: watch\n    stages:\n      - copy: { to: [cap] }\n";

    fn compile_text(rules: &str) -> Result<Plan, ConfigError> {
        let text = format!("{BASE}rules:\n{rules}");
        let cfg = parse_str(&text, "t.yaml")?;
        compile(&cfg, "t.yaml")
    }

    #[test]
    fn a_good_config_compiles() {
        let plan = compile_text("  - name: web\n    priority: 10\n    match: { src: 10.0.0.0/24, proto: tcp, dst_port: 80 }\n    symmetric: true\n    chain: watch\n").unwrap();
        assert_eq!(plan.ports.len(), 2);
        assert_eq!(plan.links.peer(0), Some(1));
        assert_eq!(plan.rules.len(), 1);
        assert_eq!(plan.workers, vec![WorkerPlan { core: None, ports: vec![0, 1], queues: vec![] }]);
        assert_eq!(plan.chains[0].stages, vec![StageSpec::Copy { to: vec![0] }]);
    }

    fn err(rules: &str) -> ConfigError {
        compile_text(rules).unwrap_err()
    }

    #[test]
    fn unknown_chain_names_line_column_and_field() {
        let e = err("  - name: web\n    priority: 10\n    chain: wach\n");
        assert_eq!((e.line, e.column, e.field.as_str()), (15, 12, "rules[0].chain"));
        assert!(e.message.contains("unknown chain `wach` (known chains: watch)"), "{e}");
    }

    #[test]
    fn overlapping_equal_priorities_are_refused() {
        let e = err("  - name: one\n    priority: 5\n    match: { proto: tcp }\n    chain: watch\n  - name: two\n    priority: 5\n    match: { dst: 10.0.0.1 }\n    chain: watch\n");
        assert_eq!((e.line, e.field.as_str()), (18, "rules[1].priority"));
        assert!(e.message.contains("`one` and `two`"), "{e}");
    }

    #[test]
    fn cross_field_mistakes_are_refused() {
        assert!(err("  - name: r\n    priority: 1\n    match: { dst_port: 80 }\n    chain: watch\n")
            .message
            .contains("need `proto"));
        assert!(err("  - name: r\n    priority: 1\n    match: { src: 10.0.0.0/8, dst: fd00::/8 }\n    chain: watch\n")
            .message
            .contains("different IP families"));
        assert!(err("  - name: r\n    priority: 1\n    match: { in_port: c }\n    chain: watch\n")
            .message
            .contains("unknown port `c`"));
        assert!(err("  - name: r\n    priority: 1\n    match: { vlan: 5000 }\n    chain: watch\n")
            .message
            .contains("out of range"));
        assert!(err(
            "  - name: r\n    priority: 1\n    chain: watch\n  - name: r\n    priority: 2\n    chain: watch\n"
        )
        .message
        .contains("defined twice"));
        assert!(err("  - name: r\n    priority: 1\n").message.contains("needs `chain"));
        assert!(err("  - name: r\n    priority: 1\n    chain: watch\n    action: drop\n").message.contains("both"));
    }

    fn chain_err(stages: &str) -> ConfigError {
        let text = format!("ports:\n  - {{ name: a, type: pcap, rx: x }}\nsinks:\n  - {{ name: cap, type: pcapng, path: c.pcapng }}\nchains:\n  - name: c\n    stages:\n{stages}");
        compile(&parse_str(&text, "t").unwrap(), "t").unwrap_err()
    }

    #[test]
    fn stages_compile_in_order() {
        let text = "ports:\n  - { name: a, type: pcap, rx: x }\nsinks:\n  - { name: cap, type: pcapng, path: c.pcapng }\nchains:\n  - name: c\n    stages:\n      - filter: { proto: tcp, dst_port: 80 }\n      - sample: { one_in: 10, per: flow, seed: 3 }\n      - dedup: { window_ms: 5 }\n      - strip: [vxlan, vlan]\n      - slice: { snaplen: 128 }\n      - budget: { pps: 1000 }\n      - copy: { to: [cap] }\n";
        let plan = compile(&parse_str(text, "t").unwrap(), "t").unwrap();
        let kinds: Vec<&str> = plan.chains[0].stages.iter().map(StageSpec::kind).collect();
        assert_eq!(kinds, ["filter", "sample", "dedup", "strip", "slice", "budget", "copy"]);
        assert_eq!(plan.chains[0].stages[1], StageSpec::Sample { one_in: 10, per_flow: true, seed: 3 });
        assert_eq!(plan.chains[0].stages[2], StageSpec::Dedup { window_ns: 5_000_000 });
        assert_eq!(plan.chains[0].stages[3], StageSpec::Strip { layers: vec![StripLayer::Vxlan, StripLayer::Vlan] });
    }

    #[test]
    fn bad_stages_are_refused_where_they_are() {
        let e = chain_err("      - copy: { to: [cap] }\n      - slice: { snaplen: 64 }\n");
        assert_eq!((e.line, e.field.as_str()), (9, "chains[0].stages[1]"));
        assert!(e.message.contains("`slice` after `copy` can never run"), "{e}");
        let e = chain_err("      - slice: { snaplen: 8 }\n      - copy: { to: [cap] }\n");
        assert_eq!(e.field, "chains[0].stages[0].slice.snaplen");
        assert!(e.message.contains("out of range"), "{e}");
        let e = chain_err("      - budget: { pps: 0 }\n      - copy: { to: [cap] }\n");
        assert!(e.message.contains("zero budget"), "{e}");
        let e = chain_err("      - sample: { one_in: 0 }\n      - copy: { to: [cap] }\n");
        assert!(e.message.contains("at least 1"), "{e}");
        let e = chain_err("      - slice: { snaplen: 64 }\n");
        assert!(e.message.contains("last stage must be `copy`"), "{e}");
        let text = "ports: []\nchains:\n  - name: c\n    stages:\n      - mirror: { to: [x] }\n";
        let e = parse_str(text, "t").unwrap_err();
        assert_eq!((e.line, e.column), (5, 9));
        assert!(e.message.contains("unknown variant `mirror`"), "{e}");
    }

    #[test]
    fn sinks_take_only_their_own_fields() {
        let sink = |body: &str| {
            let text = format!("ports:\n  - {{ name: a, type: pcap, rx: x }}\n  - {{ name: ids, type: pcap, tx: t.pcap }}\nsinks:\n  - {body}\n");
            compile(&parse_str(&text, "t").unwrap(), "t")
        };
        let plan = sink("{ name: s, type: vxlan, destination: 127.0.0.1, vni: 42 }").unwrap();
        assert!(matches!(plan.sinks[0].target, SinkTarget::Vxlan { vni: 42, dst_port: 4789, .. }));
        let plan = sink("{ name: s, type: port, port: ids, vlan: 7 }").unwrap();
        assert_eq!(plan.tool_ports, vec![1]);
        assert!(plan.workers[0].ports == vec![0], "tool ports are not polled: {:?}", plan.workers);
        let e = sink("{ name: s, type: pcapng, path: x, vni: 4 }").unwrap_err();
        assert!(e.message.contains("`vni` does not apply to pcapng sinks"), "{e}");
        let e = sink("{ name: s, type: erspan, destination: 127.0.0.1, session: 2000 }").unwrap_err();
        assert!(e.message.contains("out of range (0..=1023)"), "{e}");
        let e = sink("{ name: s, type: erspan, destination: 127.0.0.1, session: 1, erspan_type: 4 }").unwrap_err();
        assert!(e.message.contains("not 2 (type II) or 3"), "{e}");
        let e = sink("{ name: s, type: gre }").unwrap_err();
        assert!(e.message.contains("needs `destination`"), "{e}");
        let e = sink("{ name: s, type: pcapng, path: x, keep: 3 }").unwrap_err();
        assert!(e.message.contains("needs rotation"), "{e}");
        let e = sink("{ name: s, type: vxlan, destination: 127.0.0.1, source: \"::1\", vni: 1 }").unwrap_err();
        assert!(e.message.contains("different IP families"), "{e}");
    }

    #[test]
    fn bad_links_and_sinks_are_refused() {
        let text = "ports:\n  - { name: a, type: pcap, rx: x }\nlinks:\n  - [a, a]\n";
        let e = compile(&parse_str(text, "t").unwrap(), "t").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "links[0][1]"));
        let text = "ports:\n  - { name: a, type: pcap, rx: x }\nchains:\n  - name: c\n    stages:\n      - copy: { to: [nope] }\n";
        let e = compile(&parse_str(text, "t").unwrap(), "t").unwrap_err();
        assert!(e.message.contains("unknown sink `nope`"), "{e}");
        let text = "ports:\n  - { name: a, type: pcap }\n";
        let e = compile(&parse_str(text, "t").unwrap(), "t").unwrap_err();
        assert!(e.message.contains("needs `rx`"), "{e}");
    }

    #[test]
    fn fail_open_tuning_has_defaults_and_bad_values_name_their_field() {
        let plan = compile_text("").unwrap();
        assert_eq!((plan.worker.monitor_budget, plan.worker.overload_bursts), (Some(0.3), Some(8)));
        let with = |dp: &str| compile(&parse_str(&format!("dataplane:\n{dp}{BASE}"), "t").unwrap(), "t");
        let plan = with("  monitor_budget: 1\n  overload_bursts: 0\n").unwrap();
        assert_eq!((plan.worker.monitor_budget, plan.worker.overload_bursts), (None, None), "1 and 0 turn them off");
        let e = with("  monitor_budget: 1.5\n").unwrap_err();
        assert_eq!((e.line, e.column, e.field.as_str()), (2, 19, "dataplane.monitor_budget"));
        assert!(e.message.contains("above 0 and at most 1"), "{e}");
        assert_eq!(plan.watchdog, Some(WatchdogConfig::default()));
        let plan = with("  watchdog: { timeout_ms: 40, check_ms: 4 }\n").unwrap();
        let want = WatchdogConfig { timeout: Duration::from_millis(40), check: Duration::from_millis(4) };
        assert_eq!(plan.watchdog, Some(want));
        assert_eq!(with("  watchdog: { enabled: false }\n").unwrap().watchdog, None);
        let e = with("  watchdog:\n    timeout_ms: 20\n    check_ms: 50\n").unwrap_err();
        assert_eq!((e.line, e.column, e.field.as_str()), (4, 15, "dataplane.watchdog.check_ms"));
        assert!(e.message.contains("at most timeout_ms (20)"), "{e}");
    }
}
