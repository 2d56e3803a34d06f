//! End-to-end tests of the `flowsteer` binary: what a user sees (exit codes,
//! error lines, the printed report) and what tshark decodes from the
//! captures it writes.
//!
//! tshark (Wireshark 4.0) is required: a test that needs it fails (never
//! skips) when /usr/bin/tshark is missing. Every process started here is
//! owned by a [`Proc`] guard that kills and reaps it by PID on drop, so a
//! failing assertion never leaves a process behind.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::flow::MacAddr;
use dataplane::wire::build::{Ext, PacketBuilder};
use std::net::{Ipv4Addr, Ipv6Addr};

// ---------------------------------------------------------------------------
// Process handling
// ---------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_flowsteer");
const TSHARK: &str = "/usr/bin/tshark";
/// Longest any single command may take before the test fails (and kills it).
const CMD_TIMEOUT: Duration = Duration::from_secs(20);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}
fn sample() -> PathBuf {
    root().join("examples/sample.pcapng")
}
fn demo() -> PathBuf {
    root().join("examples/demo.yaml")
}

/// A started process; killed (SIGKILL) and waited for by PID when dropped
/// unless it has already been reaped.
struct Proc {
    child: Child,
    what: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for (pipe, buf) in [
            (Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Arc::clone(&stdout)),
            (Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>, Arc::clone(&stderr)),
        ] {
            let mut pipe = pipe;
            readers.push(std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
                    }
                }
            }));
        }
        Proc { child, what, stdout, stderr, readers, status: None }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout_now(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    fn stderr_now(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits for the process to exit (at most `timeout`; then the test
    /// fails and the guard kills it) and returns what it printed.
    fn wait(mut self, timeout: Duration) -> Output {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    self.status = Some(st);
                    break;
                }
                Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    panic!("{} did not exit within {timeout:?}; stdout so far:\n{}", self.what, self.stdout_now())
                }
                Err(e) => panic!("waiting for {}: {e}", self.what),
            }
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Output {
            what: self.what.clone(),
            code: self.status.unwrap().code(),
            stdout: String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            // Still ours: kill by PID, then reap it.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug)]
struct Output {
    what: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "{} exited {:?}\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.code,
            self.stdout,
            self.stderr
        );
        self.assert_no_panic()
    }
    fn assert_no_panic(&self) -> &Self {
        assert!(!self.stderr.contains("panicked"), "{} panicked:\n{}", self.what, self.stderr);
        assert_ne!(self.code, Some(101), "{} exited 101 (a Rust panic)\n{}", self.what, self.stderr);
        self
    }
    /// The stderr lines, without tshark's "Running as user root" warning.
    fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| !l.trim().is_empty()).collect()
    }
}

/// `flowsteer ARGS...` with a clean environment for logging, to completion.
fn flowsteer(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("RUST_LOG").current_dir(root());
    for a in args {
        cmd.arg(a);
    }
    Proc::spawn(&mut cmd).wait(CMD_TIMEOUT)
}

// ---------------------------------------------------------------------------
// tshark
// ---------------------------------------------------------------------------

fn require_tshark() {
    assert!(
        Path::new(TSHARK).is_file(),
        "tshark is required by the end-to-end tests and was not found at {TSHARK}; install it (apt-get install tshark) — this test does not skip"
    );
}

/// `tshark -r FILE [-Y FILTER] -T fields -e F...`: one row per packet.
fn tshark_fields(file: &Path, filter: Option<&str>, fields: &[&str]) -> Vec<Vec<String>> {
    require_tshark();
    assert!(file.is_file(), "capture {} does not exist", file.display());
    let mut cmd = Command::new(TSHARK);
    cmd.arg("-n").arg("-r").arg(file);
    if let Some(f) = filter {
        cmd.arg("-Y").arg(f);
    }
    cmd.args(["-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"]);
    for f in fields {
        cmd.arg("-e").arg(f);
    }
    let out = Proc::spawn(&mut cmd).wait(CMD_TIMEOUT);
    assert_eq!(out.code, Some(0), "tshark failed on {}: {}", file.display(), out.stderr);
    out.stdout.lines().map(|l| l.split('|').map(str::to_string).collect()).collect()
}

/// Per packet: timestamp, length and every byte (as hex) as tshark reads them.
fn tshark_frames(file: &Path, filter: Option<&str>) -> Vec<(String, String, String)> {
    tshark_fields(file, filter, &["frame.time_epoch", "frame.len", "frame.cap_len"])
        .into_iter()
        .zip(tshark_hex(file, filter))
        .map(|(r, hex)| (r[0].clone(), format!("{}/{}", r[1], r[2]), hex))
        .collect()
}

