//! Restart harness: how long VMs on DPDK ports lose traffic when flowsteer
//! dies (`kill -9`) and a supervisor starts it again, for memif and vhost-user.
//!
//! This process plays the VMs. It initialises its own EAL (own file prefix,
//! hugepages or `--no-huge`) with two peer ports that flowsteer connects to:
//!
//! * `--mode memif`: two `net_memif` servers (`role=server`); flowsteer is
//!   the memif client of both sockets.
//! * `--mode vhost`: two `net_virtio_user` ports with `server=1` (the VM side
//!   is the vhost-user server, like QEMU with `server=on`); flowsteer's
//!   `net_vhost` ports are vhost-user clients (`client=1`).
//!
//! On core 0 it sends numbered UDP packets (the sequence number in the
//! payload) at a fixed rate on port A and receives them on port B, flowsteer
//! forwarding A -> B and copying the stream into a pcapng sink. A supervisor
//! thread starts flowsteer (its worker on core 1) and waits for traffic; then, per
//! trial, it kills flowsteer with SIGKILL, waits `--delay-ms` (0: as fast as
//! a supervisor can; `examples/systemd/flowsteer.service` waits 100 ms),
//! starts it again (each start copies into a pcapng file of its own) and
//! waits until traffic is back and steady. Per trial:
//!
//! * **outage**: last packet through before the kill to first one after;
//! * **kill->1st**: the kill to the first packet through;
//! * **reap**: the kill to the process reaped (the kernel tearing it down);
//! * **start->1st**: the new process's spawn to the first packet through;
//! * **lost**: packets sent from this kill to the next not received
//!   (`refused`: of those, the ones the peer's own tx ring did not take
//!   because the link was down), **dup** and **reord**(ered) arrivals;
//! * flowsteer's start-up phases from its log: EAL init, mempool, ports
//!   started, and spawn to the worker polling;
//! * **copies**: packets in that start's pcapng (tshark), and whether some
//!   were sent after that start (marked `!` when none were).
//!
//! Prints the table, the median and worst, and a `restart:` summary line;
//! exits 1 when traffic did not come back, a packet arrived twice, or a
//! restart wrote no copies. Every process it starts is stopped by PID; its
//! work directory (sockets, configs, logs, pcapng files) and both DPDK
//! runtime directories are removed on exit, also on failure or Ctrl-C
//! (`--dir` keeps the work directory).
//!
//! ```text
//! cargo run --release -p benches --features dpdk --bin restart -- --mode memif|vhost
//!     [--trials 20] [--delay-ms 0] [--rate 100000] [--settle-ms 500] [--memory-mb 512]
//!     [--copy-buffers 8192] [--no-huge] [--flowsteer target/release/flowsteer] [--dir DIR]
//! ```

use dataplane::flow::MacAddr;
use dataplane::wire::build::PacketBuilder;
use dpdk::{DeviceConfig, Eal, EalConfig, EthDev, Mempool, RxBurst, RxQueue, TxBurst, TxQueue, MAX_BURST};
use std::io::{BufRead, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: restart --mode memif|vhost [--trials N] [--delay-ms MS] [--rate PPS] [--settle-ms MS]
               [--memory-mb MB] [--copy-buffers N] [--no-huge] [--flowsteer PATH] [--dir DIR]

  --mode        memif: the peer is the memif server, flowsteer the client;
                vhost: the peer is virtio_user with server=1, flowsteer net_vhost with client=1
  --trials      kill -9 + restart cycles (default 20)
  --delay-ms    supervisor delay between the death and the new start (default 0)
  --rate        packets per second sent through flowsteer (default 100000)
  --settle-ms   steady traffic before each kill (default 500)
  --memory-mb   flowsteer's dpdk.memory_mb (default 512, the shipped default)
  --copy-buffers flowsteer's dataplane.copy_buffers (default 8192, the shipped default)
  --no-huge     no hugepages, for the peer and flowsteer
  --flowsteer   the flowsteer binary (default: next to this one)
  --dir         work directory, kept afterwards (default: a temporary one, removed)";

/// Payload marker of the numbered packets.
const MAGIC: &[u8; 8] = b"FSRESTRT";
/// Offset of the payload in the frame: Ethernet, IPv4 without options, UDP.
const PAYLOAD: usize = 14 + 20 + 8;
/// UDP destination port of the stream (the rule steers it into the copy chain).
const STREAM_PORT: u16 = 5001;
/// An arrival later than this after the previous one ends a gap.
const GAP_NS: u64 = 1_000_000;
/// How long a start may take to bring traffic back before the run fails.
const RESUME_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Memif,
    Vhost,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Memif => "memif",
            Mode::Vhost => "vhost",
        }
    }

    /// The peer's device string for port `i` (0: A, 1: B).
    fn peer_device(self, dir: &Path, i: usize) -> String {
        let sock = dir.join(format!("port{i}.sock"));
        match self {
            Mode::Memif => format!("net_memif{i},role=server,socket={},id=0", sock.display()),
            Mode::Vhost => format!("net_virtio_user{i},path={},server=1,queues=1,queue_size=1024", sock.display()),
        }
    }

    /// flowsteer's device string for port `i`.
    fn flowsteer_device(self, dir: &Path, i: usize) -> String {
        let sock = dir.join(format!("port{i}.sock"));
        match self {
            Mode::Memif => format!("net_memif{i},role=client,socket={},id=0", sock.display()),
            Mode::Vhost => format!("net_vhost{i},iface={},client=1,queues=1", sock.display()),
        }
    }
}

