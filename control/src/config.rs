//! The YAML configuration: typed structs, read once, validated once.
//!
//! Every value that can be wrong carries its position in the file
//! ([`Spanned`]), so every error names the file, line, column and field.
//! [`crate::compile`] turns a validated [`Config`] into the dataplane's and
//! the chains' structures; nothing below this module sees YAML.

use dataplane::classifier::PortRange;
use dataplane::flow::MacAddr;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {field}: {message}")]
pub struct ConfigError {
    /// The file the error is in.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// The offending field, as a path (`rules[2].match.src`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// A position in the file plus the field path, for errors found after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// Field path.
    pub field: String,
}

impl Pos {
    /// The position of a spanned value, with the field path it was found under.
    pub fn of<T>(s: &Spanned<T>, field: impl Into<String>) -> Pos {
        Pos { line: s.referenced.line() as u32, column: s.referenced.column() as u32, field: field.into() }
    }

    /// Turns the position into an error in `file`.
    pub fn error(&self, file: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            line: self.line,
            column: self.column,
            field: self.field.clone(),
            message: message.into(),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Worker threads and their tuning.
    #[serde(default)]
    pub dataplane: DataplaneCfg,
    /// The ports packets enter and leave by.
    #[serde(deserialize_with = "seq_or_null")]
    pub ports: Vec<PortCfg>,
    /// Bump-in-the-wire port pairs: what enters one leaves by the other.
    #[serde(default, deserialize_with = "seq_or_null")]
    pub links: Vec<Spanned<Vec<Spanned<String>>>>,
    /// MAC-learning bridges over several ports.
    #[serde(default, deserialize_with = "seq_or_null")]
    pub bridges: Vec<BridgeCfg>,
    /// Where copies go.
    #[serde(default, deserialize_with = "seq_or_null")]
    pub sinks: Vec<SinkCfg>,
    /// Service chains: what happens to a steered packet's copies.
    #[serde(default, deserialize_with = "seq_or_null")]
    pub chains: Vec<ChainCfg>,
    /// Steering rules.
    #[serde(default, deserialize_with = "seq_or_null")]
    pub rules: Vec<RuleCfg>,
    /// DPDK's EAL and mbuf pool (only in binaries built with the `dpdk` feature).
    pub dpdk: Option<Spanned<DpdkCfg>>,
    /// Run-time control: the API socket, the metrics listener, reloads.
    #[serde(default)]
    pub control: ControlCfg,
    /// `flowsteer guard`: heartbeat and kernel bypass (see `crate::guard`).
    pub guard: Option<GuardCfg>,
}

/// `dpdk:` — the EAL and the mbuf pool, for `type: dpdk` ports.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkCfg {
    /// Extra EAL arguments, appended after flowsteer's own.
    #[serde(default)]
    pub eal_args: Vec<Spanned<String>>,
    /// `--file-prefix` (default `flowsteer`): hugepage files and runtime directory names.
    pub file_prefix: Option<Spanned<String>>,
    /// `-m`: megabytes of memory (default 512).
    pub memory_mb: Option<Spanned<u32>>,
    /// `--no-huge`: ordinary memory instead of hugepages (tests; default false).
    #[serde(default)]
    pub no_huge: bool,
    /// `--in-memory`: no files under /dev/hugepages or /var/run/dpdk (default false).
    #[serde(default)]
    pub in_memory: bool,
    /// Mbufs in the pool (default 16383).
    pub mbufs: Option<Spanned<u32>>,
    /// Per-lcore mempool cache (default 256).
    pub mbuf_cache: Option<Spanned<u32>>,
}

/// `control:` — how `flowsteer run` is controlled while it runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlCfg {
    /// Unix socket of the control API (default `/run/flowsteer/flowsteer.sock`).
    pub socket: Option<Spanned<PathBuf>>,
    /// `addr:port` (or a bare port, on loopback) of a TCP listener serving only `GET /metrics`.
    pub metrics_listen: Option<Spanned<String>>,
    /// Reload the rules when the file changes (default true).
    pub watch: Option<bool>,
    /// The most rules the running set may hold (default 65536).
    pub max_rules: Option<Spanned<u32>>,
}