/// The bytes of each packet, from `tshark -x` hex dumps (one per packet).
fn tshark_hex(file: &Path, filter: Option<&str>) -> Vec<String> {
    require_tshark();
    let mut cmd = Command::new(TSHARK);
    cmd.arg("-n").arg("-r").arg(file);
    if let Some(f) = filter {
        cmd.arg("-Y").arg(f);
    }
    // -x alone: only the hex dumps, one block per packet, separated by blank lines.
    cmd.arg("-x");
    let out = Proc::spawn(&mut cmd).wait(CMD_TIMEOUT);
    assert_eq!(out.code, Some(0), "tshark -x failed on {}: {}", file.display(), out.stderr);
    let mut frames = Vec::new();
    let mut cur = String::new();
    for line in out.stdout.lines() {
        // Hex dump lines: "0000  ff ff ...   ascii"; frame.number lines are bare numbers.
        let is_dump = line.len() > 6 && line[..4].chars().all(|c| c.is_ascii_hexdigit()) && &line[4..6] == "  ";
        if is_dump {
            let hex: String = line[6..].chars().take(48).collect();
            cur.push_str(&hex.split_whitespace().collect::<String>());
        } else if !cur.is_empty() {
            frames.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        frames.push(cur);
    }
    frames
}

fn count_packets(file: &Path) -> usize {
    tshark_fields(file, None, &["frame.number"]).len()
}

// ---------------------------------------------------------------------------
// Config helpers
// ---------------------------------------------------------------------------

/// 1-based (line, column) of the first occurrence of `needle` in `text`.
fn pos_of(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).unwrap_or_else(|| panic!("`{needle}` not in the fixture"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = at - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// The n-th (0-based) occurrence of `needle`.
fn pos_of_nth(text: &str, needle: &str, n: usize) -> (usize, usize) {
    let mut from = 0;
    for _ in 0..n {
        from += text[from..].find(needle).expect("occurrence") + needle.len();
    }
    let (l, c) = pos_of(&text[from..], needle);
    let before = &text[..from];
    let base_line = before.matches('\n').count();
    let base_col = if l == 1 { from - before.rfind('\n').map_or(0, |i| i + 1) } else { 0 };
    (base_line + l, base_col + c)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A valid configuration head; tests append `rules:` items.
const BASE: &str = "\
ports:
  - { name: vm, type: pcap, rx: in.pcap }
  - { name: up, type: pcap, tx: out.pcap }
links:
  - [vm, up]
sinks:
  - { name: ids, type: pcapng, path: c.pcapng }
chains:
  - name: inspect
    stages:
      - copy: { to: [ids] }
rules:
";

/// Runs `check` on `text` and asserts exit 2 with exactly one stderr line:
/// `flowsteer: FILE:LINE:COL: FIELD: ...` containing `msg`.
fn check_fails(text: &str, line_col: (usize, usize), field: &str, msg: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.yaml", text);
    let out = flowsteer(&[&"check", &"-c", &file]);
    out.assert_code(2);
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "want exactly one error line, got:\n{}", out.stderr);
    let want = format!("flowsteer: {}:{}:{}: {}: ", file.display(), line_col.0, line_col.1, field);
    assert!(lines[0].starts_with(&want), "want a line starting with\n  {want}\ngot\n  {}\nconfig:\n{text}", lines[0]);
    assert!(lines[0].contains(msg), "want `{msg}` in\n  {}", lines[0]);
    assert!(out.stdout.is_empty(), "nothing on stdout on error, got {}", out.stdout);
    lines[0].to_string()
}

// ---------------------------------------------------------------------------
// 1. check
// ---------------------------------------------------------------------------

#[test]
fn check_accepts_the_example_config() {
    let out = flowsteer(&[&"check", &"-c", &demo()]);
    out.assert_code(0);
    assert!(out.stdout.contains("ok (2 ports, 1 links, 1 sinks, 1 chains, 3 rules, 1 workers)"), "{}", out.stdout);
    assert!(out.stderr_lines().is_empty(), "no warnings expected: {}", out.stderr);
}

#[test]
fn check_bad_cidr_names_file_line_column_and_field() {
    let text =
        format!("{BASE}  - name: r\n    priority: 1\n    match:\n      dst: 10.0.0.300/24\n    chain: inspect\n");
    check_fails(&text, pos_of(&text, "10.0.0.300/24"), "rules[0].match.dst", "`10.0.0.300/24` is not an IP network");
    // Host bits set beyond the prefix.
    let text = format!("{BASE}  - name: r\n    priority: 1\n    match:\n      src: 10.0.0.5/24\n    chain: inspect\n");
    check_fails(&text, pos_of(&text, "10.0.0.5/24"), "rules[0].match.src", "did you mean 10.0.0.0/24?");
}

#[test]
fn check_unknown_chain() {
    let text = format!("{BASE}  - name: r\n    priority: 1\n    chain: inspekt\n");
    check_fails(&text, pos_of(&text, "inspekt"), "rules[0].chain", "unknown chain `inspekt` (known chains: inspect)");
}

#[test]
fn check_unknown_port_in_link() {
    let good = format!("{BASE}  - {{ name: r, priority: 1, chain: inspect }}\n");
    let text = good.replace("[vm, up]", "[vm, upp]");
    check_fails(&text, pos_of(&text, "upp"), "links[0][1]", "unknown port `upp` (known ports: up, vm)");
    let text = good.replace("[vm, up]", "[vmm, up]");
    check_fails(&text, pos_of(&text, "vmm"), "links[0][0]", "unknown port `vmm`");
}

#[test]
fn check_overlapping_equal_priority_rules() {
    let text = format!(
        "{BASE}  - name: dns\n    priority: 5\n    match: {{ proto: udp }}\n    chain: inspect\n  - name: to-gw\n    priority: 5\n    match: {{ dst: 10.0.0.2 }}\n    chain: inspect\n"
    );
    // Reported at the second rule's priority.
    let (l, c) = pos_of_nth(&text, "5\n", 1);
    check_fails(&text, (l, c), "rules[1].priority", "`dns` and `to-gw` have the same priority 5");
    // Distinct priorities, or disjoint matches at one priority, are fine.
    let dir = tempfile::tempdir().unwrap();
    let ok = text.replacen("priority: 5", "priority: 6", 1);
    flowsteer(&[&"check", &"-c", &write(dir.path(), "ok.yaml", &ok)]).assert_code(0);
    let ok = text.replace("{ dst: 10.0.0.2 }", "{ proto: tcp }");
    flowsteer(&[&"check", &"-c", &write(dir.path(), "ok2.yaml", &ok)]).assert_code(0);
}

#[test]
fn check_wrong_types() {
    let text = format!("{BASE}  - name: r\n    priority: high\n    chain: inspect\n");
    check_fails(&text, pos_of(&text, "high"), "rules[0].priority", "");
    let text = format!("{BASE}  - name: r\n    priority: 1\n    match:\n      vlan: \"x\"\n    chain: inspect\n");
    check_fails(&text, pos_of(&text, "\"x\""), "rules[0].match.vlan", "");
    let text = format!("{BASE}  - name: r\n    priority: -3\n    chain: inspect\n");
    check_fails(&text, pos_of(&text, "-3"), "rules[0].priority", "");
    let text = format!("{BASE}  - name: r\n    priority: 1\n    symmetric: maybe\n    chain: inspect\n");
    check_fails(&text, pos_of(&text, "maybe"), "rules[0].symmetric", "");
}

#[test]
fn check_unknown_field_typo() {
    let text = format!("{BASE}  - name: r\n    priorty: 1\n    chain: inspect\n");
    check_fails(&text, pos_of(&text, "priorty"), "rules[0].priorty", "unknown field `priorty`");
    let text = format!("{BASE}  - name: r\n    priority: 1\n    match:\n      dst_prot: 80\n    chain: inspect\n");
    check_fails(&text, pos_of(&text, "dst_prot"), "rules[0].match.dst_prot", "unknown field `dst_prot`");
    let text = format!("{BASE}  - {{ name: r, priority: 1, chain: inspect }}\n").replace("sinks:", "sinkz:");
    check_fails(&text, pos_of(&text, "sinkz"), "sinkz", "unknown field `sinkz`");
}

#[test]
fn check_port_match_without_proto() {
    let text = format!("{BASE}  - name: r\n    priority: 1\n    match:\n      dst_port: 53\n    chain: inspect\n");
    check_fails(&text, pos_of(&text, "53"), "rules[0].match.dst_port", "need `proto: tcp`, `udp` or `sctp`");
    let text = format!("{BASE}  - name: r\n    priority: 1\n    match:\n      proto: icmp\n      src_port: \"1000-2000\"\n    chain: inspect\n");
    check_fails(&text, pos_of(&text, "\"1000-2000\""), "rules[0].match.src_port", "need `proto");
}

#[test]
fn check_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let out = flowsteer(&[&"check", &"-c", &missing]);
    out.assert_code(2);
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(lines[0].starts_with(&format!("flowsteer: {}:", missing.display())), "{}", lines[0]);
    assert!(lines[0].contains("cannot read") && lines[0].contains("No such file"), "{}", lines[0]);
}

#[test]
fn check_truncated_yaml_never_panics() {
    let text = std::fs::read_to_string(demo()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cut.yaml");
    // Cut points: every 29 bytes, plus points inside values and just after keys.
    let mut cuts: Vec<usize> = (0..text.len()).step_by(29).collect();
    for needle in
        ["10.0.0.8/29", "dst_port: 5432", "[vm-web-1, uplink]", "copy: { to: [ids] }", "\"fd00::21\"", "chain: inspect"]
    {
        let at = text.find(needle).unwrap();
        cuts.extend([at, at + 1, at + needle.len() / 2, at + needle.len() - 1]);
    }
    let mut codes: BTreeMap<i32, usize> = BTreeMap::new();
    for cut in cuts {
        let cut = (0..=cut).rev().find(|&c| text.is_char_boundary(c)).unwrap();
        std::fs::write(&file, &text[..cut]).unwrap();
        let out = flowsteer(&[&"check", &"-c", &file]);
        out.assert_no_panic();
        let code = out.code.unwrap_or(-1);
        assert!(code == 0 || code == 2, "cut at byte {cut}: exit {:?}\n{}", out.code, out.stderr);
        *codes.entry(code).or_default() += 1;
        if code == 2 {
            let errs: Vec<&str> = out.stderr_lines().into_iter().filter(|l| !l.contains(" WARN ")).collect();
            assert_eq!(errs.len(), 1, "cut at byte {cut}: want one error line:\n{}", out.stderr);
            let rest = errs[0]
                .strip_prefix(&format!("flowsteer: {}:", file.display()))
                .unwrap_or_else(|| panic!("cut at {cut}: {}", errs[0]));
            let mut parts = rest.splitn(4, ':');
            let (l, c, field) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(
                l.parse::<u32>().is_ok() && c.parse::<u32>().is_ok(),
                "cut at {cut}: no line:column in {}",
                errs[0]
            );
            assert!(!field.trim().is_empty(), "cut at {cut}: no field in {}", errs[0]);
        }
    }
    assert!(codes.get(&2).copied().unwrap_or(0) > 0 && codes.get(&0).copied().unwrap_or(0) > 0, "{codes:?}");
}

/// README: `flowsteer: bad.yaml:14:12: rules[0].match.dst: `10.0.0.300/24` is
/// not an IP network (want e.g. 10.0.0.0/24 or fd00::/64)` — the line ends
/// with the message; the position is given once, in front.
#[test]
fn check_error_message_gives_the_position_once() {
    let text =
        format!("{BASE}  - name: r\n    priority: 1\n    match:\n      dst: 10.0.0.300/24\n    chain: inspect\n");
    let line = check_fails(&text, pos_of(&text, "10.0.0.300/24"), "rules[0].match.dst", "is not an IP network");
    assert!(line.ends_with("(want e.g. 10.0.0.0/24 or fd00::/64)"), "{line}");
    assert!(!line.contains("at line"), "{line}");
}

/// The README and examples/demo.yaml write matches in flow style
/// (`match: { dst: ..., proto: tcp }`); an error there must still name the field.
#[test]
fn check_flow_style_errors_name_the_field() {
    let text = format!(
        "{BASE}  - name: r\n    priority: 1\n    match: {{ proto: tcp, src: 10.0.0.0/33 }}\n    chain: inspect\n"
    );
    check_fails(&text, pos_of(&text, "10.0.0.0/33"), "rules[0].match.src", "is not an IP network");
    let text = format!("{BASE}  - {{ name: r, priority: 1, match: {{ src: 10.0.0.1/33 }}, chain: inspect }}\n");
    check_fails(&text, pos_of(&text, "10.0.0.1/33"), "rules[0].match.src", "is not an IP network");
}

// ---------------------------------------------------------------------------
// 2. replay
// ---------------------------------------------------------------------------

const COPY_FIELDS: &[&str] = &[
    "frame.comment",
    "frame.interface_name",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "frame.time_epoch",
];

/// The report's per-rule counts: name -> (packets, bytes).
fn report_rules(report: &str) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    let mut in_rules = false;
    for line in report.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"rule") && f.get(1) == Some(&"packets") {
            in_rules = true;
            continue;
        }
        if in_rules {
            if f.len() == 3 && f[1].parse::<u64>().is_ok() {
                out.insert(f[0].to_string(), (f[1].parse().unwrap(), f[2].parse().unwrap()));
            } else {
                break;
            }
        }
    }
    out
}