struct Args {
    mode: Mode,
    trials: usize,
    delay: Duration,
    rate: u64,
    settle: Duration,
    memory_mb: u32,
    copy_buffers: u32,
    no_huge: bool,
    flowsteer: PathBuf,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        mode: Mode::Memif,
        trials: 20,
        delay: Duration::ZERO,
        rate: 100_000,
        settle: Duration::from_millis(500),
        memory_mb: 512,
        copy_buffers: 8192,
        no_huge: false,
        flowsteer: std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("flowsteer")))
            .unwrap_or_else(|| PathBuf::from("flowsteer")),
        dir: None,
    };
    let mut mode = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| v.parse::<u64>().map_err(|_| format!("{name}: `{v}` is not a number"));
        match arg.as_str() {
            "--mode" => {
                mode = Some(match value("--mode")?.as_str() {
                    "memif" => Mode::Memif,
                    "vhost" => Mode::Vhost,
                    other => return Err(format!("--mode: `{other}` is neither memif nor vhost")),
                })
            }
            "--trials" => a.trials = number("--trials", value("--trials")?)? as usize,
            "--delay-ms" => a.delay = Duration::from_millis(number("--delay-ms", value("--delay-ms")?)?),
            "--rate" => a.rate = number("--rate", value("--rate")?)?,
            "--settle-ms" => a.settle = Duration::from_millis(number("--settle-ms", value("--settle-ms")?)?),
            "--memory-mb" => {
                a.memory_mb = u32::try_from(number("--memory-mb", value("--memory-mb")?)?)
                    .map_err(|_| "--memory-mb is too large".to_string())?
            }
            "--copy-buffers" => {
                a.copy_buffers = u32::try_from(number("--copy-buffers", value("--copy-buffers")?)?)
                    .map_err(|_| "--copy-buffers is too large".to_string())?
            }
            "--no-huge" => a.no_huge = true,
            "--flowsteer" => a.flowsteer = PathBuf::from(value("--flowsteer")?),
            "--dir" => a.dir = Some(PathBuf::from(value("--dir")?)),
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    a.mode = mode.ok_or("--mode memif|vhost is required")?;
    if a.trials == 0 || !(1_000..=5_000_000).contains(&a.rate) {
        return Err("--trials must be at least 1 and --rate between 1000 and 5000000".into());
    }
    if !a.flowsteer.is_file() {
        return Err(format!(
            "{}: no flowsteer binary there (build it with `cargo build --release --features control/dpdk` or pass --flowsteer)",
            a.flowsteer.display()
        ));
    }
    Ok(a)
}

/// Nanoseconds since the run's base instant.
fn ns(base: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(base).as_nanos() as u64
}

/// What the traffic loop and the supervisor share.
struct Shared {
    base: Instant,
    /// Set when the run ends (supervisor done or failed, or a signal).
    stop: AtomicBool,
    /// Set by SIGINT or SIGTERM.
    interrupted: Arc<AtomicBool>,
    /// Next sequence number to send (= packets sent so far).
    sent: AtomicU64,
    /// Arrival time (ns since base) of the last packet received.
    last_rx: AtomicU64,
    /// Gaps in the arrivals longer than `GAP_NS`: (last arrival before, first after).
    gaps: Mutex<Vec<(u64, u64)>>,
}

/// A bit per sequence number.
#[derive(Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn with_capacity(n: u64) -> Bits {
        Bits(vec![0; (n / 64 + 1) as usize])
    }

    /// Sets bit `i`; returns whether it was set before.
    fn set(&mut self, i: u64) -> bool {
        let w = (i / 64) as usize;
        if w >= self.0.len() {
            self.0.resize((w + 1).next_power_of_two(), 0);
        }
        let was = self.0[w] & (1 << (i % 64)) != 0;
        self.0[w] |= 1 << (i % 64);
        was
    }

    fn get(&self, i: u64) -> bool {
        self.0.get((i / 64) as usize).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn count(&self, range: std::ops::Range<u64>) -> u64 {
        range.filter(|&i| self.get(i)).count() as u64
    }
}