/// `guard:` — the process bypass. The dataplane heartbeats `flowsteer guard`
/// over a Unix socket; when it dies or hangs the guard joins each link's and
/// bridge's Linux interfaces in the kernel until it is back.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardCfg {
    /// The Unix socket the guard listens on and the dataplane connects to.
    pub heartbeat: Spanned<PathBuf>,
    /// Milliseconds between the dataplane's heartbeats (default 2).
    pub heartbeat_ms: Option<Spanned<u32>>,
    /// Milliseconds without a heartbeat after which the dataplane counts as
    /// hung (default 10; at least twice `heartbeat_ms` and 4). It also bounds
    /// the detection of a death: the kernel closes a killed dataplane's socket
    /// only after releasing its packet sockets (an RCU grace period each).
    pub timeout_ms: Option<Spanned<u32>>,
    /// `bypass` (default): forward in the kernel while the dataplane is down;
    /// `hold`: do nothing (traffic stops: fail-closed), but log and count.
    #[serde(default)]
    pub on_failure: GuardFailureCfg,
}

/// What the guard does when the dataplane dies or hangs.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GuardFailureCfg {
    /// Install the kernel bypass (fail-open).
    #[default]
    Bypass,
    /// Leave the interfaces alone: traffic stops (fail-closed).
    Hold,
}

/// A list that may also be written as an empty key (`rules:` with every
/// entry commented out), which YAML reads as null.
fn seq_or_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Option::<Vec<T>>::deserialize(d).map(Option::unwrap_or_default)
}

/// `dataplane:` — workers and hot-path tuning.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneCfg {
    /// One entry per worker thread.
    #[serde(default = "default_workers")]
    pub workers: Vec<WorkerCfg>,
    /// Packets per receive burst (1..=32).
    #[serde(default = "default_burst")]
    pub burst: Spanned<u32>,
    /// Entries in each worker's exact-match flow cache. Rule sets of one or
    /// two tuples (distinct match shapes) are classified without it.
    #[serde(default = "default_flow_cache")]
    pub flow_cache: Spanned<u32>,
    /// Buffers for copies, shared by all chains (a copy that finds none is dropped and counted).
    #[serde(default = "default_copy_buffers")]
    pub copy_buffers: Spanned<u32>,
    /// Capacity of each sink's queue, in copies.
    #[serde(default = "default_sink_queue")]
    pub sink_queue: Spanned<u32>,
    /// What to do with packets whose headers do not parse.
    #[serde(default)]
    pub malformed: MalformedCfg,
    /// Seconds between the one-line rate summaries of `run`; 0 turns them off.
    #[serde(default = "default_stats_interval")]
    pub stats_interval: Spanned<f64>,
    /// Largest share of each worker's time its chains may take (0 < x <= 1;
    /// 1 = no cap); over it, fail-open chains are skipped and counted.
    #[serde(default = "default_monitor_budget")]
    pub monitor_budget: Spanned<f64>,
    /// Consecutive full receive bursts from a port that mean a backlog: chain
    /// work on that port is shed until a burst comes back short. 0 = off.
    #[serde(default = "default_overload_bursts")]
    pub overload_bursts: Spanned<u32>,
    /// The worker watchdog.
    #[serde(default)]
    pub watchdog: WatchdogCfg,
}

/// `dataplane.watchdog:` — a stalled worker's ports go to a bypass forwarder.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogCfg {
    /// Whether workers are watched (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Milliseconds without a heartbeat after which a worker counts as stalled.
    #[serde(default = "default_watchdog_timeout")]
    pub timeout_ms: Spanned<u32>,
    /// Milliseconds between heartbeat checks (at most `timeout_ms`).
    #[serde(default = "default_watchdog_check")]
    pub check_ms: Spanned<u32>,
}

impl Default for WatchdogCfg {
    fn default() -> Self {
        WatchdogCfg { enabled: true, timeout_ms: default_watchdog_timeout(), check_ms: default_watchdog_check() }
    }
}

fn default_true() -> bool {
    true
}
fn default_watchdog_timeout() -> Spanned<u32> {
    unknown(100)
}
fn default_watchdog_check() -> Spanned<u32> {
    unknown(10)
}

impl Default for DataplaneCfg {
    fn default() -> Self {
        DataplaneCfg {
            workers: default_workers(),
            burst: default_burst(),
            flow_cache: default_flow_cache(),
            copy_buffers: default_copy_buffers(),
            sink_queue: default_sink_queue(),
            malformed: MalformedCfg::default(),
            stats_interval: default_stats_interval(),
            monitor_budget: default_monitor_budget(),
            overload_bursts: default_overload_bursts(),
            watchdog: WatchdogCfg::default(),
        }
    }
}

