//! End-to-end over memif with Debian's `dpdk-testpmd` (DPDK 22.11) on both
//! sides of flowsteer:
//!
//! ```text
//!   testpmd port 0 (memif server a) ──> flowsteer a ─┐ link, rule -> copy -> pcapng
//!   testpmd port 1 (memif server b) <── flowsteer b <┘ (and the other way round)
//! ```
//!
//! One testpmd process is source and sink: in `rxonly` mode, `start
//! tx_first N` first sends N bursts of 32 packets on each port (testpmd's
//! txonly engine; `--txonly-multi-flow` varies the source address, flow k
//! being 198.18.k.3 -> 198.18.0.2, UDP 9 -> 9, k = 0..255 in turn) and then
//! receives and counts whatever comes back, never stopping to poll before the
//! counts are read. That gives an exact number of packets, no loss from a
//! stopped sink, and an exact steered share: a rule on 198.18.0.0/19 matches
//! 32 of the 256 flows, one packet in eight.
//!
//! The memif rings hold 2^14 packets (`rsize=14` on both sides) so that one
//! round (2^13 packets per port) fits in them while testpmd is still sending
//! and not yet polling: nothing may be lost anywhere.
//!
//! Asserted: testpmd's counters (TX on one port == RX on the other),
//! flowsteer's port, total, rule and sink counters, and tshark's count of the
//! copies, all equal to the packets sent; no drop anywhere. Once with
//! hugepages (reserved by the test if needed and given back) and once with
//! `no_huge`.
//!
//! Every process is stopped by PID; hugepage files and DPDK runtime
//! directories of the test's own `--file-prefix`es are removed on drop, also
//! when an assertion fails. The memif sockets are abstract (DPDK's default),
//! so they vanish with their processes. Both tests busy-poll the two cores:
//! `busy_poll` in their names makes nextest run them alone.
#![cfg(feature = "dpdk")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flowsteer");
const TESTPMD: &str = "/usr/bin/dpdk-testpmd";
const TSHARK: &str = "/usr/bin/tshark";
const HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
/// Bursts of 32 packets per port and round: 2^13 packets, within a 2^14 ring.
const BURSTS: u64 = 256;
const ROUNDS: u64 = 4;
/// testpmd's txonly engine sends bursts of 32.
const BURST: u64 = 32;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).is_file(),
        "{path} is required by this test and was not found; install it (apt-get install {package}) — this test does not skip"
    );
}