/// What the traffic loop saw, per sequence number.
#[derive(Default)]
struct Stream {
    received: Bits,
    /// Sent, but not taken by the peer's transmit ring (link down, ring full).
    refused: Bits,
    duplicates: Vec<u64>,
    reordered: Vec<u64>,
    /// Frames on B that are not the stream, and anything on A.
    foreign: u64,
}

/// The peer: the VMs' two ports.
struct Peer {
    tx_a: TxQueue,
    rx_a: RxQueue,
    rx_b: RxQueue,
    /// Ports A and B, for their link state.
    devs: [Arc<EthDev>; 2],
    pool: Arc<Mempool>,
    _eal: Arc<Eal>,
}

/// A frame of the stream with room for the sequence number; UDP checksum 0
/// (none, valid for IPv4) so that writing the number needs no checksum.
fn template() -> Vec<u8> {
    let mut payload = [0u8; 16];
    payload[..8].copy_from_slice(MAGIC);
    let mut f = PacketBuilder::ethernet(MacAddr([2, 0, 0, 0, 0, 0xa]), MacAddr([2, 0, 0, 0, 0, 0xb]))
        .ipv4(Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2))
        .udp(5000, STREAM_PORT)
        .payload(&payload)
        .pad_to(64)
        .build();
    f[PAYLOAD - 2..PAYLOAD].copy_from_slice(&[0, 0]);
    f
}

/// The sequence number of a stream frame.
fn seq_of(frame: &[u8]) -> Option<u64> {
    if frame.len() < PAYLOAD + 16 || frame[12..14] != [0x08, 0x00] || &frame[PAYLOAD..PAYLOAD + 8] != MAGIC {
        return None;
    }
    Some(u64::from_be_bytes(frame[PAYLOAD + 8..PAYLOAD + 16].try_into().ok()?))
}