fn unknown<T>(value: T) -> Spanned<T> {
    let loc = serde_saphyr::Location::UNKNOWN;
    Spanned::new(value, loc, loc)
}
fn default_workers() -> Vec<WorkerCfg> {
    vec![WorkerCfg { core: None, queues: None }]
}
fn default_burst() -> Spanned<u32> {
    unknown(dataplane::BURST as u32)
}
fn default_flow_cache() -> Spanned<u32> {
    unknown(65_536)
}
fn default_copy_buffers() -> Spanned<u32> {
    unknown(8_192)
}
fn default_sink_queue() -> Spanned<u32> {
    unknown(4_096)
}
fn default_stats_interval() -> Spanned<f64> {
    unknown(5.0)
}
fn default_monitor_budget() -> Spanned<f64> {
    unknown(0.3)
}
fn default_overload_bursts() -> Spanned<u32> {
    unknown(8)
}

/// One worker thread.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerCfg {
    /// The CPU core it is pinned to; unpinned when absent.
    pub core: Option<Spanned<usize>>,
    /// `dpdk` ports: the (port, rx queue) pairs this worker polls, as
    /// `"name:queue"`. When no worker lists any, queue q of every DPDK port
    /// goes to worker q.
    pub queues: Option<Vec<Spanned<String>>>,
}

/// Policy for packets whose headers do not parse.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MalformedCfg {
    /// Count them and forward them (keyed as far as they parse).
    #[default]
    Forward,
    /// Count them and drop them.
    Drop,
}

/// One port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortCfg {
    /// Unique name; used in rules (`in_port`), links, counters and capture interface names.
    pub name: Spanned<String>,
    /// The backend.
    #[serde(rename = "type")]
    pub kind: Spanned<PortKind>,
    /// `pcap`: capture file read as the port's input.
    pub rx: Option<Spanned<PathBuf>>,
    /// `pcap`: capture file the port's output is written to (`.pcapng` or `.pcap`).
    pub tx: Option<Spanned<PathBuf>>,
    /// `af_packet`: the Linux interface (a VM's tap or veth host end).
    pub interface: Option<Spanned<String>>,
    /// `af_packet`, `dpdk`: receive frames for any MAC (default true).
    pub promiscuous: Option<bool>,
    /// `dpdk`: the device: a PCI address (`0000:01:00.0`) or a vdev string
    /// (`net_memif0,role=server,socket=/run/vm1.sock`).
    pub device: Option<Spanned<String>>,
    /// `dpdk`: receive queues (default 1).
    pub rx_queues: Option<Spanned<u16>>,
    /// `dpdk`: transmit queues (default: the number of workers).
    pub tx_queues: Option<Spanned<u16>>,
    /// `dpdk`: descriptors per receive queue (default 1024).
    pub rx_descriptors: Option<Spanned<u16>>,
    /// `dpdk`: descriptors per transmit queue (default 1024).
    pub tx_descriptors: Option<Spanned<u16>>,
    /// `dpdk`: MTU to set (default: the device's).
    pub mtu: Option<Spanned<u16>>,
    /// `af_packet`: transmit straight to the driver, bypassing the qdisc (default true).
    pub qdisc_bypass: Option<bool>,
    /// `af_packet`: every worker polls this interface, PACKET_FANOUT spreading
    /// flows over them by the kernel's symmetric flow hash (both directions of
    /// a flow on one worker). All ports of a link or bridge must agree.
    pub fanout: Option<bool>,
}

/// Port backends that can be configured.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// A capture file in, a capture file out.
    Pcap,
    /// A Linux interface through PACKET_MMAP rings, busy polled.
    AfPacket,
    /// A DPDK ethdev (PCI NIC or vdev); needs a binary built with the `dpdk` feature.
    Dpdk,
}

/// A MAC-learning bridge: frames go to the port their destination MAC was
/// learned on, unknown and broadcast destinations are flooded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeCfg {
    /// Name (for logs and counters).
    pub name: Spanned<String>,
    /// Its ports (at least two; a port is in one link or one bridge).
    pub ports: Spanned<Vec<Spanned<String>>>,
    /// Seconds a learned MAC is kept without traffic (default 300).
    pub ageing_seconds: Option<Spanned<f64>>,
}