/// A `--file-prefix` of this test's own: `fsm<pid><n>`.
fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("fsm{}{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Removes what DPDK processes with these file prefixes leave behind (hugepage
/// files and runtime directories), on drop. Declared before the processes so
/// that it is dropped after them (they are killed first).
struct DpdkFiles {
    prefixes: Vec<String>,
}

impl Drop for DpdkFiles {
    fn drop(&mut self) {
        for p in &self.prefixes {
            let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{p}"));
            if let Ok(dir) = std::fs::read_dir("/dev/hugepages") {
                for e in dir.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&format!("{p}map_")) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }
}

/// 2 MB hugepages reserved for the test (`scripts/setup-hugepages.sh`) when
/// fewer are there; the previous number is restored on drop.
struct Hugepages {
    before: u64,
}

impl Hugepages {
    fn reserve(pages: u64) -> Hugepages {
        let before = Self::count();
        let guard = Hugepages { before };
        if before < pages {
            let out = Command::new(root().join("scripts/setup-hugepages.sh"))
                .arg(pages.to_string())
                .output()
                .expect("run scripts/setup-hugepages.sh");
            assert!(
                out.status.success(),
                "cannot reserve {pages} hugepages: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        guard
    }

    fn count() -> u64 {
        std::fs::read_to_string(HUGEPAGES).expect("read nr_hugepages").trim().parse().expect("nr_hugepages")
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        if Self::count() != self.before {
            // Pages still mapped by a process become surplus and are freed
            // when it exits; the count goes back at once.
            let _ = std::fs::write(HUGEPAGES, self.before.to_string());
        }
    }
}

/// A process whose stdout and stderr go to files; killed (SIGKILL) and
/// reaped by PID on drop unless it has already been reaped.
struct Proc {
    child: Child,
    what: String,
    out: PathBuf,
    err: PathBuf,
    reaped: bool,
}

impl Proc {
    fn spawn(cmd: &mut Command, dir: &Path, tag: &str, stdin: Stdio) -> Proc {
        let (out, err) = (dir.join(format!("{tag}.out")), dir.join(format!("{tag}.err")));
        let what = format!("{cmd:?}");
        let child = cmd
            .stdin(stdin)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc { child, what, out, err, reaped: false }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Fails the test when the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            self.reaped = true;
            panic!("{} exited early ({st})\nstdout:\n{}\nstderr:\n{}", self.what, self.stdout(), self.stderr());
        }
    }

    /// Waits (at most `limit`) for the exit; returns the exit code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.reaped = true;
                return st.code();
            }
            assert!(
                start.elapsed() < limit,
                "{} did not exit within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                self.what,
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (`-INT`, `-TERM`) by PID.
    fn signal(&self, signal: &str) {
        let st = Command::new("/bin/kill").arg(signal).arg(self.child.id().to_string()).status().expect("run kill");
        assert!(st.success(), "kill {signal} {} failed", self.child.id());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An interactive `dpdk-testpmd -i` driven over its stdin: each command's
/// output is what it prints up to the next prompt.
struct Testpmd {
    proc: Proc,
    stdin: Option<ChildStdin>,
    prompts: usize,
}

const PROMPT: &str = "testpmd> ";

impl Testpmd {
    fn start(args: &[String], dir: &Path) -> Testpmd {
        // Line-buffered: testpmd writes its prompt straight to the terminal
        // but command output through stdio, which a file would buffer.
        let mut cmd = Command::new("stdbuf");
        cmd.arg("-oL").arg(TESTPMD).args(args);
        let mut proc = Proc::spawn(&mut cmd, dir, "testpmd", Stdio::piped());
        let stdin = proc.child.stdin.take();
        let mut t = Testpmd { proc, stdin, prompts: 0 };
        // The first prompt: EAL, mempool and ports are up, the memif
        // listeners accept clients (one that connects earlier is turned
        // away, and DPDK's memif client does not retry).
        t.wait_prompt(Duration::from_secs(60));
        t
    }

    fn wait_prompt(&mut self, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let out = self.proc.stdout();
            let n = out.matches(PROMPT).count();
            if n > self.prompts {
                self.prompts = n;
                let from = out[..out.rfind(PROMPT).unwrap()].rfind(PROMPT).map_or(0, |i| i + PROMPT.len());
                return out[from..].to_string();
            }
            self.proc.assert_running();
            assert!(
                start.elapsed() < limit,
                "testpmd: no prompt within {limit:?}\nstdout:\n{out}\nstderr:\n{}",
                self.proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs one command; returns what it printed.
    fn cmd(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("testpmd stdin");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("write to testpmd");
        self.wait_prompt(Duration::from_secs(30))
    }

    /// `show port stats all`: per port, (RX-packets, TX-packets, RX-missed + RX-errors + TX-errors).
    fn port_stats(&mut self) -> Vec<(u64, u64, u64)> {
        let out = self.cmd("show port stats all");
        let field = |block: &str, name: &str| -> u64 {
            let at = block.find(name).unwrap_or_else(|| panic!("no {name} in\n{block}"));
            block[at + name.len()..].split_whitespace().next().unwrap().parse().unwrap()
        };
        out.split("NIC statistics for port")
            .skip(1)
            .map(|b| {
                let errors = field(b, "RX-missed:") + field(b, "RX-errors:") + field(b, "TX-errors:");
                (field(b, "RX-packets:"), field(b, "TX-packets:"), errors)
            })
            .collect()
    }

    /// Quits and waits for a clean exit.
    fn quit(mut self) {
        let _ = self.cmd_no_prompt("quit");
        let code = self.proc.wait(Duration::from_secs(30));
        assert_eq!(code, Some(0), "testpmd quit: exit {code:?}\n{}", self.proc.stderr());
    }

    fn cmd_no_prompt(&mut self, line: &str) -> std::io::Result<()> {
        let mut stdin = self.stdin.take().expect("testpmd stdin");
        writeln!(stdin, "{line}")?;
        stdin.flush()
        // stdin closes here: testpmd sees end of input after the command.
    }
}

/// How many hugepage files a DPDK process with `--file-prefix prefix` has.
fn hugepage_files(prefix: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/dev/hugepages") else { return 0 };
    dir.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{prefix}map_"))).count()
}

/// Free 2 MB hugepages.
fn free_hugepages() -> u64 {
    let f = HUGEPAGES.replace("nr_hugepages", "free_hugepages");
    std::fs::read_to_string(f).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

/// flowsteer's final report: per port (rx, tx, rx-drop + tx-drop), by name.
fn report_port(report: &str, name: &str) -> (u64, u64, u64) {
    let line = report
        .lines()
        .skip_while(|l| !l.starts_with("port "))
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no port {name} in the report:\n{report}"));
    let f: Vec<u64> = line.split_whitespace().skip(1).take(6).map(|x| x.parse().unwrap()).collect();
    (f[0], f[3], f[2] + f[5])
}

/// The number after `word` on the report line starting with `start`.
fn report_value(report: &str, start: &str, word: &str) -> u64 {
    let line =
        report.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no `{start}` line in\n{report}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    let at = f.iter().position(|w| *w == word).unwrap_or_else(|| panic!("no `{word}` in `{line}`"));
    f[at + 1].trim_end_matches(',').parse().unwrap_or_else(|_| panic!("`{word}` in `{line}` is not a number"))
}

/// The packets of a rule: its row in the report's rule table.
fn report_rule(report: &str, rule: &str) -> u64 {
    let line = report
        .lines()
        .skip_while(|l| !l.starts_with("rule "))
        .find(|l| l.split_whitespace().next() == Some(rule))
        .unwrap_or_else(|| panic!("no rule {rule} in the report:\n{report}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// tshark's view of the copies: (all packets, packets of the steered flows).
fn tshark_copies(file: &Path) -> (u64, u64) {
    let count = |filter: Option<&str>| -> u64 {
        let mut cmd = Command::new(TSHARK);
        cmd.arg("-n").arg("-r").arg(file);
        if let Some(f) = filter {
            cmd.arg("-Y").arg(f);
        }
        let out = cmd.args(["-T", "fields", "-e", "frame.number"]).output().expect("run tshark");
        assert!(out.status.success(), "tshark -r {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().count() as u64
    };
    (count(None), count(Some("ip.src == 198.18.0.0/19 && ip.dst == 198.18.0.2 && udp.dstport == 9 && frame.len == 64")))
}

/// testpmd -> memif -> flowsteer -> memif -> testpmd, both ways, counted.
fn memif_round_trip(no_huge: bool) {
    // One at a time also under `cargo test` (threads in one process): both
    // cases use both cores. nextest runs them apart anyway (`busy_poll`).
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require(TESTPMD, "dpdk");
    require(TSHARK, "tshark");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (gen_prefix, fs_prefix) = (unique_prefix(), unique_prefix());
    // testpmd 256 MB + flowsteer 256 MB, and room for what others hold.
    // Dropped after the files below are removed, so the pages are free.
    let _pages = (!no_huge).then(|| Hugepages::reserve(512));
    let _files = DpdkFiles { prefixes: vec![gen_prefix.clone(), fs_prefix.clone()] };
    let sock = |n: &str| d.join(format!("{n}.sock")).display().to_string();

    let mut gen_args: Vec<String> = vec![];
    if no_huge {
        gen_args.push("--no-huge".into());
    }
    gen_args.extend(
        [
            "-m",
            "256",
            "-l",
            "0,1",
            "--main-lcore",
            "1",
            "--no-pci",
            "--file-prefix",
            &gen_prefix,
            "--vdev",
            &format!("net_memif0,role=server,socket={},id=0,rsize=14", sock("a")),
            "--vdev",
            &format!("net_memif1,role=server,socket={},id=0,rsize=14", sock("b")),
            "--log-level=lib.eal:warning",
            "--",
            "-i",
            "--forward-mode=rxonly",
            "--txonly-multi-flow",
            "--txpkts=64",
            "--nb-cores=1",
            "--total-num-mbufs=16384",
        ]
        .map(String::from),
    );
    let mut gen = Testpmd::start(&gen_args, d);
    assert_eq!(hugepage_files(&gen_prefix) > 0, !no_huge, "testpmd's files under /dev/hugepages");

    let cfg = d.join("memif.yaml");
    std::fs::write(
        &cfg,
        format!(
            "dpdk:
  file_prefix: {fs_prefix}
  memory_mb: 256
  no_huge: {no_huge}
  eal_args: [\"--log-level=lib.eal:warning\"]
ports:
  - {{ name: a, type: dpdk, device: \"net_memif0,role=client,socket={a},id=0,rsize=14\", rx_queues: 1, tx_queues: 1 }}
  - {{ name: b, type: dpdk, device: \"net_memif1,role=client,socket={b},id=0,rsize=14\" }}
links: [[a, b]]
dataplane:
  workers:
    - core: 1
      queues: [\"a:0\", \"b:0\"]
  stats_interval: 0
  # testpmd's `tx_first` lands 8192 frames at once: a real backlog, for which
  # flowsteer would shed copy work; this test counts exact copies.
  overload_bursts: 0
sinks:
  - {{ name: capture, type: pcapng, path: {copies} }}
chains:
  - name: inspect
    stages:
      - copy: {{ to: [capture] }}
rules:
  - name: one-in-eight
    priority: 10
    match: {{ src: 198.18.0.0/19, proto: udp, dst_port: 9 }}
    chain: inspect
",
            a = sock("a"),
            b = sock("b"),
            copies = d.join("copies.pcapng").display()
        ),
    )
    .unwrap();
    let check = Command::new(BIN).args(["check", "-c"]).arg(&cfg).output().expect("run flowsteer check");
    assert!(check.status.success(), "flowsteer check: {}", String::from_utf8_lossy(&check.stderr));

    let mut cmd = Command::new(BIN);
    // A control socket of its own: never the default one another flowsteer may serve.
    cmd.env_remove("RUST_LOG").arg("run").arg("--socket").arg(d.join("ctl.sock")).arg("-c").arg(&cfg);
    let free_before = free_hugepages();
    let mut fs = Proc::spawn(&mut cmd, d, "flowsteer", Stdio::null());

    // Both memif links up (flowsteer connected and its ports started).
    let start = Instant::now();
    loop {
        let info = gen.cmd("show port info all");
        if info.matches("Link status: up").count() == 2 {
            break;
        }
        fs.assert_running();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "memif links not up within 60 s:\n{info}\nflowsteer:\n{}",
            fs.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    if !no_huge {
        // flowsteer unlinks its hugepage files once mapped; its pages show
        // in the kernel's count (memory_mb 256 = 128 pages of 2 MB).
        let used = free_before.saturating_sub(free_hugepages());
        assert!(used >= 128, "flowsteer was to map 128 hugepages, the free count went down by {used}");
    }

    // Rounds: send, then wait until everything sent has come back.
    let per_round = BURSTS * BURST;
    for round in 1..=ROUNDS {
        gen.cmd(&format!("start tx_first {BURSTS}"));
        let want = round * per_round;
        let start = Instant::now();
        loop {
            let s = gen.port_stats();
            assert_eq!(s.len(), 2, "two ports: {s:?}");
            if s.iter().all(|&(rx, tx, _)| rx == want && tx == want) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "round {round}: want {want} packets sent and received on each port, testpmd has (rx, tx, errors) {s:?}\nflowsteer:\n{}",
                fs.stderr()
            );
            fs.assert_running();
            std::thread::sleep(Duration::from_millis(100));
        }
        gen.cmd("stop");
    }
    let stats = gen.port_stats();

    fs.signal("-INT");
    let code = fs.wait(Duration::from_secs(20));
    let report = fs.stdout();
    assert_eq!(code, Some(0), "flowsteer exit {code:?}\nstdout:\n{report}\nstderr:\n{}", fs.stderr());
    gen.quit();

    let total = 2 * ROUNDS * per_round;
    let steered = total / 8;
    // testpmd: every packet it sent on one port came back on the other.
    for (port, &(rx, tx, errors)) in stats.iter().enumerate() {
        assert_eq!((rx, tx, errors), (ROUNDS * per_round, ROUNDS * per_round, 0), "testpmd port {port}");
    }
    // flowsteer: received and forwarded each of them once, dropped none.
    assert_eq!(
        report_port(&report, "a"),
        (stats[0].1, stats[0].0, 0),
        "port a (rx, tx, drops) vs testpmd port 0 (tx, rx)\n{report}"
    );
    assert_eq!(
        report_port(&report, "b"),
        (stats[1].1, stats[1].0, 0),
        "port b (rx, tx, drops) vs testpmd port 1 (tx, rx)\n{report}"
    );
    assert_eq!(
        (
            report_value(&report, "total:", "rx"),
            report_value(&report, "total:", "tx"),
            report_value(&report, "total:", "matched"),
            report_value(&report, "total:", "dropped")
        ),
        (total, total, steered, 0),
        "{report}"
    );
    // The steered share: the rule, the sink and tshark agree on it.
    assert_eq!(report_rule(&report, "one-in-eight"), steered, "{report}");
    assert_eq!(report_value(&report, "sink capture:", "written"), steered, "{report}");
    assert_eq!(report_value(&report, "copies:", "lost"), 0, "{report}");
    assert_eq!(
        tshark_copies(&d.join("copies.pcapng")),
        (steered, steered),
        "copies in the pcapng: all, and of the steered flows"
    );
}

#[test]
fn busy_poll_memif_testpmd_through_flowsteer_on_hugepages() {
    memif_round_trip(false);
}

#[test]
fn busy_poll_memif_testpmd_through_flowsteer_no_huge() {
    memif_round_trip(true);
}