/// The `total:` line of the report.
fn total_line(report: &str) -> &str {
    report.lines().find(|l| l.starts_with("total: ")).unwrap_or_else(|| panic!("no total line in\n{report}"))
}

#[test]
fn replay_demo_copies_exactly_the_steered_packets_and_forwards_everything() {
    require_tshark();
    let dir = tempfile::tempdir().unwrap();
    let copies = dir.path().join("copies.pcapng");
    let fwd = dir.path().join("fwd.pcapng");
    let out = flowsteer(&[&"replay", &"-c", &demo(), &"-i", &sample(), &"-o", &copies, &"-f", &fwd]);
    out.assert_code(0);

    // What the rules select, by the user's own reading of the input.
    let steer_filter = "(ip.addr==10.0.0.21 && ip.addr==10.0.0.8/29 && tcp.port==5432) || (ipv6.addr==fd00::21 && tcp.port==5432) || icmp";
    let want = tshark_fields(&sample(), Some(steer_filter), &COPY_FIELDS[2..]);
    assert_eq!(want.len(), 20, "the sample holds 16 + 2 + 2 steered packets");
    let got = tshark_fields(&copies, None, COPY_FIELDS);
    assert_eq!(got.len(), want.len(), "copies:\n{got:?}");
    let mut per_rule: BTreeMap<String, u64> = BTreeMap::new();
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(&g[2..], &w[..], "copy differs from the input packet (order, addresses, ports or timestamp)");
        assert_eq!(g[1], "vm-web-1", "interface name = the in-port");
        let is_v6 = !g[4].is_empty();
        let rule = if g[2..4].iter().any(|a| a.is_empty()) && !is_v6 {
            unreachable!("{g:?}")
        } else if is_v6 {
            "web-to-db-v6"
        } else if g[6].is_empty() {
            "icmp-audit"
        } else {
            "web-to-db"
        };
        assert_eq!(g[0], format!("flowsteer rule={rule} chain=inspect"), "{g:?}");
        *per_rule.entry(rule.to_string()).or_default() += 1;
        // Every steered TCP copy matches its rule: db port on one side.
        if !g[6].is_empty() {
            assert!(g[6] == "5432" || g[7] == "5432", "{g:?}");
        }
    }
    // Symmetric rules: both directions are present.
    for (src, dst) in
        [("10.0.0.11", "10.0.0.21"), ("10.0.0.21", "10.0.0.11"), ("10.0.0.12", "10.0.0.21"), ("10.0.0.21", "10.0.0.12")]
    {
        assert!(
            got.iter().any(|g| g[0].contains("rule=web-to-db ") && g[2] == src && g[3] == dst),
            "{src} -> {dst} missing"
        );
    }
    assert!(got.iter().any(|g| g[4] == "fd00::11" && g[5] == "fd00::21"));
    assert!(got.iter().any(|g| g[4] == "fd00::21" && g[5] == "fd00::11"));
    // Nothing unsteered was copied: the complement of the filter is absent.
    let not_steered = tshark_fields(&sample(), Some(&format!("!({steer_filter})")), &["frame.time_epoch"]);
    assert_eq!(not_steered.len(), 14);
    for n in &not_steered {
        assert!(!got.iter().any(|g| g[8] == n[0]), "unsteered packet at {} was copied", n[0]);
    }
    // Copies are byte-identical to the originals.
    assert_eq!(tshark_hex(&copies, None), tshark_hex(&sample(), Some(steer_filter)));

    // Forwarded == input: count, bytes, timestamps, lengths.
    let input = tshark_frames(&sample(), None);
    assert_eq!(input.len(), 34);
    assert_eq!(tshark_frames(&fwd, None), input);

    // The report agrees with the captures.
    let rules = report_rules(&out.stdout);
    assert_eq!(rules.get("web-to-db").map(|r| r.0), Some(16), "{}", out.stdout);
    assert_eq!(rules.get("web-to-db-v6").map(|r| r.0), Some(2), "{}", out.stdout);
    assert_eq!(rules.get("icmp-audit").map(|r| r.0), Some(2), "{}", out.stdout);
    for (name, n) in &per_rule {
        assert_eq!(rules[name].0, *n, "report vs capture for {name}");
    }
    // Bytes per rule = the sum of frame lengths of its copies.
    let lens = tshark_fields(&copies, None, &["frame.comment", "frame.len"]);
    for (name, (_, bytes)) in &rules {
        let sum: u64 = lens
            .iter()
            .filter(|r| r[0] == format!("flowsteer rule={name} chain=inspect"))
            .map(|r| r[1].parse::<u64>().unwrap())
            .sum();
        assert_eq!(*bytes, sum, "bytes of rule {name}");
    }
    assert!(
        total_line(&out.stdout)
            .starts_with("total: rx 34 tx 34 matched 20 unmatched 14 malformed 1 (truncated_ipv4 1) dropped 0"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("sink replay: written 20 errors 0"), "{}", out.stdout);
    assert!(out.stdout.contains("chain inspect: packets 20 closed-drops 0"), "{}", out.stdout);
    assert!(out.stdout.contains("copies: lost 0"), "{}", out.stdout);
}

#[test]
fn replay_drop_rule_removes_packets_from_forwarded_and_counts_rule_drop() {
    require_tshark();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "ports:\n  - {{ name: vm, type: pcap, rx: {} }}\n  - {{ name: up, type: pcap, tx: {} }}\nlinks:\n  - [vm, up]\nrules:\n  - name: no-http\n    priority: 10\n    match: {{ proto: tcp, dst_port: 80 }}\n    symmetric: true\n    action: drop\n",
        sample().display(),
        dir.path().join("unused.pcap").display()
    );
    let cfg = write(dir.path(), "drop.yaml", &cfg);
    // Classic pcap output (nanosecond timestamps) this time.
    let fwd = dir.path().join("fwd.pcap");
    let out = flowsteer(&[&"replay", &"-c", &cfg, &"-i", &sample(), &"-f", &fwd]);
    out.assert_code(0);
    let http = "tcp.port==80";
    let dropped = tshark_frames(&sample(), Some(http));
    assert_eq!(dropped.len(), 8);
    let kept = tshark_frames(&sample(), Some(&format!("!({http})")));
    assert_eq!(tshark_frames(&fwd, None), kept, "forwarded = input minus the HTTP conversation");
    assert_eq!(count_packets(&fwd), 26);
    assert_eq!(report_rules(&out.stdout).get("no-http").map(|r| r.0), Some(8), "{}", out.stdout);
    let total = total_line(&out.stdout);
    assert!(total.contains("rx 34 tx 26") && total.ends_with("dropped 8 (rule_drop 8)"), "{total}");
}

#[test]
fn replay_unknown_in_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = flowsteer(&[
        &"replay",
        &"-c",
        &demo(),
        &"-i",
        &sample(),
        &"-o",
        &dir.path().join("c.pcapng"),
        &"--in-port",
        &"vm-web-9",
    ]);
    out.assert_code(1);
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(lines[0].contains("--in-port `vm-web-9` is not a port in the configuration"), "{}", lines[0]);
    assert!(out.stdout.is_empty(), "no report on error: {}", out.stdout);
}