/// One sink. Which fields apply depends on `type`; the others are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkCfg {
    /// Unique name, used by `copy` stages.
    pub name: Spanned<String>,
    /// The sink type.
    #[serde(rename = "type")]
    pub kind: Spanned<SinkKind>,
    /// `pcapng`: the file, or with rotation the file name pattern
    /// (`%Y %m %d %H %M %S` in UTC, `%n` a sequence number).
    pub path: Option<Spanned<PathBuf>>,
    /// `pcapng`: start a new file when this one reaches this many megabytes (10^6 bytes).
    pub rotate_mb: Option<Spanned<f64>>,
    /// `pcapng`: start a new file after this many seconds.
    pub rotate_seconds: Option<Spanned<f64>>,
    /// `pcapng`: keep at most this many files (the oldest are deleted).
    pub keep: Option<Spanned<u32>>,
    /// `pcapng`: when to fsync: `never` (default), `on-rotate`, `every-flush`.
    pub fsync: Option<Spanned<FsyncCfg>>,
    /// `port`: the dataplane port copies are transmitted on (the tool port).
    pub port: Option<Spanned<String>>,
    /// `port`: VLAN id pushed on the copies (0..=4095).
    pub vlan: Option<Spanned<u16>>,
    /// `erspan`, `vxlan`, `gre`: the remote analyser's address.
    pub destination: Option<Spanned<std::net::IpAddr>>,
    /// `erspan`, `vxlan`, `gre`: source address (default: the one of the route to the destination).
    pub source: Option<Spanned<std::net::IpAddr>>,
    /// `vxlan`: VNI of the copies (0..=16777215).
    pub vni: Option<Spanned<u32>>,
    /// `vxlan`: UDP destination port (default 4789).
    pub dst_port: Option<Spanned<u16>>,
    /// `erspan`: session id (0..=1023).
    pub session: Option<Spanned<u16>>,
    /// `erspan`: 2 (type II) or 3 (type III, with timestamps).
    pub erspan_type: Option<Spanned<u8>>,
}

/// Sink types that can be configured.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// A pcapng file (optionally rotated), one interface per ingress port, the rule in each packet's comment.
    Pcapng,
    /// A dataplane port used as a tool port.
    Port,
    /// ERSPAN type II or III over GRE to a remote analyser.
    Erspan,
    /// VXLAN to a remote address.
    Vxlan,
    /// GRE transparent Ethernet bridging to a remote address.
    Gre,
}

/// fsync policy of a pcapng sink.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncCfg {
    /// Leave it to the kernel.
    #[default]
    Never,
    /// fsync each file when it is closed by rotation.
    OnRotate,
    /// fsync whenever the sink flushes (about every idle moment).
    EveryFlush,
}

/// One service chain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainCfg {
    /// Unique name, used by rules.
    pub name: Spanned<String>,
    /// What happens to the chain's traffic when it cannot monitor it.
    #[serde(default)]
    pub on_failure: OnFailureCfg,
    /// The stages, in order.
    pub stages: Vec<Spanned<StageCfg>>,
}

/// A chain's failure policy.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailureCfg {
    /// Copies are lost, originals keep flowing.
    #[default]
    FailOpen,
    /// The chain's originals are dropped while it cannot copy them.
    FailClosed,
}

/// One stage of a chain; `copy` is last.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StageCfg {
    /// Copy only packets that also match these fields (as in rules).
    Filter(Box<MatchCfg>),
    /// Copy one packet in N, or every packet of one flow in N.
    Sample {
        /// N.
        one_in: Spanned<u32>,
        /// `packet` (default) or `flow`.
        #[serde(default)]
        per: SamplePer,
        /// Seed, for repeatable runs.
        #[serde(default)]
        seed: u64,
    },
    /// Drop copies of the same packet seen again within the window.
    Dedup {
        /// Window in milliseconds.
        window_ms: Spanned<f64>,
    },
    /// Remove overlay and VLAN headers from copies (outermost first).
    Strip(Spanned<Vec<Spanned<StripCfg>>>),
    /// Cut copies to a snap length.
    Slice {
        /// Bytes kept (14..=65535).
        snaplen: Spanned<u32>,
    },
    /// Token-bucket caps on the chain's copies.
    Budget {
        /// Copies per second.
        pps: Option<Spanned<u64>>,
        /// Copied bits per second.
        bps: Option<Spanned<u64>>,
    },
    /// Stall the worker once (test builds only, feature `chaos`).
    #[cfg(feature = "chaos")]
    Stall {
        /// The stage's N-th packet in each worker stalls it.
        after: Spanned<u64>,
        /// Milliseconds.
        ms: Spanned<u64>,
    },
    /// Copy the packet to sinks.
    Copy {
        /// Sink names.
        to: Vec<Spanned<String>>,
    },
}

/// What `sample` picks.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SamplePer {
    /// One packet in N.
    #[default]
    Packet,
    /// Every packet of one flow (both directions) in N.
    Flow,
}

/// Layers `strip` removes.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StripCfg {
    /// VXLAN (UDP 4789).
    Vxlan,
    /// Geneve (UDP 6081).
    Geneve,
    /// 802.1Q / 802.1ad tags.
    Vlan,
}

