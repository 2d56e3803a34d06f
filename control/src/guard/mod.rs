//! `flowsteer guard`: the process bypass (fail-open layer 5).
//!
//! A separate process, kept running by the service manager next to the
//! dataplane, that makes sure flowsteer is never the reason VM traffic
//! stops: when the dataplane dies or hangs, the guard joins each link's and
//! each bridge's Linux interfaces in the kernel ([`bypass`]), and takes that
//! bypass away again when the dataplane is back.
//!
//! **Detection.** The guard listens on `guard.heartbeat` (a Unix stream
//! socket); the dataplane connects and sends a heartbeat every
//! `heartbeat_ms` ([`crate::heartbeat`]). Death is EOF on that socket (the
//! kernel closes it when the process dies, however it dies), seen at once;
//! a hang is no heartbeat for `timeout_ms`. The guard is the listening side
//! because it is the long-lived party: it owns the socket path, and a
//! restarted dataplane is noticed by `accept`, not by polling.
//!
//! **Hand-over, without duplicates.** A packet socket sees every frame
//! before tc ingress and the bridge do, so a live dataplane and a bypass
//! would both deliver it. The guard acknowledges each heartbeat only while
//! no bypass is installed, and each acknowledgement is a lease: no bypass
//! until `timeout_ms` after that heartbeat. The dataplane forwards only
//! frames received inside its lease, and after a bypass only frames
//! received after the guard removed it ([`dataplane::handover`]). So:
//! * death: EOF -> install the bypass (one netlink batch);
//! * hang: deadline missed -> install; the dataplane, when it resumes,
//!   finds its lease expired and discards what waited in its rings;
//! * back (a heartbeat on a new connection, or again on a hung one): remove
//!   the bypass (the kernel acknowledges), then acknowledge the heartbeat;
//!   the dataplane forwards what it receives from then on.
//!
//! At start the guard waits `timeout_ms` for a dataplane; if none comes it
//! installs the bypass (a previous guard's bypass is taken over as is).
//!
//! **`on_failure: hold`** leaves the interfaces alone: traffic stops while
//! the dataplane is down (fail-closed, for strict policies); the failure is
//! logged and counted all the same.
//!
//! **Stopping the guard** (SIGTERM/SIGINT): with the dataplane alive it
//! removes everything it made (clsact qdiscs it added, its bridges) and
//! exits; with the dataplane down it leaves the bypass in place, so traffic
//! keeps flowing, and says so: a guard started later takes it over, and
//! `flowsteer guard --remove` takes it away.
//!
//! Counters (printed at exit): failures (deaths, hangs), bypasses installed
//! and removed, the last and worst install and remove times.

pub mod bypass;
mod netlink;
mod sys;

use crate::compile::Plan;
use crate::config::{Config, ConfigError, GuardFailureCfg, PortKind, Pos};
use crate::heartbeat::{Frame, FrameReader, FRAME_LEN};
use bypass::{KernelBypass, Segment};
use dataplane::packet::PortId;
use std::io::{self, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Default milliseconds between heartbeats.
pub const DEFAULT_HEARTBEAT_MS: u32 = 2;
/// Default milliseconds without a heartbeat before the dataplane counts as hung.
pub const DEFAULT_TIMEOUT_MS: u32 = 10;
/// The sysctl that decides whether receive timestamps are taken when a frame
/// is queued (1, the kernel's default) or when it is received (0).
const TSTAMP_PREQUEUE: &str = "/proc/sys/net/core/netdev_tstamp_prequeue";
/// The prefix of the Linux bridges the guard creates for bridge bypasses.
pub const BRIDGE_PREFIX: &str = "fsg-";

/// The `guard:` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSettings {
    /// The Unix socket the guard listens on.
    pub socket: PathBuf,
    /// Time between heartbeats.
    pub heartbeat: Duration,
    /// Time without a heartbeat after which the dataplane counts as hung.
    pub timeout: Duration,
    /// Bypass or hold.
    pub on_failure: GuardFailureCfg,
}

impl GuardSettings {
    /// How long after a heartbeat's send time an acknowledgement lets the
    /// dataplane forward: one millisecond short of the guard's timeout,
    /// which covers the time between a frame entering the ring and tc
    /// ingress seeing it.
    pub fn lease(&self) -> Duration {
        self.timeout.saturating_sub(Duration::from_millis(1))
    }
}