#[test]
fn replay_input_that_is_not_a_capture_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let notcap = write(dir.path(), "notes.txt", "this is not a capture, just some text that is long enough\n");
    let out = flowsteer(&[&"replay", &"-c", &demo(), &"-i", &notcap, &"-o", &dir.path().join("c.pcapng")]);
    out.assert_no_panic();
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert!(out.stderr.contains(&notcap.display().to_string()), "error must name the file: {}", out.stderr);
    assert!(out.stdout.is_empty(), "no report on error: {}", out.stdout);
    // A missing input too.
    let missing = dir.path().join("missing.pcapng");
    let out = flowsteer(&[&"replay", &"-c", &demo(), &"-i", &missing, &"-o", &dir.path().join("c2.pcapng")]);
    out.assert_no_panic();
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert!(out.stderr.contains(&missing.display().to_string()), "{}", out.stderr);
    // An empty file.
    let empty = write(dir.path(), "empty.pcap", "");
    let out = flowsteer(&[&"replay", &"-c", &demo(), &"-i", &empty, &"-o", &dir.path().join("c3.pcapng")]);
    out.assert_no_panic();
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert!(out.stderr.contains(&empty.display().to_string()), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// 3. Rules written from the README alone
// ---------------------------------------------------------------------------

#[test]
fn replay_readme_rules_dns_and_vlan_syslog_to_their_own_sinks() {
    require_tshark();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cfg = format!(
        r#"ports:
  - {{ name: vm-web-1, type: pcap, rx: {sample} }}
  - {{ name: uplink,   type: pcap, tx: {d}/fwd.pcapng }}
links:
  - [vm-web-1, uplink]
sinks:
  - {{ name: dns-log, type: pcapng, path: {d}/dns.pcapng }}
  - {{ name: syslog-tap, type: pcapng, path: {d}/syslog.pcapng }}
chains:
  - name: dns
    stages:
      - copy: {{ to: [dns-log] }}
  - name: logs
    stages:
      - copy: {{ to: [syslog-tap] }}
rules:
  - name: dns-queries
    priority: 20
    match: {{ in_port: vm-web-1, proto: udp, dst_port: 53 }}
    symmetric: true
    chain: dns
  - name: vlan-syslog
    priority: 30
    match: {{ vlan: 100, ethertype: ipv4, dst: 10.0.0.30, proto: 17, src_port: "500-600" }}
    chain: logs
"#,
        sample = sample().display()
    );
    let cfg = write(dir.path(), "mine.yaml", &cfg);
    flowsteer(&[&"check", &"-c", &cfg]).assert_code(0);
    // Without -o the configured sinks get the copies; -f for the forwarded
    // originals (replay does not write the configured `tx` files).
    let out = flowsteer(&[&"replay", &"-c", &cfg, &"-i", &sample(), &"-f", &dir.path().join("fwd.pcapng")]);
    out.assert_code(0);
    let dns = tshark_fields(
        &dir.path().join("dns.pcapng"),
        None,
        &[
            "frame.comment",
            "frame.interface_name",
            "ip.src",
            "ip.dst",
            "udp.srcport",
            "udp.dstport",
            "dns.flags.response",
        ],
    );
    assert_eq!(
        dns,
        vec![
            vec!["flowsteer rule=dns-queries chain=dns", "vm-web-1", "10.0.0.11", "10.0.0.2", "53001", "53", "0"],
            vec!["flowsteer rule=dns-queries chain=dns", "vm-web-1", "10.0.0.2", "10.0.0.11", "53", "53001", "1"],
        ],
        "the query and (symmetric) its answer"
    );
    let syslog = tshark_fields(
        &dir.path().join("syslog.pcapng"),
        None,
        &["frame.comment", "vlan.id", "ip.dst", "udp.dstport", "syslog.msg"],
    );
    assert_eq!(syslog, vec![vec!["flowsteer rule=vlan-syslog chain=logs", "100", "10.0.0.30", "514", "web-2: hello"]]);
    // The same selection as the user's own tshark filter over the input.
    assert_eq!(tshark_hex(&dir.path().join("dns.pcapng"), None), tshark_hex(&sample(), Some("udp.port==53")));
    assert_eq!(tshark_hex(&dir.path().join("syslog.pcapng"), None), tshark_hex(&sample(), Some("vlan.id==100")));
    assert_eq!(tshark_frames(&dir.path().join("fwd.pcapng"), None), tshark_frames(&sample(), None));
    let rules = report_rules(&out.stdout);
    assert_eq!((rules["dns-queries"].0, rules["vlan-syslog"].0), (2, 1), "{}", out.stdout);
    assert!(out.stdout.contains("sink dns-log: written 2 errors 0"), "{}", out.stdout);
    assert!(out.stdout.contains("sink syslog-tap: written 1 errors 0"), "{}", out.stdout);
}

// ---------------------------------------------------------------------------
// 4. Malformed packets
// ---------------------------------------------------------------------------

/// A classic pcap (microsecond timestamps, Ethernet) written by hand.
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&65535u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        b.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        b.extend_from_slice(&(i as u32 * 10).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(f);
    }
    std::fs::write(path, b).unwrap();
}

fn mac(x: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, x])
}

/// Valid and broken frames: a TCP/IPv4 frame cut at every offset, bad IHL,
/// bogus total lengths, bad versions, IPv6 with broken extension headers.
fn malformed_frames() -> Vec<Vec<u8>> {
    let a = Ipv4Addr::new(10, 0, 0, 11);
    let b = Ipv4Addr::new(10, 0, 0, 21);
    let tcp = PacketBuilder::ethernet(mac(1), mac(2)).ipv4(a, b).tcp(40_000, 5432).payload(b"hello world").build();
    let mut f: Vec<Vec<u8>> = (0..tcp.len()).map(|n| tcp[..n].to_vec()).collect();
    f.push(tcp.clone()); // and the whole one
    let mut bad_ihl = tcp.clone();
    bad_ihl[14] = 0x44;
    f.push(bad_ihl);
    let mut big_ihl = tcp.clone();
    big_ihl[14] = 0x4f; // 60-byte header in a 65-byte frame
    f.push(big_ihl);
    let mut long = tcp.clone();
    long[16..18].copy_from_slice(&0xfff0u16.to_be_bytes());
    f.push(long);
    let mut short = tcp.clone();
    short[16..18].copy_from_slice(&10u16.to_be_bytes()); // shorter than the header
    f.push(short);
    let mut v5 = tcp.clone();
    v5[14] = 0x55;
    f.push(v5);
    let (s6, d6): (Ipv6Addr, Ipv6Addr) = ("fd00::11".parse().unwrap(), "fd00::21".parse().unwrap());
    // IPv6 + hop-by-hop whose length runs past the packet.
    let mut ext = PacketBuilder::ethernet(mac(1), mac(2)).ipv6(s6, d6).ipv6_ext(Ext::HopByHop).udp(1000, 53).build();
    ext[14 + 40 + 1] = 200;
    f.push(ext);
    // IPv6 + routing header cut in the middle.
    let rt = PacketBuilder::ethernet(mac(1), mac(2)).ipv6(s6, d6).ipv6_ext(Ext::Routing).tcp(1, 2).build();
    let mut cut = rt[..14 + 40 + 4].to_vec();
    cut[18..20].copy_from_slice(&4u16.to_be_bytes()); // payload length agrees with the cut
    f.push(cut);
    // A long chain of hop-by-hop headers.
    let mut many = PacketBuilder::ethernet(mac(1), mac(2)).ipv6(s6, d6);
    for _ in 0..20 {
        many = many.ipv6_ext(Ext::DestOpts);
    }
    f.push(many.udp(1, 2).build());
    // IPv6 payload length beyond the frame.
    let mut plen = PacketBuilder::ethernet(mac(1), mac(2)).ipv6(s6, d6).udp(1, 2).build();
    plen[18..20].copy_from_slice(&0x4000u16.to_be_bytes());
    f.push(plen);
    // VLAN tag cut short, and three stacked tags.
    f.push(PacketBuilder::ethernet(mac(1), mac(2)).vlan(7).ipv4(a, b).udp(1, 2).build()[..16].to_vec());
    f.push(PacketBuilder::ethernet(mac(1), mac(2)).vlan(1).vlan(2).vlan(3).vlan(4).ipv4(a, b).udp(1, 2).build());
    f
}

fn malformed_config(dir: &Path, policy: &str) -> PathBuf {
    let cfg = format!(
        "dataplane:\n  malformed: {policy}\nports:\n  - {{ name: vm, type: pcap, rx: {d}/in.pcap }}\n  - {{ name: up, type: pcap, tx: {d}/unused.pcap }}\nlinks:\n  - [vm, up]\nsinks:\n  - {{ name: ids, type: pcapng, path: {d}/unused.pcapng }}\nchains:\n  - name: inspect\n    stages:\n      - copy: {{ to: [ids] }}\nrules:\n  - name: db\n    priority: 10\n    match: {{ proto: tcp, dst_port: 5432 }}\n    symmetric: true\n    chain: inspect\n  - name: v6\n    priority: 5\n    match: {{ ethertype: ipv6 }}\n    chain: inspect\n",
        d = dir.display()
    );
    write(dir, "malformed.yaml", &cfg)
}