/// One steering rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleCfg {
    /// Unique name; shown in counters and in every copy's annotation.
    pub name: Spanned<String>,
    /// Higher wins; equal priorities must not overlap.
    pub priority: Spanned<u32>,
    /// Which packets; an empty match matches everything.
    #[serde(rename = "match", default)]
    pub matches: MatchCfg,
    /// Also match the reverse direction of the conversation.
    #[serde(default)]
    pub symmetric: bool,
    /// The chain that steered packets go through.
    pub chain: Option<Spanned<String>>,
    /// `drop` instead of a chain.
    pub action: Option<Spanned<ActionCfg>>,
}

/// Actions other than a chain.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ActionCfg {
    /// Drop the matched packets (counted under the rule).
    Drop,
}

/// A rule's match fields; absent fields match anything.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchCfg {
    /// Ingress port name.
    pub in_port: Option<Spanned<String>>,
    /// Source MAC.
    pub src_mac: Option<Spanned<MacCfg>>,
    /// Destination MAC.
    pub dst_mac: Option<Spanned<MacCfg>>,
    /// Outer VLAN id (0..=4095).
    pub vlan: Option<Spanned<u16>>,
    /// Inner VLAN id of QinQ frames (0..=4095).
    pub inner_vlan: Option<Spanned<u16>>,
    /// EtherType after VLAN tags: a number or ipv4, ipv6, arp, lldp.
    pub ethertype: Option<Spanned<EtherTypeCfg>>,
    /// Source address or network (CIDR), IPv4 or IPv6.
    pub src: Option<Spanned<CidrCfg>>,
    /// Destination address or network (CIDR), IPv4 or IPv6.
    pub dst: Option<Spanned<CidrCfg>>,
    /// IP protocol: tcp, udp, sctp, icmp, icmpv6, or a number.
    pub proto: Option<Spanned<ProtoCfg>>,
    /// Source port or range (`1024-65535`); needs proto tcp, udp or sctp.
    pub src_port: Option<Spanned<PortRangeCfg>>,
    /// Destination port or range; needs proto tcp, udp or sctp.
    pub dst_port: Option<Spanned<PortRangeCfg>>,
    /// VNI of VXLAN or Geneve traffic (the other fields then match the inner headers).
    pub vni: Option<Spanned<u32>>,
}

/// A MAC address from YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacCfg(pub MacAddr);

impl<'de> Deserialize<'de> for MacCfg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(MacCfg).map_err(serde::de::Error::custom)
    }
}

/// An IP network from YAML: `10.0.0.0/24`, `fd00::/64`, or a bare address (a host route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidrCfg(pub IpNet);

impl std::str::FromStr for CidrCfg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let net: IpNet = if s.contains('/') {
            s.parse().map_err(|_| format!("`{s}` is not an IP network (want e.g. 10.0.0.0/24 or fd00::/64)"))?
        } else {
            let ip: std::net::IpAddr = s
                .parse()
                .map_err(|_| format!("`{s}` is not an IP address or network (want e.g. 10.0.0.5 or 10.0.0.0/24)"))?;
            IpNet::from(ip)
        };
        if net.trunc() != net {
            return Err(format!("`{s}` has host bits set beyond the prefix; did you mean {}?", net.trunc()));
        }
        Ok(CidrCfg(net))
    }
}