/// Sends at `rate` on A and receives on B until `shared.stop`, on this
/// (pinned) thread. Yields the core when there is nothing to do, so that
/// the peer's own EAL control threads (memif and vhost-user sockets) get it.
fn pump(peer: &mut Peer, shared: &Shared, rate: u64, expected: u64) -> Stream {
    let mut s = Stream {
        received: Bits::with_capacity(expected),
        refused: Bits::with_capacity(expected),
        ..Default::default()
    };
    let mut frame = template();
    let mut rx = RxBurst::default();
    let mut tx = TxBurst::default();
    let start = Instant::now();
    let (mut sent, mut highest, mut last, mut link_check) = (0u64, None::<u64>, 0u64, Instant::now());
    let mut link = [false; 2];
    while !shared.stop.load(Ordering::Relaxed) {
        // virtio_user with server=1 (interrupts off) notices that its
        // vhost-user backend has gone only when its link state is read: once
        // a millisecond while the link is up, as an application watching
        // its link would. It then listens, and its EAL interrupt thread
        // accepts a returning backend and renegotiates the rings; reading
        // the link while it is down would run that reconnect from this
        // thread too, at the same time. memif needs none of this; the reads
        // are harmless there.
        if Instant::now() >= link_check {
            link_check = Instant::now() + Duration::from_millis(1);
            for (d, up) in peer.devs.iter().zip(&mut link) {
                if *up || sent == 0 {
                    *up = d.link_up() == Some(true);
                }
            }
        }
        if shared.interrupted.load(Ordering::Relaxed) {
            shared.stop.store(true, Ordering::Relaxed);
        }
        let mut busy = false;
        let due = (start.elapsed().as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
        let n = due.saturating_sub(sent).min(MAX_BURST as u64);
        if n > 0 {
            busy = true;
            let first = sent;
            for seq in first..first + n {
                frame[PAYLOAD + 8..PAYLOAD + 16].copy_from_slice(&seq.to_be_bytes());
                let Some(mut seg) = peer.pool.alloc() else { break };
                let len = seg.fill(&frame).unwrap_or(0) as u32;
                if tx.push(seg.into_mbuf(), len).is_err() {
                    break;
                }
            }
            // Numbers the pool had no mbuf for count as refused too.
            let taken = peer.tx_a.tx_burst(&mut tx).packets as u64;
            for seq in first + taken..first + n {
                s.refused.set(seq);
            }
            sent += n;
            shared.sent.store(sent, Ordering::Relaxed);
        }
        if peer.rx_b.rx_burst(&mut rx, MAX_BURST) > 0 {
            busy = true;
            let now = ns(shared.base, Instant::now());
            for seg in rx.drain() {
                let Some(seq) = seq_of(seg.bytes()) else {
                    s.foreign += 1;
                    continue;
                };
                if s.received.set(seq) {
                    s.duplicates.push(seq);
                } else if highest.is_some_and(|h| seq < h) {
                    s.reordered.push(seq);
                }
                highest = highest.max(Some(seq));
            }
            if last != 0 && now - last > GAP_NS {
                shared.gaps.lock().unwrap_or_else(|e| e.into_inner()).push((last, now));
            }
            last = now;
            shared.last_rx.store(now, Ordering::Relaxed);
            // Through A and back on B: both links are up again.
            link = [true; 2];
        }
        if peer.rx_a.rx_burst(&mut rx, MAX_BURST) > 0 {
            busy = true;
            s.foreign += rx.drain().count() as u64;
        }
        if !busy {
            std::thread::yield_now();
        }
    }
    s
}

/// One start of flowsteer.
struct Start {
    at: Instant,
    wall_ms: u64,
    pid: u32,
    log: PathBuf,
    pcapng: PathBuf,
}

/// The supervised flowsteer: at most one process at a time, killed and
/// reaped by PID on drop.
struct Flowsteer {
    exe: PathBuf,
    dir: PathBuf,
    mode: Mode,
    prefix: String,
    memory_mb: u32,
    copy_buffers: u32,
    no_huge: bool,
    child: Option<Child>,
    starts: usize,
}

impl Flowsteer {
    /// Writes this start's configuration (its own pcapng file) and spawns
    /// flowsteer; it inherits this thread's CPU affinity (core 1).
    fn start(&mut self) -> Result<Start, String> {
        let n = self.starts;
        self.starts += 1;
        let pcapng = self.dir.join(format!("copies-{n}.pcapng"));
        let config = self.dir.join("flowsteer.yaml");
        let yaml = format!(
            r#"dpdk:
  file_prefix: {prefix}
  memory_mb: {mem}
  no_huge: {no_huge}
  in_memory: true
  eal_args: ["--log-level=lib.eal:warning"]
ports:
  - {{ name: a, type: dpdk, device: "{a}" }}
  - {{ name: b, type: dpdk, device: "{b}" }}
links: [[a, b]]
dataplane:
  workers:
    - core: 1
      queues: ["a:0", "b:0"]
  stats_interval: 0
  copy_buffers: {copy_buffers}
sinks:
  - {{ name: capture, type: pcapng, path: {pcapng} }}
chains:
  - name: copy
    stages:
      - copy: {{ to: [capture] }}
rules:
  - name: stream
    priority: 1
    match: {{ proto: udp, dst_port: {port} }}
    chain: copy
"#,
            prefix = self.prefix,
            mem = self.memory_mb,
            copy_buffers = self.copy_buffers,
            no_huge = self.no_huge,
            a = self.mode.flowsteer_device(&self.dir, 0),
            b = self.mode.flowsteer_device(&self.dir, 1),
            pcapng = pcapng.display(),
            port = STREAM_PORT,
        );
        std::fs::write(&config, yaml).map_err(|e| format!("{}: {e}", config.display()))?;
        let log = self.dir.join(format!("flowsteer-{n}.log"));
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let wall_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let at = Instant::now();
        // setpriv --pdeathsig: flowsteer dies with this thread, also when
        // this process is killed or crashes (DPDK can panic in the peer).
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&self.exe)
            .args(["-v", "run", "-c"])
            .arg(&config)
            .arg("--socket")
            .arg(self.dir.join("ctl.sock"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("setpriv {}: {e} (util-linux)", self.exe.display()))?;
        let pid = child.id();
        self.child = Some(child);
        Ok(Start { at, wall_ms, pid, log, pcapng })
    }

    /// SIGKILL and reap; returns the instants just before the kill and
    /// after the reap (the kernel has torn the process down: its memory,
    /// its sockets).
    fn kill(&mut self) -> (Instant, Instant) {
        let at = Instant::now();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        (at, Instant::now())
    }

    /// Whether the process has exited on its own.
    fn exited(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM (workers drain, sinks flush), SIGKILL after 10 s.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let t = Instant::now();
        while matches!(c.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Flowsteer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}

/// A kill and the start after it.
struct Trial {
    kill: Instant,
    reaped: Instant,
    start: Start,
    /// Sequence numbers from this kill to the next (or the end).
    seqs: std::ops::Range<u64>,
    /// Packets sent when the new process was spawned.
    sent_at_start: u64,
}

/// Waits until a packet arrives after `since`; fails when flowsteer exits,
/// the run is interrupted or nothing comes within `RESUME_TIMEOUT`.
fn wait_traffic(shared: &Shared, fs: &mut Flowsteer, since: Instant, log: &Path) -> Result<(), String> {
    let since = ns(shared.base, since);
    let t = Instant::now();
    while shared.last_rx.load(Ordering::Relaxed) <= since {
        if shared.stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        if fs.exited() {
            return Err(format!("flowsteer exited before traffic came back; its log:\n{}", tail(log)));
        }
        if t.elapsed() > RESUME_TIMEOUT {
            return Err(format!(
                "no traffic through flowsteer {} s after its start; its log:\n{}",
                RESUME_TIMEOUT.as_secs(),
                tail(log)
            ));
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    Ok(())
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Sleeps `d` unless the run stops first.
fn pause(shared: &Shared, d: Duration) -> Result<(), String> {
    let t = Instant::now();
    while t.elapsed() < d {
        if shared.stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        std::thread::sleep(Duration::from_millis(1).min(d));
    }
    Ok(())
}

/// The supervisor: first start, then `trials` kills and restarts; stops
/// flowsteer gracefully at the end. Returns the first start and the trials.
fn supervise(
    args: &Args,
    shared: &Shared,
    fs: &mut Flowsteer,
    first: Option<Start>,
) -> Result<(Start, Vec<Trial>), String> {
    let first = match first {
        Some(f) => f,
        None => fs.start()?,
    };
    wait_traffic(shared, fs, first.at, &first.log)?;
    pause(shared, args.settle)?;
    let mut trials: Vec<Trial> = Vec::new();
    for _ in 0..args.trials {
        let seq = shared.sent.load(Ordering::Relaxed);
        if let Some(prev) = trials.last_mut() {
            prev.seqs.end = seq;
        }
        let (kill, reaped) = fs.kill();
        pause(shared, args.delay)?;
        let start = fs.start()?;
        let sent_at_start = shared.sent.load(Ordering::Relaxed);
        wait_traffic(shared, fs, start.at, &start.log)?;
        trials.push(Trial { kill, reaped, start, seqs: seq..u64::MAX, sent_at_start });
        pause(shared, args.settle)?;
    }
    let end = shared.sent.load(Ordering::Relaxed);
    if let Some(last) = trials.last_mut() {
        last.seqs.end = end;
    }
    // What was in flight arrives within microseconds; wait a little more.
    pause(shared, Duration::from_millis(20))?;
    // flowsteer stops before the peer closes its ports: a memif client may
    // crash on exit when its server has gone (DPDK 22.11). SIGTERM: its
    // sink flushes.
    shared.stop.store(true, Ordering::Relaxed);
    fs.stop();
    Ok((first, trials))
}

/// flowsteer's start-up phases from its log, in ms: EAL init, mempool, ports
/// started, copy pool (its own timings), and spawn to the worker polling
/// (log clock).
#[derive(Default, Clone, Copy)]
struct Phases {
    eal: Option<f64>,
    pool: Option<f64>,
    ports: Option<f64>,
    copy_pool: Option<f64>,
    polling: Option<f64>,
}

fn phases(start: &Start) -> Phases {
    let mut p = Phases::default();
    let Ok(f) = std::fs::File::open(&start.log) else { return p };
    let ms_after = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
        if line.contains("dpdk: EAL initialised") {
            p.eal = ms_after(&line, " in ");
        } else if line.contains("dpdk: mempool") && line.contains("created in") {
            p.pool = ms_after(&line, "created in ");
        } else if line.contains("copy pool of") && line.contains("created in") {
            p.copy_pool = ms_after(&line, "created in ");
        } else if line.contains("dpdk: ports started in") {
            p.ports = ms_after(&line, "started in ");
        } else if line.contains("worker 0: polling") && p.polling.is_none() {
            p.polling = log_time_ms(&line).map(|t| t as f64 - start.wall_ms as f64);
        }
    }
    p
}

/// The time of an env_logger line (`[2026-11-23T17:13:17.123Z ...`) in ms since the epoch.
fn log_time_ms(line: &str) -> Option<u64> {
    let t = line.strip_prefix('[')?.get(..23)?;
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + hh) * 60 + mm) * 60 + ss).ok().map(|s| s * 1000 + ms as u64)
}

/// Copies in a pcapng file (tshark): how many, and the highest sequence
/// number. A file cut short by the kill counts what it holds.
fn copies(pcapng: &Path) -> Result<(u64, Option<u64>), String> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcapng)
        .args(["-Y", &format!("udp.dstport == {STREAM_PORT}"), "-T", "fields", "-e", "udp.payload"])
        .output()
        .map_err(|e| format!("tshark: {e} (apt-get install tshark)"))?;
    // A process killed in the middle of a write leaves a file that ends in a
    // partial packet: tshark reads every packet before it, then fails.
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !stderr.contains("cut short in the middle of a packet") {
        return Err(format!("tshark -r {}: {}", pcapng.display(), stderr.trim()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = 0;
    let mut high = None::<u64>;
    for line in text.lines().filter(|l| !l.is_empty()) {
        n += 1;
        let hex = line.replace(':', "");
        if hex.len() >= 32 {
            if let Ok(seq) = u64::from_str_radix(&hex[16..32], 16) {
                high = high.max(Some(seq));
            }
        }
    }
    Ok((n, high))
}

fn ms(d: u64) -> f64 {
    d as f64 / 1e6
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// Median and worst of `v` (ms).
fn median_worst(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

/// Removes the work directory (unless it was given: then only its sockets)
/// and the peer's runtime directory on drop.
struct WorkDir {
    path: PathBuf,
    keep: bool,
    peer_prefix: String,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            // The results stay; the sockets go (virtio_user's server sockets
            // outlive the peer, whose ports are never closed in vhost mode).
            for sock in ["port0.sock", "port1.sock", "ctl.sock"] {
                let _ = std::fs::remove_file(self.path.join(sock));
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.peer_prefix));
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("restart: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("restart: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The peer's EAL, pool and its two started ports (A, B) with their queues.
fn open_peer(args: &Args, work: &WorkDir) -> Result<Peer, String> {
    let eal_cfg = EalConfig {
        file_prefix: work.peer_prefix.clone(),
        memory_mb: 256,
        no_huge: args.no_huge,
        in_memory: true,
        vdevs: (0..2).map(|i| args.mode.peer_device(&work.path, i)).collect(),
        // virtio_user shares the peer's memory with the vhost-user backend, at
        // most 8 regions: one file for all segments (QEMU shares one file too).
        extra: vec!["--single-file-segments".into(), "--log-level=lib.eal:warning".into()],
        ..EalConfig::default()
    };
    let eal = Eal::init(&eal_cfg).map_err(|e| format!("peer EAL: {e}"))?;
    let pool = Mempool::new(&eal, "peer", 8191, 256, 2048).map_err(|e| format!("peer: {e}"))?;
    let dev_cfg = DeviceConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_descriptors: 1024,
        tx_descriptors: 1024,
        mtu: None,
        promiscuous: true,
    };
    let open = |i: usize| {
        let spec = args.mode.peer_device(&work.path, i);
        let name = spec.split(',').next().unwrap_or_default().to_string();
        EthDev::open(&eal, &pool, &name, &dev_cfg).map_err(|e| format!("peer: {e}"))
    };
    let (a, b) = (open(0)?, open(1)?);
    Ok(Peer {
        tx_a: a.tx_queue(0).map_err(|e| e.to_string())?,
        rx_a: a.rx_queue(0).map_err(|e| e.to_string())?,
        rx_b: b.rx_queue(0).map_err(|e| e.to_string())?,
        devs: [a, b],
        pool,
        _eal: eal,
    })
}

/// While the peer starts (a probe may wait for flowsteer to connect):
/// on Ctrl-C, or when it takes longer than `RESUME_TIMEOUT`, kills
/// flowsteer, removes what the run made and exits, since the blocked
/// main thread cannot.
fn guard_start_up(done: &AtomicBool, interrupted: &AtomicBool, fs: &Flowsteer, work: &WorkDir) {
    let t = Instant::now();
    while !done.load(Ordering::Relaxed) {
        let timed_out = t.elapsed() > RESUME_TIMEOUT;
        if interrupted.load(Ordering::Relaxed) || timed_out {
            let log = fs.dir.join("flowsteer-0.log");
            if let Some(pid) = fs.child.as_ref().and_then(|c| rustix::process::Pid::from_raw(c.id() as i32)) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                eprintln!("restart: flowsteer's log:\n{}", tail(&log));
            }
            if timed_out {
                eprintln!("restart: the peer's ports did not start within {} s", RESUME_TIMEOUT.as_secs());
            }
            let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", fs.prefix));
            let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", work.peer_prefix));
            if !work.keep {
                let _ = std::fs::remove_dir_all(&work.path);
            }
            std::process::exit(if timed_out { 1 } else { 130 });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let pid = std::process::id();
    let work = WorkDir {
        path: args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("flowsteer-restart-{pid}"))),
        keep: args.dir.is_some(),
        peer_prefix: format!("fsrp{pid}"),
    };
    std::fs::create_dir_all(&work.path).map_err(|e| format!("{}: {e}", work.path.display()))?;
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted)).map_err(|e| format!("signal handler: {e}"))?;
    }
    let mut fs = Flowsteer {
        exe: args.flowsteer.clone(),
        dir: work.path.clone(),
        mode: args.mode,
        prefix: format!("fsrf{pid}"),
        memory_mb: args.memory_mb,
        copy_buffers: args.copy_buffers,
        no_huge: args.no_huge,
        child: None,
        starts: 0,
    };
    // virtio_user with server=1 waits in its probe (inside rte_eal_init)
    // until a vhost-user client connects: flowsteer starts first, and its
    // client retries until the socket is there. A memif client does not
    // retry: there the servers start first.
    let first = match args.mode {
        Mode::Vhost => Some(fs.start()?),
        Mode::Memif => None,
    };
    let mut peer = {
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| guard_start_up(&done, &interrupted, &fs, &work));
            let r = open_peer(args, &work);
            done.store(true, Ordering::Relaxed);
            r
        })?
    };
    let shared = Shared {
        base: Instant::now(),
        stop: AtomicBool::new(false),
        interrupted,
        sent: AtomicU64::new(0),
        last_rx: AtomicU64::new(0),
        gaps: Mutex::new(Vec::new()),
    };
    println!(
        "restart: {} ports, {} trials, supervisor delay {} ms, {} pps, flowsteer memory_mb {} copy_buffers {}{}, work dir {}",
        args.mode.name(),
        args.trials,
        args.delay.as_millis(),
        args.rate,
        args.memory_mb,
        args.copy_buffers,
        if args.no_huge { ", no hugepages" } else { "" },
        work.path.display()
    );
    let expected = args.rate * (args.trials as u64 + 2) * (args.settle.as_millis() as u64 + 1000) / 1000;
    let (outcome, stream) = std::thread::scope(|s| {
        // The supervisor keeps the process's CPUs (the EAL gave the main
        // thread all of them), and so does flowsteer, which it spawns:
        // flowsteer pins its worker to core 1 itself; its control threads
        // float, as under systemd with CPUAffinity=.
        let sup = s.spawn(|| {
            let r = supervise(args, &shared, &mut fs, first);
            shared.stop.store(true, Ordering::Relaxed);
            r
        });
        // The traffic loop busy-polls core 0.
        if !core_affinity::set_for_current(core_affinity::CoreId { id: 0 }) {
            eprintln!("restart: cannot pin the traffic loop to core 0; running unpinned");
        }
        let stream = pump(&mut peer, &shared, args.rate, expected);
        (sup.join().unwrap_or_else(|_| Err("the supervisor panicked".into())), stream)
    });
    // The end, in the order that DPDK 22.11 survives: a memif client
    // (flowsteer) may crash on exit when its server has gone, so flowsteer
    // stops first (SIGTERM: its sink flushes); virtio_user with server=1
    // may crash in its interrupt thread when its backend goes away, so
    // there the VM side closes its ports first, as a VM shutting down would.
    drop(fs);
    if args.mode == Mode::Vhost {
        // Closing a virtio_user port that has reconnected (its interrupt
        // callback on the new socket) panics DPDK 22.11's interrupt thread:
        // leave the ports and the EAL to the process's exit.
        std::mem::forget(peer);
    }
    let (first, trials) = outcome?;
    report(args, &shared, &stream, &first, &trials)
}