/// `malformed N (a 1, b 2)` from the total line.
fn malformed_reasons(report: &str) -> (u64, BTreeMap<String, u64>) {
    let t = total_line(report);
    let after = t.split(" malformed ").nth(1).unwrap();
    let n: u64 = after.split_whitespace().next().unwrap().parse().unwrap();
    let mut m = BTreeMap::new();
    if let Some(list) = after.strip_prefix(&format!("{n} (")).and_then(|s| s.split(')').next()) {
        for item in list.split(", ") {
            let (k, v) = item.rsplit_once(' ').unwrap();
            m.insert(k.to_string(), v.parse().unwrap());
        }
    }
    (n, m)
}

#[test]
fn replay_malformed_packets_are_counted_by_reason_and_all_forwarded() {
    require_tshark();
    let dir = tempfile::tempdir().unwrap();
    let frames = malformed_frames();
    let input = dir.path().join("in.pcap");
    write_pcap(&input, &frames);
    let cfg = malformed_config(dir.path(), "forward");
    let copies = dir.path().join("copies.pcapng");
    let fwd = dir.path().join("fwd.pcap");
    let out = flowsteer(&[&"replay", &"-c", &cfg, &"-i", &input, &"-o", &copies, &"-f", &fwd]);
    out.assert_code(0);
    let n = frames.len();
    let total = total_line(&out.stdout);
    assert!(total.starts_with(&format!("total: rx {n} tx {n} ")), "every packet forwarded: {total}");
    assert!(total.ends_with("dropped 0"), "{total}");
    // Forwarded file == input, packet for packet, byte for byte.
    assert_eq!(count_packets(&fwd), n);
    assert_eq!(tshark_frames(&fwd, None), tshark_frames(&input, None));
    let (bad, reasons) = malformed_reasons(&out.stdout);
    for r in [
        "truncated_ethernet",
        "truncated_ipv4",
        "bad_ihl",
        "bad_ipv4_total_length",
        "bad_ipv4_version",
        "bad_ipv6_ext_header",
    ] {
        assert!(reasons.get(r).copied().unwrap_or(0) > 0, "no `{r}` in {total}");
    }
    assert_eq!(reasons.values().sum::<u64>(), bad);
    // 14 frames shorter than an Ethernet header; 20 cut inside the IPv4 header.
    assert_eq!(reasons["truncated_ethernet"], 14, "{total}");
    assert!(reasons["truncated_ipv4"] >= 20, "{total}");
    // The whole frame is the only good IPv4/TCP one; everything with a bad
    // IPv4 header is neither keyed on ports nor copied by the port rule.
    let db = report_rules(&out.stdout)["db"].0;
    assert!(db >= 1, "the intact frame is steered: {}", out.stdout);
    let copied = tshark_fields(&copies, Some("frame.comment contains \"rule=db\""), &["frame.len"]);
    assert_eq!(copied.len() as u64, db);
}

#[test]
fn replay_malformed_drop_policy_drops_and_counts_them() {
    require_tshark();
    let dir = tempfile::tempdir().unwrap();
    let frames = malformed_frames();
    let input = dir.path().join("in.pcap");
    write_pcap(&input, &frames);
    let cfg = malformed_config(dir.path(), "drop");
    let fwd = dir.path().join("fwd.pcapng");
    let out = flowsteer(&[&"replay", &"-c", &cfg, &"-i", &input, &"-o", &dir.path().join("c.pcapng"), &"-f", &fwd]);
    out.assert_code(0);
    let (bad, _) = malformed_reasons(&out.stdout);
    assert!(bad > 0);
    let n = frames.len() as u64;
    assert_eq!(count_packets(&fwd) as u64, n - bad);
    let total = total_line(&out.stdout);
    assert!(
        total.contains(&format!("tx {} ", n - bad)) && total.ends_with(&format!("dropped {bad} (malformed {bad})")),
        "{total}"
    );
}

// ---------------------------------------------------------------------------
// 5. run
// ---------------------------------------------------------------------------

/// Runs `flowsteer run -c cfg`, lets it work for `after`, sends `signal`
/// (`-INT`, `-TERM`) and returns what it printed; exit code not yet checked.
fn run_then_signal(cfg: &Path, after: Duration, signal: &str) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("RUST_LOG").arg("run").arg("-c").arg(cfg).arg("--socket").arg(cfg.with_extension("sock"));
    let proc = Proc::spawn(&mut cmd);
    std::thread::sleep(after);
    let kill = Proc::spawn(Command::new("/bin/kill").arg(signal).arg(proc.pid().to_string())).wait(CMD_TIMEOUT);
    assert_eq!(kill.code, Some(0), "kill {signal}: {}", kill.stderr);
    proc.wait(Duration::from_secs(10))
}

#[test]
fn busy_poll_run_stops_on_sigint_and_flushes() {
    require_tshark();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let demo_text = std::fs::read_to_string(demo()).unwrap();
    let rules = &demo_text[demo_text.find("\nrules:").unwrap() + 1..];
    let cfg = format!(
        "dataplane:\n  workers:\n    - {{}}\n  stats_interval: 0.2\nports:\n  - {{ name: vm-web-1, type: pcap, rx: {} }}\n  - {{ name: uplink, type: pcap, tx: {}/fwd.pcapng }}\nlinks:\n  - [vm-web-1, uplink]\nsinks:\n  - {{ name: ids, type: pcapng, path: {}/copies.pcapng }}\nchains:\n  - name: inspect\n    stages:\n      - copy: {{ to: [ids] }}\n{rules}",
        sample().display(),
        d.display(),
        d.display()
    );
    let cfg = write(d, "run.yaml", &cfg);
    flowsteer(&[&"check", &"-c", &cfg]).assert_code(0);

    let mut cmd = Command::new(BIN);
    cmd.env_remove("RUST_LOG").arg("run").arg("-c").arg(&cfg).arg("--socket").arg(d.join("ctl.sock"));
    let proc = Proc::spawn(&mut cmd);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) && !proc.stdout_now().lines().any(|l| l.starts_with("rx ")) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let summary_seen = proc.stdout_now().lines().any(|l| l.starts_with("rx "));
    let kill = Proc::spawn(Command::new("/bin/kill").arg("-INT").arg(proc.pid().to_string())).wait(CMD_TIMEOUT);
    assert_eq!(kill.code, Some(0), "kill -INT: {}", kill.stderr);
    let out = proc.wait(Duration::from_secs(10));
    out.assert_code(0);
    assert!(summary_seen, "no rate summary line within 1.5 s at stats_interval 0.2:\n{}", out.stdout);
    let line = out.stdout.lines().find(|l| l.starts_with("rx ")).unwrap();
    assert!(line.contains("| vm-web-1 rx ") && line.contains("| uplink rx ") && line.contains("| copies "), "{line}");
    assert!(total_line(&out.stdout).starts_with("total: rx 34 tx 34 matched 20 unmatched 14"), "{}", out.stdout);
    assert!(out.stdout.contains("sink ids: written 20 errors 0"), "{}", out.stdout);
    assert_eq!(tshark_frames(&d.join("fwd.pcapng"), None), tshark_frames(&sample(), None));
    let copies = tshark_fields(&d.join("copies.pcapng"), None, &["frame.comment"]);
    assert_eq!(copies.len(), 20);
    let count = |r: &str| copies.iter().filter(|c| c[0] == format!("flowsteer rule={r} chain=inspect")).count();
    assert_eq!((count("web-to-db"), count("web-to-db-v6"), count("icmp-audit")), (16, 2, 2));
}

/// Two workers, each owning one link (both ports of a link on one worker):
/// each link forwards its own input, and the copies of both reach one sink.
#[test]
fn busy_poll_run_two_workers_forward_their_own_links() {
    require_tshark();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = format!(
        "dataplane:\n  workers: [{{}}, {{}}]\n  stats_interval: 0\nports:\n  - {{ name: a1, type: pcap, rx: {s} }}\n  - {{ name: b1, type: pcap, tx: {d}/fwd1.pcapng }}\n  - {{ name: a2, type: pcap, rx: {s} }}\n  - {{ name: b2, type: pcap, tx: {d}/fwd2.pcapng }}\nlinks:\n  - [a1, b1]\n  - [a2, b2]\nsinks:\n  - {{ name: ids, type: pcapng, path: {d}/copies.pcapng }}\nchains:\n  - name: inspect\n    stages:\n      - copy: {{ to: [ids] }}\nrules:\n  - name: pings\n    priority: 1\n    match: {{ proto: icmp }}\n    chain: inspect\n",
        s = sample().display(),
        d = d.display()
    );
    let cfg = write(d, "two.yaml", &cfg);
    let check = flowsteer(&[&"check", &"-c", &cfg]);
    check.assert_code(0);
    assert!(check.stdout.contains("2 workers"), "{}", check.stdout);
    let out = run_then_signal(&cfg, Duration::from_millis(600), "-INT");
    out.assert_code(0);
    assert!(total_line(&out.stdout).starts_with("total: rx 68 tx 68 matched 4 unmatched 64"), "{}", out.stdout);
    assert_eq!(tshark_frames(&d.join("fwd1.pcapng"), None), tshark_frames(&sample(), None));
    assert_eq!(tshark_frames(&d.join("fwd2.pcapng"), None), tshark_frames(&sample(), None));
    let ifaces = tshark_fields(&d.join("copies.pcapng"), None, &["frame.interface_name"]);
    let mut names: Vec<String> = ifaces.into_iter().map(|mut v| v.remove(0)).collect();
    names.sort();
    assert_eq!(names, ["a1", "a1", "a2", "a2"]);
}