impl<'de> Deserialize<'de> for CidrCfg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Accepts a YAML integer or a string holding a decimal or `0x` hex number.
fn number_or_name<'de, D: Deserializer<'de>>(
    d: D,
    what: &str,
    names: &[(&str, u32)],
    max: u32,
) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Str(String),
    }
    let v = match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => n,
        NumOrStr::Str(s) => {
            let t = s.trim().to_ascii_lowercase();
            if let Some(&(_, v)) = names.iter().find(|(n, _)| *n == t) {
                v as u64
            } else if let Some(hex) = t.strip_prefix("0x") {
                u64::from_str_radix(hex, 16)
                    .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a valid {what}")))?
            } else {
                let known: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
                t.parse().map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{s}` is not a valid {what} (a number or one of: {})",
                        known.join(", ")
                    ))
                })?
            }
        }
    };
    if v > max as u64 {
        return Err(serde::de::Error::custom(format!("{v} is out of range for a {what} (0..={max})")));
    }
    Ok(v as u32)
}

/// An IP protocol number from YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoCfg(pub u8);

/// Protocol names accepted in `proto:`.
pub const PROTO_NAMES: &[(&str, u32)] = &[("icmp", 1), ("tcp", 6), ("udp", 17), ("icmpv6", 58), ("sctp", 132)];

impl<'de> Deserialize<'de> for ProtoCfg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        number_or_name(d, "protocol", PROTO_NAMES, 255).map(|v| ProtoCfg(v as u8))
    }
}

/// An EtherType from YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtherTypeCfg(pub u16);

impl<'de> Deserialize<'de> for EtherTypeCfg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const NAMES: &[(&str, u32)] = &[("ipv4", 0x0800), ("arp", 0x0806), ("ipv6", 0x86dd), ("lldp", 0x88cc)];
        number_or_name(d, "ethertype", NAMES, 0xffff).map(|v| EtherTypeCfg(v as u16))
    }
}

/// A port or an inclusive port range from YAML: `80` or `"8000-8080"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRangeCfg(pub PortRange);

impl<'de> Deserialize<'de> for PortRangeCfg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NumOrStr {
            Num(u64),
            Str(String),
        }
        let bad = |s: &str| {
            serde::de::Error::custom(format!("`{s}` is not a port or port range (want e.g. 443 or 8000-8080)"))
        };
        let parse_port = |s: &str| -> Result<u16, D::Error> { s.trim().parse::<u16>().map_err(|_| bad(s)) };
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(n) => u16::try_from(n)
                .map(|p| PortRangeCfg(PortRange::single(p)))
                .map_err(|_| serde::de::Error::custom(format!("{n} is out of range for a port (0..=65535)"))),
            NumOrStr::Str(s) => {
                let (lo, hi) = match s.split_once('-') {
                    Some((a, b)) => (parse_port(a)?, parse_port(b)?),
                    None => {
                        let p = parse_port(&s)?;
                        (p, p)
                    }
                };
                if lo > hi {
                    return Err(serde::de::Error::custom(format!("port range `{s}` is empty: {lo} > {hi}")));
                }
                Ok(PortRangeCfg(PortRange { lo, hi }))
            }
        }
    }
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortKind::Pcap => f.write_str("pcap"),
            PortKind::AfPacket => f.write_str("af_packet"),
            PortKind::Dpdk => f.write_str("dpdk"),
        }
    }
}

/// Reads and parses a configuration file (syntax and types only; see
/// [`crate::compile::compile`] for the cross-checks).
pub fn load(path: &Path) -> Result<(Config, String), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: 0,
        column: 0,
        field: "(file)".into(),
        message: format!("cannot read: {e}"),
    })?;
    let cfg = parse_str(&text, &file)?;
    Ok((cfg, file))
}

/// Parses configuration text; `file` is only used in error messages.
pub fn parse_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    parse_as(text, file)
}

/// Parses YAML (or JSON, which is YAML) text into any configuration type
/// (a whole file, one rule), with errors located like [`parse_str`]'s.
pub fn parse_as<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T, ConfigError> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let (line, column) = e.location().map(|l| (l.line() as u32, l.column() as u32)).unwrap_or((0, 0));
        let plain = e.without_snippet().to_string();
        // The library prefixes its message with the position; ours goes first already.
        let mut message = strip_position_prefix(&plain);
        // "invalid u32" and the like do not say what was found: quote it from the file.
        if message.starts_with("invalid ") {
            if let Some(found) = token_at(text, line, column) {
                message = format!("{message}: found `{found}`");
            }
        }
        ConfigError { file: file.to_string(), line, column, field: yaml_path_at(text, line, column), message }
    })
}

/// The scalar starting at `line`:`column` (1-based), as written.
fn token_at(text: &str, line: u32, column: u32) -> Option<&str> {
    let l = text.lines().nth(line.checked_sub(1)? as usize)?;
    let rest = l.get(column.checked_sub(1)? as usize..)?;
    let end = rest.find([',', '}', ']', '#']).unwrap_or(rest.len());
    let tok = rest[..end].trim();
    (!tok.is_empty()).then_some(tok)
}

/// The library's message without the position it puts in front
/// (`line 3 column 5: `) or behind (` at line 3, column 5`): ours goes first.
fn strip_position_prefix(msg: &str) -> String {
    let m = msg.trim();
    let mut m = m.strip_prefix("error: ").unwrap_or(m);
    if let Some(rest) = m.strip_prefix("line ") {
        if let Some(idx) = rest.find(": ") {
            if rest[..idx].contains("column") {
                m = rest[idx + 2..].trim();
            }
        }
    }
    if let Some(idx) = m.rfind(" at line ") {
        if m[idx..].contains(", column ") && m[idx + 9..].chars().all(|c| c.is_ascii_digit() || ", column".contains(c))
        {
            m = &m[..idx];
        }
    }
    m.to_string()
}