/// Validates the `guard:` section (and the bridge names it derives).
pub fn settings(cfg: &Config, file: &str) -> Result<Option<GuardSettings>, ConfigError> {
    let Some(g) = &cfg.guard else { return Ok(None) };
    let hb = g.heartbeat_ms.as_ref().map_or(DEFAULT_HEARTBEAT_MS, |s| s.value);
    if let Some(s) = &g.heartbeat_ms {
        if s.value == 0 {
            return Err(Pos::of(s, "guard.heartbeat_ms").error(file, "must be at least 1"));
        }
    }
    let timeout = g.timeout_ms.as_ref().map_or(DEFAULT_TIMEOUT_MS, |s| s.value);
    if timeout < 2 * hb || timeout < 4 {
        let msg = format!("{timeout} ms is too short: at least twice heartbeat_ms ({hb} ms) and at least 4 ms");
        return Err(match &g.timeout_ms {
            Some(s) => Pos::of(s, "guard.timeout_ms").error(file, msg),
            None => Pos::of(&g.heartbeat, "guard.heartbeat_ms").error(file, msg),
        });
    }
    if g.heartbeat.value.as_os_str().is_empty() {
        return Err(Pos::of(&g.heartbeat, "guard.heartbeat").error(file, "needs a socket path"));
    }
    for (i, b) in cfg.bridges.iter().enumerate() {
        if BRIDGE_PREFIX.len() + b.name.value.len() > 15 {
            return Err(Pos::of(&b.name, format!("bridges[{i}].name")).error(
                file,
                format!(
                    "with a guard, at most {} characters: its bypass bridge `{BRIDGE_PREFIX}{}` must fit an interface name (15)",
                    15 - BRIDGE_PREFIX.len(),
                    b.name.value
                ),
            ));
        }
    }
    Ok(Some(GuardSettings {
        socket: g.heartbeat.value.clone(),
        heartbeat: Duration::from_millis(u64::from(hb)),
        timeout: Duration::from_millis(u64::from(timeout)),
        on_failure: g.on_failure,
    }))
}

/// The ports a kernel bypass can cover: Linux-interface (`af_packet`) ports
/// in links and bridges whose every port is one. Others (capture files,
/// DPDK ports) are not the kernel's to forward.
pub fn guarded_ports(plan: &Plan) -> Vec<PortId> {
    let linux = |p: PortId| plan.ports.get(p as usize).is_some_and(|p| p.kind == PortKind::AfPacket);
    let mut out = Vec::new();
    for (a, b) in plan.links.pairs() {
        if linux(a) && linux(b) {
            out.extend([a, b]);
        }
    }
    for br in &plan.bridges {
        if br.ports.iter().all(|&p| linux(p)) {
            out.extend(&br.ports);
        }
    }
    out
}

/// The segments the guard bypasses, by interface name.
pub fn segments(plan: &Plan) -> Vec<Segment> {
    let guarded = guarded_ports(plan);
    let iface = |p: PortId| plan.ports[p as usize].interface.clone().unwrap_or_default();
    let mut out = Vec::new();
    for (a, b) in plan.links.pairs() {
        if guarded.contains(&a) {
            out.push(Segment::Link { a: iface(a), b: iface(b) });
        }
    }
    for br in &plan.bridges {
        if br.ports.first().is_some_and(|p| guarded.contains(p)) {
            out.push(Segment::Bridge {
                linux: format!("{BRIDGE_PREFIX}{}", br.name),
                ports: br.ports.iter().map(|&p| iface(p)).collect(),
                ageing: br.ageing,
            });
        }
    }
    out
}

/// Why the guard could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The configuration has no `guard:` section.
    #[error("no `guard:` section in the configuration")]
    NotConfigured,
    /// An interface is missing or unusable.
    #[error("interface `{name}`: {message}")]
    Interface {
        /// Interface name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The kernel refused a request.
    #[error("{what}: {message}")]
    Netlink {
        /// The request, as `tc`/`ip` would write it.
        what: String,
        /// The kernel's answer.
        message: String,
    },
    /// A socket or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// What the guard did while it ran.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GuardCounters {
    /// Dataplane connections accepted.
    pub connections: u64,
    /// Deaths seen (connection closed).
    pub deaths: u64,
    /// Hangs seen (no heartbeat for `timeout_ms`).
    pub hangs: u64,
    /// Bypasses installed.
    pub installs: u64,
    /// Bypasses removed (hand-backs).
    pub removals: u64,
    /// Failures held (`on_failure: hold`).
    pub holds: u64,
    /// Worst time from detection to the bypass installed, in microseconds.
    pub worst_install_us: u64,
    /// Worst time to remove the bypass, in microseconds.
    pub worst_remove_us: u64,
}