#[test]
fn busy_poll_run_stops_on_sigterm_with_summaries_off() {
    require_tshark();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = format!(
        "dataplane:\n  stats_interval: 0\nports:\n  - {{ name: a, type: pcap, rx: {} }}\n  - {{ name: b, type: pcap, tx: {}/fwd.pcap }}\nlinks:\n  - [a, b]\nrules: []\n",
        sample().display(),
        d.display()
    );
    let cfg = write(d, "term.yaml", &cfg);
    let out = run_then_signal(&cfg, Duration::from_millis(400), "-TERM");
    out.assert_code(0);
    assert!(!out.stdout.lines().any(|l| l.starts_with("rx ")), "stats_interval 0 = no summaries:\n{}", out.stdout);
    assert!(total_line(&out.stdout).starts_with("total: rx 34 tx 34 matched 0 unmatched 34"), "{}", out.stdout);
    assert_eq!(count_packets(&d.join("fwd.pcap")), 34);
}

#[test]
fn run_rejects_a_bad_stats_interval() {
    let out = flowsteer(&[&"run", &"-c", &demo(), &"--stats-interval", &"nan"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--stats-interval must be 0 (off) or a number of seconds"), "{}", out.stderr);
}

/// A sink that cannot be opened (its directory does not exist) does not stop
/// the dataplane: fail-open forwards everything and counts every lost copy;
/// fail-closed drops the chain's originals (counted) while the sink is down.
#[test]
fn busy_poll_run_starts_without_a_sink_that_cannot_open() {
    require_tshark();
    for policy in ["fail-open", "fail-closed"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cfg = format!(
            "dataplane:\n  stats_interval: 0\nports:\n  - {{ name: a, type: pcap, rx: {} }}\n  - {{ name: b, type: pcap, tx: {}/fwd.pcap }}\nlinks:\n  - [a, b]\nsinks:\n  - {{ name: ids, type: pcapng, path: {}/no/such/dir/c.pcapng }}\nchains:\n  - {{ name: c, on_failure: {policy}, stages: [ {{ copy: {{ to: [ids] }} }} ] }}\nrules:\n  - {{ name: all, priority: 1, chain: c }}\n",
            sample().display(),
            d.display(),
            d.display()
        );
        let cfg = write(d, "nosink.yaml", &cfg);
        let out = run_then_signal(&cfg, Duration::from_millis(600), "-INT");
        out.assert_code(0);
        assert!(
            out.stderr.contains("sink `ids`")
                && out.stderr.contains("No such file or directory")
                && out.stderr.contains("starting without it"),
            "{policy}: {}",
            out.stderr
        );
        let forwarded = count_packets(&d.join("fwd.pcap"));
        if policy == "fail-open" {
            assert_eq!(forwarded, 34, "{}", out.stdout);
            assert!(out.stdout.contains("copies: lost 34 "), "every copy is accounted for:\n{}", out.stdout);
        } else {
            // Down from the start: originals are dropped. Only a retry of the sink (after its
            // backoff, if the worker started that late) lets an original through with its copy,
            // which is then lost and counted.
            let closed = 34 - forwarded;
            // All 34 arrive in one or two bursts: on a loaded host the worker may reach them
            // only while the sink is being retried, and then all pass; the retry shows as the
            // sink's write error.
            assert!(closed > 0 || out.stdout.contains("sink ids: written 0 errors 1 "), "{}", out.stdout);
            assert!(out.stdout.contains(&format!("closed-drops {closed}")), "{}", out.stdout);
            if closed > 0 {
                assert!(out.stdout.contains(&format!("chain_closed {closed}")), "{}", out.stdout);
            }
            assert!(out.stdout.contains("copies: lost 34 "), "every copy is accounted for:\n{}", out.stdout);
        }
    }
}

/// Every other "cannot open" error names the file (ports do:
/// "port `uplink`: /x/f.pcapng: cannot create capture file: ..."); a sink's does not.
#[test]
fn replay_output_that_cannot_be_created_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("no/such/dir/copies.pcapng");
    let out = flowsteer(&[&"replay", &"-c", &demo(), &"-i", &sample(), &"-o", &bad]);
    out.assert_code(1);
    assert!(out.stderr.contains(&bad.display().to_string()), "error must name {}: {}", bad.display(), out.stderr);
}

fn full_disk_config(dir: &Path) -> PathBuf {
    let cfg = std::fs::read_to_string(demo())
        .unwrap()
        .replace("/tmp/flowsteer-copies.pcapng", "/dev/full")
        .replace("    - core: 1", "    - {}");
    write(dir, "full.yaml", &cfg)
}

/// A sink that fails (disk full) loses copies, never originals (fail-open).
#[test]
fn replay_failing_sink_loses_copies_not_originals() {
    require_tshark();
    let dir = tempfile::tempdir().unwrap();
    let cfg = full_disk_config(dir.path());
    let fwd = dir.path().join("fwd.pcapng");
    let out = flowsteer(&[&"replay", &"-c", &cfg, &"-i", &sample(), &"-f", &fwd]);
    out.assert_code(0);
    assert_eq!(tshark_frames(&fwd, None), tshark_frames(&sample(), None), "every original forwarded");
    let total = total_line(&out.stdout);
    assert!(total.starts_with("total: rx 34 tx 34 matched 20") && total.ends_with("dropped 0"), "{total}");
    let sink = out.stdout.lines().find(|l| l.starts_with("sink ids: ")).unwrap();
    let errors: u64 = sink.split(" errors ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(errors > 0, "{sink}");
    assert!(!out.stdout.contains("copies: lost 0 "), "{}", out.stdout);
    assert!(out.stderr.contains("sink ids") && out.stderr.contains("No space left on device"), "{}", out.stderr);
}

/// The sink counters must agree with the file: nothing reached /dev/full.
#[test]
fn replay_failing_sink_counts_every_lost_copy() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = full_disk_config(dir.path());
    let out = flowsteer(&[&"replay", &"-c", &cfg, &"-i", &sample(), &"-f", &dir.path().join("fwd.pcapng")]);
    out.assert_code(0);
    assert!(out.stdout.contains("sink ids: written 0 "), "{}", out.stdout);
    assert!(out.stdout.contains("copies: lost 20 "), "{}", out.stdout);
}

/// `--in-port` picks the port the capture enters by; `in_port` rules and the
/// copies' interface names follow it, and the forwarded packets leave by its peer.
#[test]
fn replay_in_port_selects_the_ingress_port() {
    require_tshark();
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{BASE}  - name: pings-from-vm\n    priority: 1\n    match: {{ in_port: vm, proto: icmp }}\n    chain: inspect\n");
    let cfg = write(dir.path(), "inport.yaml", &text);
    // Default: the first linked port (vm).
    let copies = dir.path().join("c1.pcapng");
    let out = flowsteer(&[&"replay", &"-c", &cfg, &"-i", &sample(), &"-o", &copies]);
    out.assert_code(0);
    assert_eq!(report_rules(&out.stdout)["pings-from-vm"].0, 2, "{}", out.stdout);
    let got = tshark_fields(&copies, None, &["frame.interface_name", "icmp.type"]);
    assert_eq!(got, vec![vec!["vm", "8"], vec!["vm", "0"]]);
    // Entering by `up`: the rule does not apply, everything leaves by vm.
    let fwd = dir.path().join("f2.pcapng");
    let out = flowsteer(&[
        &"replay",
        &"-c",
        &cfg,
        &"-i",
        &sample(),
        &"--in-port",
        &"up",
        &"-o",
        &dir.path().join("c2.pcapng"),
        &"-f",
        &fwd,
    ]);
    out.assert_code(0);
    assert_eq!(report_rules(&out.stdout)["pings-from-vm"].0, 0, "{}", out.stdout);
    let ports: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("vm ") || l.starts_with("up ")).collect();
    assert_eq!(ports.len(), 2, "{}", out.stdout);
    assert_eq!(ports[0].split_whitespace().nth(4), Some("34"), "vm tx-packets: {}", ports[0]);
    assert_eq!(ports[1].split_whitespace().nth(1), Some("34"), "up rx-packets: {}", ports[1]);
    assert_eq!(count_packets(&fwd), 34);
}