/// The field path (`rules[1].match.src`) of the block-style YAML node at
/// `line`:`column`, worked out from indentation. Used to name the field in
/// errors the YAML library reports by position only.
pub fn yaml_path_at(text: &str, line: u32, column: u32) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if line == 0 || line as usize > lines.len() {
        return "(document)".into();
    }
    // Walk up from the error line, collecting the nearest key at each smaller indentation.
    let mut parts: Vec<String> = Vec::new();
    let mut limit = column.saturating_sub(1) as usize + 1; // anything left of the error column is a parent
    let mut idx = line as usize - 1;
    loop {
        let raw = lines[idx];
        let content = raw.split(" #").next().unwrap_or(raw);
        let indent = content.len() - content.trim_start().len();
        let trimmed = content.trim_start();
        if !trimmed.is_empty() && !trimmed.starts_with('#') && indent < limit {
            // A line such as `  - name: a` opens a list item at `indent` and a key at indent+2.
            let (item_indent, rest) = if let Some(r) = trimmed.strip_prefix("- ") {
                (Some(indent), r.trim_start())
            } else if trimmed == "-" {
                (Some(indent), "")
            } else {
                (None, trimmed)
            };
            let key_indent = if item_indent.is_some() { indent + (trimmed.len() - rest.len()) } else { indent };
            if let Some((key, _)) = rest.split_once(':') {
                if key_indent < limit && !key.contains(['{', '[', '"', '\'']) {
                    parts.push(key.trim().to_string());
                    limit = key_indent;
                }
            }
            if let Some(ii) = item_indent {
                if ii < limit || key_indent <= limit {
                    let n = list_index(&lines, idx, ii);
                    parts.push(format!("[{n}]"));
                    limit = ii;
                }
            }
        }
        if idx == 0 || limit == 0 {
            break;
        }
        idx -= 1;
    }
    // Inside a flow mapping or sequence on the error line (`match: { src: x }`),
    // the keys between the opening brace and the error column.
    let line_text = lines[line as usize - 1];
    let col = (column.saturating_sub(1) as usize).min(line_text.len());
    let flow = flow_path(line_text.get(..col).unwrap_or(line_text));
    let mut parts: Vec<String> = parts.into_iter().rev().collect();
    parts.extend(flow);
    let mut out = String::new();
    for p in parts.iter() {
        if p.starts_with('[') || out.is_empty() {
            out.push_str(p);
        } else {
            out.push('.');
            out.push_str(p);
        }
    }
    if out.is_empty() {
        "(document)".into()
    } else {
        out
    }
}

/// The field path at `line`:`column` (1-based) of a JSON text, which is
/// all flow collections, whatever its line breaks.
pub fn json_path_at(text: &str, line: u32, column: u32) -> String {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line as usize {
            offset += l.char_indices().nth(column.saturating_sub(1) as usize).map_or(l.len(), |(o, _)| o);
            break;
        }
        offset += l.len();
    }
    let parts = flow_path(&text[..offset.min(text.len())]);
    let mut out = String::new();
    for p in &parts {
        if !p.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(p);
    }
    if out.is_empty() {
        "(document)".into()
    } else {
        out
    }
}

/// The path inside flow collections (`{ a: 1, b: [x, y] }`) that a position
/// at the end of `prefix` (one line, up to the error column) lies in.
fn flow_path(prefix: &str) -> Vec<String> {
    // One frame per open `{` or `[`: the key (or index) being read in it.
    enum Frame {
        Map(Option<String>),
        Seq(usize),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut token = String::new();
    let mut quote: Option<char> = None;
    for c in prefix.chars() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            token.push(c);
            continue;
        }
        match c {
            '"' | '\'' => {
                quote = Some(c);
                token.push(c);
            }
            '{' => {
                stack.push(Frame::Map(None));
                token.clear();
            }
            '[' => {
                stack.push(Frame::Seq(0));
                token.clear();
            }
            '}' | ']' => {
                stack.pop();
                token.clear();
            }
            ',' => {
                match stack.last_mut() {
                    Some(Frame::Map(k)) => *k = None,
                    Some(Frame::Seq(n)) => *n += 1,
                    None => {}
                }
                token.clear();
            }
            ':' => {
                if let Some(Frame::Map(k)) = stack.last_mut() {
                    let t = token.trim().trim_matches(['"', '\'']);
                    if !t.is_empty() {
                        *k = Some(t.to_string());
                    }
                }
                token.clear();
            }
            _ => token.push(c),
        }
    }
    stack
        .into_iter()
        .filter_map(|f| match f {
            Frame::Map(k) => k,
            Frame::Seq(n) => Some(format!("[{n}]")),
        })
        .collect()
}