impl GuardCounters {
    /// The counters as `name value` lines.
    pub fn report(&self) -> String {
        format!(
            "guard.connections {}\nguard.deaths {}\nguard.hangs {}\nguard.bypass_installs {}\nguard.bypass_removals {}\nguard.holds {}\nguard.worst_install_us {}\nguard.worst_remove_us {}\n",
            self.connections,
            self.deaths,
            self.hangs,
            self.installs,
            self.removals,
            self.holds,
            self.worst_install_us,
            self.worst_remove_us
        )
    }
}

enum Event {
    Connected(UnixStream),
    Heartbeat { conn: u64, sent_ns: u64 },
    Closed { conn: u64, why: String },
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Started; no dataplane seen yet; a predecessor's bypass may be in place.
    Starting,
    /// The dataplane heartbeats; no bypass.
    Alive,
    /// The dataplane is dead or hung; bypass installed (or held).
    Down,
}

/// Runs the guard for `plan` until `stop` is received (SIGTERM/SIGINT,
/// delivered by `signals` as a message). Returns its counters.
pub fn run(plan: &Plan, signals: mpsc::Receiver<()>) -> Result<GuardCounters, GuardError> {
    let settings = plan.guard.clone().ok_or(GuardError::NotConfigured)?;
    let segs = segments(plan);
    if segs.is_empty() {
        log::warn!("guard: no link or bridge of Linux interfaces to bypass; watching the dataplane only");
    }
    // Every thread of the guard inherits this: a deadline is never missed for want of a CPU.
    if let Err(e) = crate::sched::realtime() {
        log::warn!("guard: running at normal priority ({e}): a busy host may delay it into false alarms");
    }
    if std::fs::read_to_string(TSTAMP_PREQUEUE).is_ok_and(|v| v.trim() == "1") {
        log::warn!(
            "guard: net.core.netdev_tstamp_prequeue is 1: frames are timestamped when queued for receive, not when \
             received, so a receive backlog on a loaded host can misplace the hand-over window (a lost or doubled \
             frame); set it to 0"
        );
    }
    let mut kb = KernelBypass::new(segs)?;
    kb.prepare()?;
    let path = &settings.socket;
    if path.exists() {
        // A guard is the socket's only owner; a stale one is left by a guard that was killed.
        if UnixStream::connect(path).is_ok() {
            return Err(GuardError::Io {
                what: format!("{}", path.display()),
                source: io::Error::new(io::ErrorKind::AddrInUse, "another guard is listening there"),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| GuardError::Io { what: dir.display().to_string(), source: e })?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| GuardError::Io { what: format!("listen on {}", path.display()), source: e })?;
    log::info!(
        "guard: listening on {}; heartbeat {} ms, timeout {} ms, on failure {}",
        path.display(),
        settings.heartbeat.as_millis(),
        settings.timeout.as_millis(),
        match settings.on_failure {
            GuardFailureCfg::Bypass => "bypass",
            GuardFailureCfg::Hold => "hold",
        }
    );
    let (tx, rx) = mpsc::channel();
    let acceptor = tx.clone();
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || {
            for s in listener.incoming() {
                match s {
                    Ok(s) => {
                        if acceptor.send(Event::Connected(s)).is_err() {
                            return;
                        }
                    }
                    Err(e) => log::warn!("guard: accept: {e}"),
                }
            }
        })
        .map_err(|e| GuardError::Io { what: "accept thread".into(), source: e })?;
    let stopper = tx.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.recv().is_ok() {
                let _ = stopper.send(Event::Stop);
            }
        })
        .map_err(|e| GuardError::Io { what: "signal thread".into(), source: e })?;

    let mut g = Guard { settings, kb, tx, counters: GuardCounters::default(), conn: None, next_id: 0, clear_ns: 0 };
    let result = g.event_loop(&rx);
    let _ = std::fs::remove_file(&g.settings.socket);
    result.map(|()| g.counters)
}

struct Guard {
    settings: GuardSettings,
    kb: KernelBypass,
    tx: mpsc::Sender<Event>,
    counters: GuardCounters,
    /// The current dataplane connection: its id and its write side.
    conn: Option<(u64, UnixStream)>,
    next_id: u64,
    /// When the kernel confirmed the last removal of the bypass (wall clock, ns).
    clear_ns: u64,
}