// ---------------------------------------------------------------------------
// 6. Service chains: stages and sinks, through `replay`
// ---------------------------------------------------------------------------

/// `n` UDP packets over `flows` flows (flow = source port), 10 µs apart,
/// alternating direction per packet within a flow pair when `both_ways`.
fn udp_flows(n: usize, flows: usize, len: usize, both_ways: bool) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let flow = (i % flows) as u16;
            let (a, b) = (Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 21));
            let fwd = !both_ways || (i / flows).is_multiple_of(2);
            let (s, d, sp, dp) = if fwd { (a, b, 20_000 + flow, 7000) } else { (b, a, 7000, 20_000 + flow) };
            PacketBuilder::ethernet(mac(1), mac(2)).ipv4(s, d).udp(sp, dp).pad_to(len).build()
        })
        .collect()
}

/// A config with one link, one pcapng sink (`copies.pcapng` in `d`), one
/// chain with `stages` (YAML flow list items, without the final copy), and
/// one rule steering all UDP (symmetric) through it.
fn chain_config(d: &Path, input: &Path, stages: &str, extra_sinks: &str, to: &str) -> PathBuf {
    let cfg = format!(
        "dataplane:\n  stats_interval: 0\nports:\n  - {{ name: vm, type: pcap, rx: {} }}\n  - {{ name: up, type: pcap, tx: {}/fwd.pcap }}\n  - {{ name: tool, type: pcap, tx: {}/tool.pcap }}\nlinks:\n  - [vm, up]\nsinks:\n  - {{ name: cap, type: pcapng, path: {}/copies.pcapng }}\n{extra_sinks}chains:\n  - name: c\n    stages:\n{stages}      - copy: {{ to: [{to}] }}\nrules:\n  - {{ name: udp, priority: 1, match: {{ proto: udp }}, symmetric: true, chain: c }}\n",
        input.display(),
        d.display(),
        d.display(),
        d.display()
    );
    write(d, "chain.yaml", &cfg)
}

/// Replays `input` through `cfg` (configured sinks, forwarded output to `fwd.pcap`).
fn replay_cfg(cfg: &Path, input: &Path, d: &Path) -> Output {
    let out = flowsteer(&[&"replay", &"-c", &cfg, &"-i", &input, &"-f", &d.join("fwd.pcap")]);
    out.assert_code(0);
    out
}

#[test]
fn chains_slice_keeps_the_original_length() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.pcap");
    write_pcap(&input, &udp_flows(50, 5, 400, true));
    let cfg = chain_config(d, &input, "      - slice: { snaplen: 64 }\n", "", "cap");
    let out = replay_cfg(&cfg, &input, d);
    let rows = tshark_fields(&d.join("copies.pcapng"), None, &["frame.len", "frame.cap_len"]);
    assert_eq!(rows.len(), 50, "{}", out.stdout);
    assert!(rows.iter().all(|r| r == &["400", "64"]), "{rows:?}");
    assert_eq!(count_packets(&d.join("fwd.pcap")), 50, "originals untouched and all forwarded");
    assert_eq!(tshark_hex(&d.join("fwd.pcap"), None), tshark_hex(&input, None));
}

#[test]
fn chains_sample_one_in_n_is_within_five_percent_and_flows_stay_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.pcap");
    write_pcap(&input, &udp_flows(100_000, 1000, 60, true));
    for n in [10u32, 100] {
        let cfg = chain_config(d, &input, &format!("      - sample: {{ one_in: {n}, seed: 7 }}\n"), "", "cap");
        let out = replay_cfg(&cfg, &input, d);
        let copies = count_packets(&d.join("copies.pcapng")) as f64;
        let want = 100_000.0 / n as f64;
        assert!((copies - want).abs() <= want * 0.05, "1 in {n}: {copies} copies, want {want} ± 5%\n{}", out.stdout);
        assert!(out.stdout.contains("copies: lost 0 "), "{}", out.stdout);
    }
    // Per flow: every packet of a sampled flow (both directions), none of the others.
    let cfg = chain_config(d, &input, "      - sample: { one_in: 10, per: flow, seed: 7 }\n", "", "cap");
    replay_cfg(&cfg, &input, d);
    let rows = tshark_fields(&d.join("copies.pcapng"), None, &["udp.srcport", "udp.dstport"]);
    let mut per_flow: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        let client = if r[0] == "7000" { &r[1] } else { &r[0] };
        *per_flow.entry(client.clone()).or_default() += 1;
    }
    assert!((60..=140).contains(&per_flow.len()), "about 100 of 1000 flows sampled: {}", per_flow.len());
    assert!(per_flow.values().all(|&c| c == 100), "whole flows, both directions: {per_flow:?}");
}

#[test]
fn chains_budget_caps_copies_by_capture_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.pcap");
    // 100,000 packets 10 µs apart: one second of capture at 100 kpps.
    write_pcap(&input, &udp_flows(100_000, 100, 60, false));
    let cfg = chain_config(d, &input, "      - budget: { pps: 1000 }\n", "", "cap");
    let out = replay_cfg(&cfg, &input, d);
    let copies = count_packets(&d.join("copies.pcapng"));
    assert!((950..=1100).contains(&copies), "pps 1000 over 1 s of capture: {copies} copies\n{}", out.stdout);
    let shed = 100_000 - copies;
    assert!(out.stdout.contains(&format!("shed {shed} ")), "every shed copy counted:\n{}", out.stdout);
    assert_eq!(count_packets(&d.join("fwd.pcap")), 100_000, "no original is ever shed");
}

#[test]
fn chains_filter_dedup_and_tool_port_vlan() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.pcap");
    // Each packet twice, the second with a lower TTL (as seen after a hop): dedup keeps one.
    let mut frames = Vec::new();
    for i in 0..20u16 {
        let b = PacketBuilder::ethernet(mac(1), mac(2)).ipv4(Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 21));
        let dport = if i % 2 == 0 { 53 } else { 123 };
        frames.push(b.clone().ttl(64).udp(30_000 + i, dport).payload(&i.to_be_bytes()).build());
        frames.push(b.ttl(63).udp(30_000 + i, dport).payload(&i.to_be_bytes()).build());
    }
    write_pcap(&input, &frames);
    let sink = "  - { name: ids, type: port, port: tool, vlan: 300 }\n";
    let cfg = chain_config(
        d,
        &input,
        "      - filter: { proto: udp, dst_port: 53 }\n      - dedup: { window_ms: 1 }\n",
        sink,
        "cap, ids",
    );
    let out = replay_cfg(&cfg, &input, d);
    let copies = tshark_fields(&d.join("copies.pcapng"), None, &["udp.dstport", "ip.ttl"]);
    assert_eq!(copies.len(), 10, "10 DNS packets, duplicates removed:\n{}", out.stdout);
    assert!(copies.iter().all(|r| r == &["53", "64"]), "{copies:?}");
    let tool = tshark_fields(&d.join("tool.pcap"), None, &["vlan.id", "udp.dstport"]);
    assert_eq!(tool.len(), 10, "{}", out.stdout);
    assert!(tool.iter().all(|r| r == &["300", "53"]), "{tool:?}");
    assert_eq!(count_packets(&d.join("fwd.pcap")), 40);
}