/// Which item of its list the `- ` at `lines[idx]` (indentation `indent`) is.
fn list_index(lines: &[&str], idx: usize, indent: usize) -> usize {
    let mut n = 0;
    for raw in lines[..idx].iter().rev() {
        let t = raw.trim_start();
        let ind = raw.len() - t.len();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if ind < indent {
            break;
        }
        if ind == indent {
            if t.starts_with("- ") || t == "-" {
                n += 1;
            } else {
                break;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_of_nested_fields() {
        let y = "ports:\n  - name: a\n    type: pcap\nrules:\n  - name: r1\n    priority: 1\n  - name: r2\n    priority: x\n    match:\n      src: 10.0.0.300/24\n";
        assert_eq!(yaml_path_at(y, 8, 15), "rules[1].priority");
        assert_eq!(yaml_path_at(y, 10, 12), "rules[1].match.src");
        assert_eq!(yaml_path_at(y, 2, 13), "ports[0].name");
        let f = "rules:\n  - { name: r, priority: 1, match: { src: 10.0.0.1/33 }, chain: c }\n";
        assert_eq!(yaml_path_at(f, 2, 47), "rules[0].match.src");
        let f = "links:\n  - [a, b]\n  - [c, d]\n";
        assert_eq!(yaml_path_at(f, 3, 8), "links[1][1]");
    }

    #[test]
    fn type_errors_name_field_line_and_column() {
        let y = "ports:\n  - name: a\n    type: pcap\nrules:\n  - name: r1\n    priority: high\n";
        let e = parse_str(y, "c.yaml").unwrap_err();
        assert_eq!((e.line, e.column), (6, 15));
        assert_eq!(e.field, "rules[0].priority");
        assert!(e.to_string().starts_with("c.yaml:6:15: rules[0].priority: "), "{e}");
        assert!(e.message.ends_with("found `high`"), "{e}");
    }

    #[test]
    fn bad_cidr_is_reported_where_it_is() {
        let y = "ports: []\nrules:\n  - name: r1\n    priority: 1\n    match:\n      dst: 10.0.0.300/24\n";
        let e = parse_str(y, "c.yaml").unwrap_err();
        assert_eq!((e.line, e.column, e.field.as_str()), (6, 12, "rules[0].match.dst"));
        assert!(e.message.contains("`10.0.0.300/24` is not an IP network"), "{}", e.message);
    }

    #[test]
    fn cidr_forms() {
        assert_eq!("10.0.0.5".parse::<CidrCfg>().unwrap().0.to_string(), "10.0.0.5/32");
        assert_eq!("fd00::/64".parse::<CidrCfg>().unwrap().0.to_string(), "fd00::/64");
        let e = "10.0.0.5/24".parse::<CidrCfg>().unwrap_err();
        assert!(e.contains("did you mean 10.0.0.0/24"), "{e}");
    }

    #[test]
    fn ports_protocols_and_ethertypes() {
        let y = "ports: []\nrules:\n  - name: r\n    priority: 1\n    match: { proto: tcp, src_port: \"1000-2000\", dst_port: 80, ethertype: 0x0800 }\n";
        let c = parse_str(y, "c").unwrap();
        let m = &c.rules[0].matches;
        assert_eq!(m.proto.as_ref().unwrap().value, ProtoCfg(6));
        assert_eq!(m.src_port.as_ref().unwrap().value.0, PortRange { lo: 1000, hi: 2000 });
        assert_eq!(m.dst_port.as_ref().unwrap().value.0, PortRange::single(80));
        assert_eq!(m.ethertype.as_ref().unwrap().value, EtherTypeCfg(0x0800));
        let bad = "ports: []\nrules:\n  - name: r\n    priority: 1\n    match: { dst_port: \"90-80\" }\n";
        assert!(parse_str(bad, "c").unwrap_err().message.contains("is empty"));
    }

    #[test]
    fn empty_lists_may_be_written_as_bare_keys() {
        let c = parse_str("ports: []\nrules:\n  # none yet\nchains:\n", "c").unwrap();
        assert!(c.rules.is_empty() && c.chains.is_empty());
    }

    #[test]
    fn unknown_fields_and_truncated_yaml() {
        let e = parse_str("ports: []\nrulez: []\n", "c").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1));
        assert!(e.message.contains("unknown field `rulez`"), "{}", e.message);
        let e = parse_str("ports:\n  - name: [a\n", "c").unwrap_err();
        assert!(e.line >= 2, "{e}");
    }
}