impl Guard {
    fn event_loop(&mut self, rx: &mpsc::Receiver<Event>) -> Result<(), GuardError> {
        let mut state = State::Starting;
        let mut deadline = Instant::now() + self.settings.timeout;
        let mut down_since = Instant::now();
        loop {
            let ev = if state == State::Down {
                rx.recv().ok()
            } else {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(ev) => Some(ev),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        let detected = Instant::now();
                        if state == State::Starting {
                            log::warn!("guard: no dataplane within {} ms of start", self.settings.timeout.as_millis());
                        } else {
                            self.counters.hangs += 1;
                            log::warn!(
                                "guard: dataplane hung: no heartbeat for {} ms",
                                (detected - deadline + self.settings.timeout).as_millis()
                            );
                        }
                        self.fail(detected);
                        state = State::Down;
                        down_since = detected;
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                }
            };
            let Some(ev) = ev else { return Ok(()) };
            match ev {
                Event::Connected(s) => self.accept(s)?,
                Event::Heartbeat { conn, sent_ns } => {
                    if self.conn.as_ref().map(|c| c.0) != Some(conn) {
                        continue;
                    }
                    if state != State::Alive {
                        self.hand_back(state, down_since);
                        state = State::Alive;
                    }
                    deadline = Instant::now() + self.settings.timeout;
                    if let Some((_, w)) = &mut self.conn {
                        // The write side never blocks for long: a dataplane that stops reading is hung,
                        // and the missed heartbeats will say so.
                        let _ = w.write_all(&Frame::Ack { sent_ns, clear_ns: self.clear_ns }.encode());
                    }
                }
                Event::Closed { conn, why } => {
                    if self.conn.as_ref().map(|c| c.0) != Some(conn) {
                        continue;
                    }
                    self.conn = None;
                    if state == State::Alive {
                        let detected = Instant::now();
                        self.counters.deaths += 1;
                        log::warn!("guard: dataplane gone ({why})");
                        self.fail(detected);
                        state = State::Down;
                        down_since = detected;
                    } else {
                        log::info!("guard: dataplane connection closed ({why})");
                    }
                }
                Event::Stop => {
                    self.stop(state);
                    return Ok(());
                }
            }
        }
    }

    /// A dataplane connected: it replaces any previous connection.
    fn accept(&mut self, s: UnixStream) -> Result<(), GuardError> {
        self.next_id += 1;
        let id = self.next_id;
        self.counters.connections += 1;
        if self.conn.is_some() {
            log::warn!("guard: a new dataplane connection replaces the previous one");
        }
        let reader = s.try_clone().map_err(|e| GuardError::Io { what: "dataplane connection".into(), source: e })?;
        let _ = s.set_write_timeout(Some(Duration::from_millis(1)));
        self.conn = Some((id, s));
        // A VM interface may have been re-created with a new index while the dataplane was away.
        if let Err(e) = self.kb.prepare() {
            log::error!("guard: {e}");
        }
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name(format!("conn-{id}"))
            .spawn(move || read_heartbeats(id, reader, &tx))
            .map_err(|e| GuardError::Io { what: "connection thread".into(), source: e })?;
        log::info!("guard: dataplane connected");
        Ok(())
    }

    /// The dataplane died or hung at `detected`: bypass (or hold).
    fn fail(&mut self, detected: Instant) {
        match self.settings.on_failure {
            GuardFailureCfg::Hold => {
                self.counters.holds += 1;
                log::error!("guard: on_failure: hold: traffic stops until the dataplane is back");
            }
            GuardFailureCfg::Bypass => match self.kb.install() {
                Ok(failed) => {
                    let us = detected.elapsed().as_micros() as u64;
                    self.counters.installs += 1;
                    self.counters.worst_install_us = self.counters.worst_install_us.max(us);
                    for f in &failed {
                        log::error!("guard: bypass: {f}");
                    }
                    log::warn!("guard: bypass installed in {us} us ({} segment(s))", self.kb.segments().len());
                }
                Err(e) => log::error!("guard: installing the bypass: {e}"),
            },
        }
    }

    /// The dataplane heartbeats again: remove the bypass; the caller then acknowledges.
    fn hand_back(&mut self, state: State, down_since: Instant) {
        if self.settings.on_failure == GuardFailureCfg::Hold && state == State::Down {
            log::warn!("guard: dataplane back after {} ms", down_since.elapsed().as_millis());
            return;
        }
        let t = Instant::now();
        match self.kb.remove() {
            Ok(failed) => {
                // Frames received from now on are the dataplane's alone.
                self.clear_ns = dataplane::worker::wall_clock_ns();
                let us = t.elapsed().as_micros() as u64;
                for f in &failed {
                    log::error!("guard: removing the bypass: {f}");
                }
                if state == State::Down {
                    self.counters.removals += 1;
                    self.counters.worst_remove_us = self.counters.worst_remove_us.max(us);
                    log::warn!(
                        "guard: dataplane back after {} ms: bypass removed in {us} us",
                        down_since.elapsed().as_millis()
                    );
                } else {
                    log::info!("guard: dataplane heartbeating; no bypass in place");
                }
            }
            Err(e) => log::error!("guard: removing the bypass: {e}"),
        }
    }

    fn stop(&mut self, state: State) {
        if state == State::Down && self.settings.on_failure == GuardFailureCfg::Bypass {
            log::warn!(
                "guard: stopping with the dataplane down: the bypass stays in place (`flowsteer guard --remove` takes it away)"
            );
            return;
        }
        match self.kb.teardown() {
            Ok(failed) => {
                for f in &failed {
                    log::warn!("guard: cleaning up: {f}");
                }
                log::info!("guard: stopped; everything it made is removed");
            }
            Err(e) => log::error!("guard: cleaning up: {e}"),
        }
    }
}