#[test]
fn chains_vni_rules_and_strip_vxlan() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.pcap");
    let inner = |s: u8, t: u8, sp: u16, dp: u16| {
        PacketBuilder::ethernet(mac(s), mac(t))
            .ipv4(Ipv4Addr::new(192, 168, 0, s), Ipv4Addr::new(192, 168, 0, t))
            .tcp(sp, dp)
            .build()
    };
    let outer = |vni: u32, f: &[u8]| {
        PacketBuilder::ethernet(mac(100), mac(101))
            .ipv4(Ipv4Addr::new(172, 16, 0, 1), Ipv4Addr::new(172, 16, 0, 2))
            .vxlan(vni, f)
            .build()
    };
    let frames = vec![
        outer(5001, &inner(1, 2, 40_000, 5432)),
        outer(5001, &inner(2, 1, 5432, 40_000)),
        outer(5002, &inner(1, 2, 40_000, 5432)),
        inner(1, 2, 40_000, 5432),
    ];
    write_pcap(&input, &frames);
    let cfg = format!(
        "dataplane:\n  stats_interval: 0\nports:\n  - {{ name: vm, type: pcap, rx: {} }}\n  - {{ name: up, type: pcap, tx: /dev/null }}\nlinks:\n  - [vm, up]\nsinks:\n  - {{ name: cap, type: pcapng, path: {}/copies.pcapng }}\nchains:\n  - name: c\n    stages:\n      - strip: [vxlan]\n      - copy: {{ to: [cap] }}\nrules:\n  - name: tenant-db\n    priority: 1\n    match: {{ vni: 5001, src: 192.168.0.1, dst: 192.168.0.2, proto: tcp, dst_port: 5432 }}\n    symmetric: true\n    chain: c\n",
        input.display(),
        d.display()
    );
    let cfg = write(d, "vni.yaml", &cfg);
    let out = flowsteer(&[&"replay", &"-c", &cfg, &"-i", &input]);
    out.assert_code(0);
    let rows = tshark_fields(&d.join("copies.pcapng"), None, &["vxlan.vni", "ip.src", "tcp.srcport", "frame.len"]);
    let inner_len = inner(1, 2, 40_000, 5432).len().to_string();
    assert_eq!(
        rows,
        vec![vec!["", "192.168.0.1", "40000", &inner_len], vec!["", "192.168.0.2", "5432", &inner_len]],
        "both directions of VNI 5001 only, outer headers stripped:\n{}",
        out.stdout
    );
}

#[test]
fn chains_rotation_produces_valid_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.pcap");
    write_pcap(&input, &udp_flows(2000, 10, 200, false));
    let sink =
        format!("  - {{ name: rot, type: pcapng, path: {}/rot-%n.pcapng, rotate_mb: 0.05, keep: 100 }}\n", d.display());
    let cfg = chain_config(d, &input, "", &sink, "rot");
    let out = replay_cfg(&cfg, &input, d);
    let mut files: Vec<PathBuf> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("rot-"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "2000 copies of ~250 bytes in 50 kB files: {files:?}\n{}", out.stdout);
    let total: usize = files.iter().map(|f| count_packets(f)).sum();
    assert_eq!(total, 2000);
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 50_000, "{} is over the rotation size", f.display());
    }
}

/// Remote sinks end to end: `replay` sends copies as VXLAN, ERSPAN III and
/// GRE to 127.0.0.1 (loopback only), tshark captures them on `lo` and
/// decodes the encapsulation and the inner frames.
#[test]
fn chains_remote_sinks_reach_the_analyser_on_loopback() {
    require_tshark();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.pcap");
    write_pcap(&input, &udp_flows(30, 3, 100, true));
    let pcap = d.join("lo.pcapng");
    // A port of our own for VXLAN, so other traffic on lo cannot interfere; GRE by protocol.
    let vx_port = 47_000 + (std::process::id() % 1000) as u16;
    // The analyser listens (as a VXLAN endpoint does): without a bound socket
    // the kernel answers port unreachable and the sink is, rightly, marked down.
    let _analyser = std::net::UdpSocket::bind(("127.0.0.1", vx_port)).expect("bind the analyser's VXLAN port");
    let filter = format!("udp dst port {vx_port} or (ip proto 47 and dst host 127.0.0.1)");
    let mut cap = Command::new(TSHARK);
    cap.args(["-i", "lo", "-n", "-f", &filter, "-w"]).arg(&pcap);
    let tshark = Proc::spawn(&mut cap);
    let t0 = Instant::now();
    while !tshark.stderr_now().contains("Capture started") && !tshark.stderr_now().contains("Capturing on") {
        assert!(t0.elapsed() < Duration::from_secs(10), "tshark did not start: {}", tshark.stderr_now());
        std::thread::sleep(Duration::from_millis(20));
    }
    // dumpcap installs its filter shortly after it says so.
    std::thread::sleep(Duration::from_millis(500));
    let sinks = format!(
        "  - {{ name: vx, type: vxlan, destination: 127.0.0.1, vni: 777, dst_port: {vx_port} }}\n  - {{ name: span, type: erspan, destination: 127.0.0.1, erspan_type: 3, session: 99 }}\n  - {{ name: teb, type: gre, destination: 127.0.0.1 }}\n"
    );
    let cfg = chain_config(d, &input, "", &sinks, "vx, span, teb");
    let out = replay_cfg(&cfg, &input, d);
    for s in ["vx", "span", "teb"] {
        assert!(out.stdout.contains(&format!("sink {s}: written 30 errors 0")), "{}", out.stdout);
    }
    std::thread::sleep(Duration::from_millis(500));
    let kill = Proc::spawn(Command::new("/bin/kill").arg("-INT").arg(tshark.pid().to_string())).wait(CMD_TIMEOUT);
    assert_eq!(kill.code, Some(0));
    tshark.wait(Duration::from_secs(10));
    let decode = |display: &str, fields: &[&str]| {
        let mut cmd = Command::new(TSHARK);
        cmd.arg("-n").arg("-r").arg(&pcap).args(["-d", &format!("udp.port=={vx_port},vxlan"), "-Y", display]);
        cmd.args(["-T", "fields", "-E", "separator=|", "-E", "occurrence=l"]);
        for f in fields {
            cmd.arg("-e").arg(f);
        }
        let o = Proc::spawn(&mut cmd).wait(CMD_TIMEOUT);
        assert_eq!(o.code, Some(0), "{}", o.stderr);
        o.stdout.lines().map(str::to_string).collect::<Vec<_>>()
    };
    let vx = decode("vxlan", &["vxlan.vni", "udp.dstport"]);
    assert_eq!(vx.len(), 30, "{vx:?}");
    assert!(vx.iter().all(|l| l.starts_with("777|") && (l.ends_with("|7000") || l.contains("|2000"))), "{vx:?}");
    let span = decode("erspan", &["erspan.version", "erspan.spanid", "udp.dstport"]);
    assert_eq!(span.len(), 30, "{span:?}");
    assert!(span.iter().all(|l| l.starts_with("2|99|")), "ERSPAN type III (version 2), session 99: {span:?}");
    let teb = decode("gre.proto == 0x6558", &["eth.src", "udp.srcport"]);
    assert_eq!(teb.len(), 30, "{teb:?}");
    assert!(teb.iter().all(|l| l.starts_with("02:00:00:00:00:01|")), "inner frames: {teb:?}");
}

/// Every example configuration shipped in examples/ is valid as documented.
#[test]
fn check_accepts_every_example() {
    for e in std::fs::read_dir(root().join("examples")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let out = flowsteer(&[&"check", &"-c", &p]);
            out.assert_code(0);
        }
    }
}

/// Chain mistakes are located like every other config error.
#[test]
fn check_chain_mistakes_are_located() {
    let text = format!("{BASE}  - name: r\n    priority: 1\n    chain: inspect\n")
        .replace("      - copy: { to: [ids] }\n", "      - copy: { to: [ids] }\n      - slice: { snaplen: 64 }\n");
    let line =
        check_fails(&text, pos_of(&text, "slice: {"), "chains[0].stages[1]", "`slice` after `copy` can never run");
    assert!(line.contains("`copy` must be the last stage"), "{line}");
    let text = format!("{BASE}  - name: r\n    priority: 1\n    chain: inspect\n")
        .replace("      - copy: { to: [ids] }\n", "      - budget: { pps: 0 }\n      - copy: { to: [ids] }\n");
    check_fails(&text, pos_of(&text, "0 }"), "chains[0].stages[0].budget.pps", "zero budget");
}

/// `replay` never writes over its input, and without `-f` the forwarded
/// packets are discarded, not reported as dropped.
#[test]
fn replay_protects_its_input_and_discards_unwanted_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pcapng");
    std::fs::copy(sample(), &input).unwrap();
    for flag in ["-f", "-o"] {
        let out = flowsteer(&[&"replay", &"-c", &demo(), &"-i", &input, &flag, &input]);
        out.assert_code(1);
        assert!(out.stderr.contains("would be overwritten"), "{}", out.stderr);
    }
    assert_eq!(std::fs::read(&input).unwrap(), std::fs::read(sample()).unwrap(), "the input is untouched");
    let out = flowsteer(&[&"replay", &"-c", &demo(), &"-i", &input, &"-o", &dir.path().join("c.pcapng")]);
    out.assert_code(0);
    assert!(
        total_line(&out.stdout).starts_with("total: rx 34 tx 34 ") && total_line(&out.stdout).ends_with("dropped 0"),
        "{}",
        out.stdout
    );
}
