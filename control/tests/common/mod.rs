//! Helpers shared by the end-to-end tests that run DPDK processes
//! (`memif.rs`, `dpdk_devices.rs`, `dpdk_restart.rs`): processes stopped by
//! PID on drop, DPDK runtime files and hugepages given back on drop, an
//! interactive `dpdk-testpmd` driven over its stdin, and readers of
//! flowsteer's final report.
// Each test crate includes this module and uses a different part of it.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The flowsteer binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_flowsteer");
/// Debian's testpmd (package dpdk).
pub const TESTPMD: &str = "/usr/bin/dpdk-testpmd";
/// tshark (package tshark).
pub const TSHARK: &str = "/usr/bin/tshark";
/// The 2 MB hugepage count.
pub const HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Fails (never skips) when a tool the test needs is missing.
pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).is_file(),
        "{path} is required by this test and was not found; install it (apt-get install {package}) — this test does not skip"
    );
}

/// A `--file-prefix` of this test process's own: `<tag><pid><n>`.
pub fn unique_prefix(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{tag}{}{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Removes what DPDK processes with these file prefixes leave behind (hugepage
/// files and runtime directories), on drop. Declared before the processes so
/// that it is dropped after them (they are killed first).
pub struct DpdkFiles(pub Vec<String>);

impl Drop for DpdkFiles {
    fn drop(&mut self) {
        for p in &self.0 {
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
pub struct Hugepages {
    before: u64,
}

impl Hugepages {
    pub fn reserve(pages: u64) -> Hugepages {
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

    pub fn count() -> u64 {
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
pub struct Proc {
    child: Child,
    what: String,
    out: PathBuf,
    err: PathBuf,
    reaped: bool,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, dir: &Path, tag: &str, stdin: Stdio) -> Proc {
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

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Fails the test when the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            self.reaped = true;
            panic!("{} exited early ({st})\nstdout:\n{}\nstderr:\n{}", self.what, self.stdout(), self.stderr());
        }
    }

    /// Waits until `text` shows in stderr (or stdout).
    pub fn wait_for(&mut self, text: &str, limit: Duration) {
        let start = Instant::now();
        while !self.stderr().contains(text) && !self.stdout().contains(text) {
            self.assert_running();
            assert!(start.elapsed() < limit, "{}: no `{text}` within {limit:?}\n{}", self.what, self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `limit`) for the exit; returns the exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
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
    pub fn signal(&self, signal: &str) {
        let st = Command::new("/bin/kill").arg(signal).arg(self.child.id().to_string()).status().expect("run kill");
        assert!(st.success(), "kill {signal} {} failed", self.child.id());
    }
    /// SIGINT by PID, then the clean exit and flowsteer's final report.
    pub fn stop(mut self) -> String {
        let st = Command::new("/bin/kill").arg("-INT").arg(self.child.id().to_string()).status().expect("run kill");
        assert!(st.success(), "kill -INT {} failed", self.child.id());
        let code = self.wait(Duration::from_secs(20));
        let report = self.stdout();
        assert_eq!(code, Some(0), "{} exit {code:?}\nstdout:\n{report}\nstderr:\n{}", self.what, self.stderr());
        report
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
pub struct Testpmd {
    proc: Proc,
    stdin: Option<ChildStdin>,
    prompts: usize,
}

pub const PROMPT: &str = "testpmd> ";

impl Testpmd {
    pub fn start(args: &[String], dir: &Path) -> Testpmd {
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

    pub fn wait_prompt(&mut self, limit: Duration) -> String {
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
    pub fn cmd(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("testpmd stdin");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("write to testpmd");
        self.wait_prompt(Duration::from_secs(30))
    }

    /// `show port stats all`: per port, (RX-packets, TX-packets, RX-missed + RX-errors + TX-errors).
    pub fn port_stats(&mut self) -> Vec<(u64, u64, u64)> {
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

    /// `rounds` rounds of `start tx_first <bursts>` (bursts of 32 on each
    /// port), each waited for until every packet sent so far came back (RX
    /// equal to TX on both ports) through `fs`, which must keep running.
    pub fn rounds(&mut self, bursts: u64, rounds: u64, fs: &mut Proc) {
        let per_round = bursts * 32;
        for round in 1..=rounds {
            self.cmd(&format!("start tx_first {bursts}"));
            let want = round * per_round;
            let start = Instant::now();
            loop {
                let s = self.port_stats();
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
            self.cmd("stop");
        }
    }

    /// Quits after its memif peer has disconnected: testpmd 22.11 then
    /// sometimes dies of a signal on its way out, after its work (a DPDK
    /// bug, docs/PERFORMANCE.md); that is accepted, any exit code but 0 is not.
    pub fn quit_after_peer_left(mut self) {
        let _ = self.cmd_no_prompt("quit");
        let code = self.proc.wait(Duration::from_secs(30));
        assert!(matches!(code, Some(0) | None), "testpmd quit: exit {code:?}\n{}", self.proc.stderr());
    }

    /// Quits and waits for a clean exit.
    pub fn quit(mut self) {
        let _ = self.cmd_no_prompt("quit");
        let code = self.proc.wait(Duration::from_secs(30));
        assert_eq!(code, Some(0), "testpmd quit: exit {code:?}\n{}", self.proc.stderr());
    }

    pub fn cmd_no_prompt(&mut self, line: &str) -> std::io::Result<()> {
        let mut stdin = self.stdin.take().expect("testpmd stdin");
        writeln!(stdin, "{line}")?;
        stdin.flush()
        // stdin closes here: testpmd sees end of input after the command.
    }
}

/// How many hugepage files a DPDK process with `--file-prefix prefix` has.
pub fn hugepage_files(prefix: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/dev/hugepages") else { return 0 };
    dir.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{prefix}map_"))).count()
}

/// Free 2 MB hugepages.
pub fn free_hugepages() -> u64 {
    let f = HUGEPAGES.replace("nr_hugepages", "free_hugepages");
    std::fs::read_to_string(f).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

/// flowsteer's final report: per port (rx, tx, rx-drop + tx-drop), by name.
pub fn report_port(report: &str, name: &str) -> (u64, u64, u64) {
    let line = report
        .lines()
        .skip_while(|l| !l.starts_with("port "))
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no port {name} in the report:\n{report}"));
    let f: Vec<u64> = line.split_whitespace().skip(1).take(6).map(|x| x.parse().unwrap()).collect();
    (f[0], f[3], f[2] + f[5])
}

/// The number after `word` on the report line starting with `start`.
pub fn report_value(report: &str, start: &str, word: &str) -> u64 {
    let line =
        report.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no `{start}` line in\n{report}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    let at = f.iter().position(|w| *w == word).unwrap_or_else(|| panic!("no `{word}` in `{line}`"));
    f[at + 1].trim_end_matches(',').parse().unwrap_or_else(|_| panic!("`{word}` in `{line}` is not a number"))
}

/// The packets of a rule: its row in the report's rule table.
pub fn report_rule(report: &str, rule: &str) -> u64 {
    let line = report
        .lines()
        .skip_while(|l| !l.starts_with("rule "))
        .find(|l| l.split_whitespace().next() == Some(rule))
        .unwrap_or_else(|| panic!("no rule {rule} in the report:\n{report}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