/// Prints the table, the summary and the `restart:` line; false when a check failed.
fn report(args: &Args, shared: &Shared, s: &Stream, first: &Start, trials: &[Trial]) -> Result<bool, String> {
    let gaps = shared.gaps.lock().unwrap_or_else(|e| e.into_inner()).clone();
    println!(
        "{:>5} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7} {:>4} {:>5} {:>7} {:>6} {:>6} {:>6} {:>9} {:>8}",
        "trial",
        "outage",
        "kill->1st",
        "reap",
        "start->1st",
        "lost",
        "refused",
        "dup",
        "reord",
        "eal",
        "pool",
        "ports",
        "copypl",
        "->polling",
        "copies"
    );
    let mut cols: [Vec<f64>; 9] = Default::default();
    let (mut lost_all, mut dup_all, mut reord_all, mut copies_ok, mut resumed) = (0, 0, 0, 0, 0);
    let mut failures = Vec::new();
    for (i, t) in trials.iter().enumerate() {
        let kill = ns(shared.base, t.kill);
        let start = ns(shared.base, t.start.at);
        // Nothing forwards between the old process's death (reaped before the
        // new start) and the new start, so the first arrival after the start
        // ends a gap, which began with the last packet the old process forwarded.
        let Some(&(before, after)) = gaps.iter().find(|g| g.1 > start) else {
            failures.push(format!("trial {}: no gap in the arrivals around the restart", i + 1));
            continue;
        };
        resumed += 1;
        let span = t.seqs.end - t.seqs.start;
        let lost = span - s.received.count(t.seqs.clone());
        let refused = t.seqs.clone().filter(|&q| s.refused.get(q) && !s.received.get(q)).count();
        let dup = s.duplicates.iter().filter(|q| t.seqs.contains(q)).count();
        let reord = s.reordered.iter().filter(|q| t.seqs.contains(q)).count();
        let p = phases(&t.start);
        let copy = match copies(&t.start.pcapng) {
            // Copies of packets sent after the new start: the copy chain works
            // again. (vhost-user: packets the VM queued before the kill come
            // first, from its ring, which the new process takes over.)
            Ok((n, high)) if high.is_some_and(|h| h >= t.sent_at_start) => {
                copies_ok += 1;
                format!("{n}")
            }
            Ok((n, high)) => {
                failures.push(format!(
                    "trial {}: {} holds {n} copies, highest sequence number {high:?}: none sent after the restart ({})",
                    i + 1,
                    t.start.pcapng.display(),
                    t.sent_at_start
                ));
                format!("{n}!")
            }
            Err(e) => {
                failures.push(format!("trial {}: {e}", i + 1));
                "error".into()
            }
        };
        let row = [
            ms(after - before),
            ms(after - kill),
            ms(t.reaped.duration_since(t.kill).as_nanos() as u64),
            ms(after - start),
        ];
        println!(
            "{:>5} {:>9.1} {:>9.1} {:>9.1} {:>10.1} {:>7} {:>7} {:>4} {:>5} {:>7} {:>6} {:>6} {:>6} {:>9} {:>8}",
            i + 1,
            row[0],
            row[1],
            row[2],
            row[3],
            lost,
            refused,
            dup,
            reord,
            opt(p.eal),
            opt(p.pool),
            opt(p.ports),
            opt(p.copy_pool),
            opt(p.polling),
            copy
        );
        for (c, v) in
            cols.iter_mut().zip(row.into_iter().map(Some).chain([p.eal, p.pool, p.ports, p.copy_pool, p.polling]))
        {
            c.extend(v);
        }
        lost_all += lost;
        dup_all += dup;
        reord_all += reord;
    }
    let names = ["outage", "kill->1st", "reap", "start->1st", "eal init", "mempool", "ports", "copy pool", "->polling"];
    println!("over {} trials (ms):", cols[0].len());
    for (name, c) in names.iter().zip(cols.iter_mut()) {
        if !c.is_empty() {
            let (m, w) = median_worst(c);
            println!("  {name:<11} median {m:8.1}   worst {w:8.1}");
        }
    }
    let p = phases(first);
    println!(
        "first start (cold): eal {} ms, mempool {} ms, ports {} ms, copy pool {} ms, spawn -> polling {} ms; first start's copies: {}",
        opt(p.eal),
        opt(p.pool),
        opt(p.ports),
        opt(p.copy_pool),
        opt(p.polling),
        copies(&first.pcapng).map_or_else(|e| e, |(n, _)| n.to_string())
    );
    if s.foreign > 0 {
        println!("  {} frames that are not the stream arrived (on B, or on A)", s.foreign);
    }
    if dup_all > 0 {
        failures.push(format!("{dup_all} packets arrived twice"));
    }
    println!(
        "restart: mode {} trials {} resumed {resumed} lost {lost_all} duplicates {dup_all} reordered {reord_all} copies_resumed {copies_ok} harness_pid {} flowsteer_pids {}",
        args.mode.name(),
        trials.len(),
        std::process::id(),
        std::iter::once(first.pid).chain(trials.iter().map(|t| t.start.pid)).map(|p| p.to_string()).collect::<Vec<_>>().join(",")
    );
    let _ = std::io::stdout().flush();
    for f in &failures {
        eprintln!("restart: {f}");
    }
    Ok(failures.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_give_their_time() {
        assert_eq!(
            log_time_ms("[2026-11-23T17:13:17.123Z INFO  control::runtime] worker 0: polling"),
            Some(1_795_453_997_123)
        );
        assert_eq!(log_time_ms("[2000-02-29T00:00:00.000Z INFO  x] y"), Some(951_782_400_000));
        assert_eq!(log_time_ms("EAL: No free 1048576 kB hugepages reported on node 0"), None);
    }

    #[test]
    fn stream_frames_carry_their_number() {
        let mut f = template();
        assert_eq!(f.len(), 64);
        f[PAYLOAD + 8..PAYLOAD + 16].copy_from_slice(&1_234_567u64.to_be_bytes());
        assert_eq!(seq_of(&f), Some(1_234_567));
        f[PAYLOAD] ^= 1;
        assert_eq!(seq_of(&f), None, "not the stream's marker");
        assert_eq!(seq_of(&f[..40]), None, "too short");
    }

    #[test]
    fn bits_grow_and_count() {
        let mut b = Bits::with_capacity(10);
        assert!(!b.set(3));
        assert!(b.set(3), "the second set reports the first");
        assert!(!b.set(10_000));
        assert!(b.get(10_000) && !b.get(9_999));
        assert_eq!(b.count(0..10_001), 2);
    }
}