/// Reads one connection's frames and turns them into events.
fn read_heartbeats(id: u64, mut s: UnixStream, tx: &mpsc::Sender<Event>) {
    let mut r = FrameReader::default();
    loop {
        let ev = match r.read_from(&mut s) {
            Ok(None) => continue,
            Ok(Some(b)) => match Frame::decode(&b) {
                Some(Frame::Heartbeat { sent_ns }) => Event::Heartbeat { conn: id, sent_ns },
                _ => Event::Closed { conn: id, why: format!("not a heartbeat: {:02x?}", &b[..FRAME_LEN.min(8)]) },
            },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Event::Closed { conn: id, why: e.to_string() },
        };
        let last = matches!(ev, Event::Closed { .. });
        if tx.send(ev).is_err() || last {
            return;
        }
    }
}

/// Removes a bypass left in place (`flowsteer guard --remove`): filters,
/// enslaved ports, and the qdiscs and bridges the guard creates.
pub fn remove_leftovers(plan: &Plan) -> Result<Vec<String>, GuardError> {
    let mut kb = KernelBypass::new(segments(plan))?;
    kb.prepare()?;
    kb.teardown_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::config::parse_str;

    const PORTS: &str = "ports:
  - { name: a, type: af_packet, interface: veth-a }
  - { name: b, type: af_packet, interface: veth-b }
  - { name: c, type: pcap, rx: in.pcap }
  - { name: d, type: pcap, tx: out.pcap }
links:
  - [a, b]
  - [c, d]
";

    fn plan(guard: &str) -> Result<Plan, ConfigError> {
        let text = format!("{PORTS}{guard}");
        let cfg = parse_str(&text, "g.yaml")?;
        compile(&cfg, "g.yaml")
    }

    #[test]
    fn defaults_and_the_lease() {
        let p = plan("guard:\n  heartbeat: /run/fs.sock\n").unwrap();
        let g = p.guard.unwrap();
        assert_eq!(g.heartbeat, Duration::from_millis(2));
        assert_eq!(g.timeout, Duration::from_millis(10));
        assert_eq!(g.on_failure, GuardFailureCfg::Bypass);
        assert_eq!(g.lease(), Duration::from_millis(9));
        assert!(plan("").unwrap().guard.is_none());
    }

    #[test]
    fn bad_timings_are_located_errors() {
        let e = plan("guard:\n  heartbeat: /s\n  heartbeat_ms: 5\n  timeout_ms: 8\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (12, "guard.timeout_ms"), "{e}");
        assert!(e.message.contains("at least twice heartbeat_ms (5 ms)"), "{e}");
        let e = plan("guard:\n  heartbeat: /s\n  heartbeat_ms: 0\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (11, "guard.heartbeat_ms"), "{e}");
        let e = plan("guard:\n  heartbeat: /s\n  on_failure: sometimes\n").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
        let e = plan("guard:\n  heartbeat: /s\n  timeout: 5\n").unwrap_err();
        assert!(e.to_string().contains("timeout"), "{e}");
    }

    #[test]
    fn a_bridge_name_must_leave_room_for_the_bypass_bridge() {
        let text = "ports:
  - { name: a, type: af_packet, interface: veth-a }
  - { name: b, type: af_packet, interface: veth-b }
bridges:
  - { name: a-very-long-name, ports: [a, b] }
guard:
  heartbeat: /s
";
        let e = compile(&parse_str(text, "g.yaml").unwrap(), "g.yaml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (5, "bridges[0].name"), "{e}");
        assert!(e.message.contains("fsg-a-very-long-name"), "{e}");
    }

    #[test]
    fn only_linux_interfaces_are_bypassed() {
        let p = plan("guard:\n  heartbeat: /s\n").unwrap();
        assert_eq!(guarded_ports(&p), vec![0, 1]);
        assert_eq!(segments(&p), vec![Segment::Link { a: "veth-a".into(), b: "veth-b".into() }]);
    }
}
