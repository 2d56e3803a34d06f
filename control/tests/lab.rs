//! End-to-end tests on the VM lab: real Linux interfaces (veth pairs whose
//! other ends live in network namespaces acting as VMs), `flowsteer run`
//! between them over AF_PACKET, real traffic (ping, a TCP transfer, UDP),
//! and the monitoring tool's view as tshark captures it in its namespace.
//!
//! Every test makes its own lab with a prefix of its own (`scripts/lab.sh`)
//! and removes it on drop, also when an assertion fails; every process is
//! stopped by PID. Traffic stays inside the lab's namespaces (10.77.0.0/24).
//! The tests busy-poll a core: their names carry `busy_poll` so nextest runs
//! them one at a time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flowsteer");
const TSHARK: &str = "/usr/bin/tshark";
const PYTHON: &str = "/usr/bin/python3";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A lab of namespaces; `scripts/lab.sh down` on drop.
struct Lab {
    prefix: String,
}

impl Lab {
    fn up() -> Lab {
        static N: AtomicUsize = AtomicUsize::new(0);
        // Interface names must stay within 15 bytes: `l12345a-web1`.
        let prefix =
            format!("l{}{}", std::process::id() % 100_000, (b'a' + N.fetch_add(1, Ordering::Relaxed) as u8) as char);
        let lab = Lab { prefix };
        let out = lab.script("up");
        assert!(out.status.success(), "lab up failed: {}", String::from_utf8_lossy(&out.stderr));
        lab
    }

    fn script(&self, arg: &str) -> std::process::Output {
        Command::new(root().join("scripts/lab.sh"))
            .arg(arg)
            .env("LAB", &self.prefix)
            .output()
            .expect("run scripts/lab.sh")
    }

    fn ns(&self, vm: &str) -> String {
        format!("{}-{vm}", self.prefix)
    }

    /// Runs a command inside a VM; returns (success, stdout, stderr).
    fn exec(&self, vm: &str, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("ip").args(["netns", "exec", &self.ns(vm)]).args(args).output().expect("ip netns exec");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts a command inside a VM in the background.
    fn spawn_in(&self, vm: &str, args: &[&str], dir: &Path, tag: &str) -> Bg {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(vm)]).args(args);
        Bg::spawn(&mut cmd, dir, tag)
    }

    /// Starts tshark on a VM's eth0 writing to `file`, and waits until it captures.
    fn capture(&self, vm: &str, filter: Option<&str>, file: &Path, dir: &Path, tag: &str) -> Bg {
        let file = file.to_str().unwrap();
        let mut args = vec![TSHARK, "-n", "-i", "eth0"];
        if let Some(f) = filter {
            args.extend(["-f", f]);
        }
        args.extend(["-w", file]);
        let t = self.spawn_in(vm, &args, dir, tag);
        t.wait_for_stderr("Capturing on", Duration::from_secs(10));
        t
    }

    fn ping(&self, from: &str, to: &str) -> bool {
        // The first packets may go to ARP and bridge learning: a few tries.
        (0..3).any(|_| self.exec(from, &["ping", "-c", "3", "-i", "0.2", "-W", "1", to]).0)
    }

    /// examples/lab.yaml for this lab: its interfaces, unpinned, the pcapng in `dir`.
    fn config(&self, dir: &Path) -> PathBuf {
        let text = std::fs::read_to_string(root().join("examples/lab.yaml"))
            .unwrap()
            .replace("interface: fs-", &format!("interface: {}-", self.prefix))
            .replace("    - core: 1", "    - {}")
            .replace("stats_interval: 2", "stats_interval: 0")
            .replace("/tmp/flowsteer-lab.pcapng", &dir.join("lab.pcapng").display().to_string());
        let p = dir.join("lab.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.script("down");
        if !out.status.success() {
            eprintln!("lab down failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// A background process, killed and reaped by PID on drop.
struct Bg {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Bg {
    fn spawn(cmd: &mut Command, dir: &Path, tag: &str) -> Bg {
        let (out, err) = (dir.join(format!("{tag}.out")), dir.join(format!("{tag}.err")));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Bg { child: Some(child), out, err }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn wait_for_stderr(&self, what: &str, limit: Duration) {
        let t = Instant::now();
        while !self.stderr().contains(what) {
            assert!(t.elapsed() < limit, "`{what}` not seen within {limit:?}: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` and waits; returns (exit code, stdout, stderr).
    fn stop(mut self, signal: &str) -> (Option<i32>, String, String) {
        let mut child = self.child.take().unwrap();
        let st = Command::new("/bin/kill").arg(signal).arg(child.id().to_string()).status().unwrap();
        assert!(st.success());
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.code(), std::fs::read_to_string(&self.out).unwrap_or_default(), self.stderr())
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_flowsteer(cfg: &Path, dir: &Path) -> Bg {
    let mut cmd = Command::new(BIN);
    cmd.args(["-v", "run", "-c"]).arg(cfg).arg("--socket").arg(dir.join("ctl.sock")).env_remove("RUST_LOG");
    let fs = Bg::spawn(&mut cmd, dir, "flowsteer");
    fs.wait_for_stderr("polling", Duration::from_secs(10));
    fs
}

#[test]
fn busy_poll_lab_arp_ping_and_bridge_learning_among_three_vms() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::up();
    let fs = start_flowsteer(&lab.config(dir.path()), dir.path());
    for (from, to) in [("web1", "10.77.0.21"), ("web1", "10.77.0.12"), ("web2", "10.77.0.21"), ("db1", "10.77.0.11")] {
        assert!(lab.ping(from, to), "ping {from} -> {to} through flowsteer failed:\n{}", fs.stderr());
    }
    let (code, stdout, stderr) = fs.stop("-INT");
    assert_eq!(code, Some(0), "{stderr}");
    for port in ["web1", "web2", "db1"] {
        let row = stdout.lines().find(|l| l.starts_with(&format!("{port} "))).unwrap_or_else(|| panic!("{stdout}"));
        let tx: u64 = row.split_whitespace().nth(4).unwrap().parse().unwrap();
        assert!(tx > 0, "the bridge forwarded to {port}: {row}");
    }
}

#[test]
fn busy_poll_lab_tcp_transfer_arrives_intact_and_the_tool_sees_exactly_the_steered_flow() {
    assert!(Path::new(TSHARK).exists(), "tshark is required: apt-get install tshark");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lab = Lab::up();
    let fs = start_flowsteer(&lab.config(d), d);
    let tool_pcap = d.join("tool.pcapng");
    let tshark = lab.capture("tool", None, &tool_pcap, d, "tshark");
    std::thread::sleep(Duration::from_millis(500));

    // Unsteered traffic first: ping and UDP from web2, web1 to web2.
    assert!(lab.ping("web2", "10.77.0.21"));
    assert!(lab.ping("web1", "10.77.0.12"));
    let udp = "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'x'*100, ('10.77.0.21', 9999)) for _ in range(20)]";
    assert!(lab.exec("web2", &[PYTHON, "-c", udp]).0);

    // A 2 MB transfer web1 -> db1:5432, checked end to end.
    let server = "import socket,hashlib\nl=socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(('10.77.0.21',5432)); l.listen(1)\nc,_=l.accept(); h=hashlib.sha256(); n=0\nwhile True:\n  b=c.recv(65536)\n  if not b: break\n  h.update(b); n+=len(b)\nc.sendall(b'done'); c.close(); print(n, h.hexdigest())";
    let srv = lab.spawn_in("db1", &[PYTHON, "-c", server], d, "server");
    std::thread::sleep(Duration::from_millis(300));
    let client = "import socket,hashlib\ndata=bytes((i*7+3)%251 for i in range(2_000_000))\nc=socket.create_connection(('10.77.0.21',5432), timeout=20); c.sendall(data); c.shutdown(socket.SHUT_WR)\nassert c.recv(4)==b'done'\nprint(len(data), hashlib.sha256(data).hexdigest())";
    let (ok, sent, err) = lab.exec("web1", &[PYTHON, "-c", client]);
    assert!(ok, "transfer failed: {err}\nflowsteer: {}", fs.stderr());
    let t = Instant::now();
    let received = loop {
        let s = std::fs::read_to_string(&srv.out).unwrap_or_default();
        if !s.is_empty() || t.elapsed() > Duration::from_secs(10) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(received.trim(), sent.trim(), "the file arrived intact");
    drop(srv);

    std::thread::sleep(Duration::from_millis(500));
    let (code, _, _) = tshark.stop("-INT");
    assert_eq!(code, Some(0));
    let (code, stdout, stderr) = fs.stop("-INT");
    assert_eq!(code, Some(0), "{stderr}");

    // The tool saw the steered conversation, both directions, and nothing else.
    let out = Command::new(TSHARK)
        .args(["-n", "-r"])
        .arg(&tool_pcap)
        .args(["-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "tcp.srcport", "-e", "tcp.dstport"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows.len() > 50, "the tool saw the transfer: {} packets", rows.len());
    let to_db = rows.iter().filter(|r| r.starts_with("10.77.0.11\t10.77.0.21\t") && r.ends_with("\t5432")).count();
    let from_db = rows.iter().filter(|r| r.starts_with("10.77.0.21\t10.77.0.11\t5432\t")).count();
    assert_eq!(to_db + from_db, rows.len(), "only the steered flow reached the tool:\n{}", rows.join("\n"));
    assert!(to_db > 0 && from_db > 0, "both directions (symmetric): {to_db} / {from_db}");
    let written: u64 = stdout
        .lines()
        .find(|l| l.starts_with("sink ids: written "))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(rows.len() as u64, written, "every copy the sink sent arrived, nothing else:\n{stdout}");
    let tool_row = stdout.lines().find(|l| l.starts_with("tool ")).unwrap_or_else(|| panic!("{stdout}"));
    let tool_tx: u64 = tool_row.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert_eq!(tool_tx, written, "the tool port's own counters show what it sent: {tool_row}");
}

#[test]
fn busy_poll_lab_survives_an_interface_flap() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::up();
    let fs = start_flowsteer(&lab.config(dir.path()), dir.path());
    assert!(lab.ping("web1", "10.77.0.21"), "{}", fs.stderr());
    let host = format!("{}-web1", lab.prefix);
    assert!(Command::new("ip").args(["link", "set", &host, "down"]).status().unwrap().success());
    assert!(!lab.exec("web1", &["ping", "-c", "1", "-W", "1", "10.77.0.21"]).0, "no path while the link is down");
    assert!(Command::new("ip").args(["link", "set", &host, "up"]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(lab.ping("web1", "10.77.0.21"), "traffic resumes after the flap:\n{}", fs.stderr());
    let (code, stdout, stderr) = fs.stop("-INT");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("port web1: link down") && stderr.contains("port web1: link up"),
        "link changes are logged:\n{stderr}"
    );
    let row = stdout.lines().find(|l| l.starts_with("web1 ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.ends_with(" up"), "the report shows the link state: {row}");
}

/// Two workers share every VM interface through PACKET_FANOUT: pings work,
/// and 16 parallel TCP transfers (both directions of each flow stay on one
/// worker) all arrive intact.
#[test]
fn busy_poll_lab_two_workers_with_fanout_carry_many_parallel_flows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lab = Lab::up();
    let cfg = lab.config(d);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replacen("    - {}", "    - {}\n    - {}", 1)
        .replace("interface: ", "fanout: true, interface: ")
        .replace(
            &format!("{{ name: tool, type: af_packet, fanout: true, interface: {}-tool }}", lab.prefix),
            &format!("{{ name: tool, type: af_packet, interface: {}-tool }}", lab.prefix),
        );
    assert!(text.contains("- {}\n    - {}"), "{text}");
    std::fs::write(&cfg, &text).unwrap();
    let check = Command::new(BIN).args(["check", "-c"]).arg(&cfg).output().unwrap();
    assert!(
        check.status.success() && String::from_utf8_lossy(&check.stdout).contains("2 workers"),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let fs = start_flowsteer(&cfg, d);
    assert!(lab.ping("web1", "10.77.0.21"), "{}", fs.stderr());
    assert!(lab.ping("web2", "10.77.0.12") || lab.ping("web2", "10.77.0.11"), "{}", fs.stderr());

    let server = "import socket,hashlib,threading\nl=socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(('10.77.0.21',7000)); l.listen(32)\ndef serve(c):\n  h=hashlib.sha256()\n  while True:\n    b=c.recv(65536)\n    if not b: break\n    h.update(b)\n  c.sendall(h.hexdigest().encode()); c.close()\nwhile True:\n  c,_=l.accept(); threading.Thread(target=serve, args=(c,)).start()";
    let _srv = lab.spawn_in("db1", &[PYTHON, "-c", server], d, "server");
    std::thread::sleep(Duration::from_millis(300));
    let client = "import socket,hashlib,threading\nok=[]\ndef run(i):\n  data=bytes((j*13+i)%251 for j in range(300_000))\n  c=socket.create_connection(('10.77.0.21',7000), timeout=30); c.sendall(data); c.shutdown(socket.SHUT_WR)\n  got=c.recv(64).decode(); ok.append(got==hashlib.sha256(data).hexdigest())\nts=[threading.Thread(target=run, args=(i,)) for i in range(16)]\n[t.start() for t in ts]; [t.join() for t in ts]\nprint(sum(ok), len(ok))";
    let (ok, out, err) = lab.exec("web1", &[PYTHON, "-c", client]);
    assert!(ok, "parallel transfers failed: {err}\nflowsteer: {}", fs.stderr());
    assert_eq!(out.trim(), "16 16", "every one of 16 parallel flows arrived intact");
    let (code, stdout, stderr) = fs.stop("-INT");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("dropped 0"), "{stdout}");
}

/// VM trunk traffic keeps its 802.1Q tag through AF_PACKET ports (the kernel
/// hands the tag over separately; flowsteer puts it back), and `vlan:` rules
/// match it: db1 receives the tagged frames and the tool the tagged copies.
#[test]
fn busy_poll_lab_vlan_tags_survive_and_vlan_rules_match() {
    assert!(Path::new(TSHARK).exists(), "tshark is required: apt-get install tshark");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lab = Lab::up();
    let cfg = lab.config(d);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "rules:\n",
        "rules:\n  - name: vlan-100\n    priority: 200\n    match: { vlan: 100 }\n    chain: inspect\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let fs = start_flowsteer(&cfg, d);
    let (tool_pcap, db_pcap) = (d.join("tool.pcapng"), d.join("db1.pcapng"));
    let tool = lab.capture("tool", Some("vlan"), &tool_pcap, d, "tshark-tool");
    let db = lab.capture("db1", Some("vlan"), &db_pcap, d, "tshark-db1");
    std::thread::sleep(Duration::from_millis(700));
    // Five 802.1Q frames (VLAN 100, EtherType 0x88b5) from web1 to db1's MAC, sent raw.
    let send = "import socket\ns=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('eth0', 0))\nf=bytes.fromhex('02000a4d0015' '02000a4d000b' '81000064' '88b5') + bytes(46)\n[s.send(f) for _ in range(5)]";
    let (ok, _, err) = lab.exec("web1", &[PYTHON, "-c", send]);
    assert!(ok, "{err}");
    std::thread::sleep(Duration::from_millis(700));
    tool.stop("-INT");
    db.stop("-INT");
    let (code, stdout, stderr) = fs.stop("-INT");
    assert_eq!(code, Some(0), "{stderr}");
    let vlans = |f: &Path| {
        let out = Command::new(TSHARK)
            .args(["-n", "-r"])
            .arg(f)
            .args(["-T", "fields", "-e", "vlan.id", "-e", "vlan.etype"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect::<Vec<_>>()
    };
    let want = vec!["100\t0x88b5".to_string(); 5];
    assert_eq!(vlans(&db_pcap), want, "db1 receives the frames with their tag:\n{stdout}");
    assert_eq!(vlans(&tool_pcap), want, "the vlan rule matched and the copies keep the tag:\n{stdout}");
}

/// Receives numbered UDP datagrams (a 4-byte big-endian number first) on
/// `addr:port` until none came for 2 s; prints
/// `received R unique U dup D late L missing M` (numbers 0..max).
fn numbered_receiver(addr: &str, port: u16) -> String {
    format!(
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1<<22); s.bind(('{addr}', {port})); s.settimeout(2)\ngot=[]\ntry:\n  while True:\n    d,_=s.recvfrom(2048); got.append(int.from_bytes(d[:4], 'big'))\nexcept socket.timeout:\n  pass\ntop=-1; late=0\nfor n in got:\n  late += n < top; top=max(top, n)\nu=set(got)\nprint('received', len(got), 'unique', len(u), 'dup', len(got)-len(u), 'late', late, 'missing', (max(u)+1-len(u)) if u else 0, flush=True)"
    )
}

/// Sends `n` numbered UDP datagrams of 64 bytes to `addr:port`, one per millisecond.
fn numbered_sender(addr: &str, port: u16, n: u32) -> String {
    format!("import socket,time\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range({n}):\n  s.sendto(i.to_bytes(4, 'big') + bytes(60), ('{addr}', {port})); time.sleep(0.001)")
}

/// A field of the report's `watchdog worker 0:` line, as a number.
#[cfg(feature = "chaos")]
fn watchdog_field(report: &str, field: &str) -> f64 {
    let line = report.lines().find(|l| l.starts_with("watchdog worker 0:")).unwrap_or_else(|| panic!("{report}"));
    let mut words = line.split_whitespace();
    words.find(|w| *w == field).unwrap_or_else(|| panic!("no `{field}` in {line}"));
    words.next().unwrap().trim_end_matches(',').parse().unwrap_or_else(|_| panic!("{field} in {line}"))
}

/// Chaos: the worker stalls for 600 ms inside a chain (the test-only `stall`
/// stage) while 2000 numbered datagrams cross the lab at 1 kpps. The watchdog
/// hands the worker's ports to the bypass forwarder, then back when the stall
/// ends; every datagram arrives exactly once, and the counters say which ones
/// went unmonitored.
#[cfg(feature = "chaos")]
#[test]
fn busy_poll_lab_chaos_a_stalled_worker_is_bypassed_and_fails_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lab = Lab::up();
    let cfg = lab.config(d);
    with_udp_chain(&cfg, "stalling", "[ { stall: { after: 500, ms: 600 } }, { copy: { to: [file] } } ]");
    let (late, report, stderr) = numbered_stream(&lab, d, &cfg, 2000, || {});
    assert!(late <= 32, "only the burst the worker held through the stall arrives late: {late}");
    assert!(stderr.contains("no heartbeat for") && stderr.contains("fail-back"), "{stderr}");
    // The stall engages the watchdog once; on a loaded host a descheduled worker can trip it
    // again, so count engagements as at least one, each failed back.
    let engaged = watchdog_field(&report, "engaged");
    assert!(engaged >= 1.0, "{report}");
    assert_eq!(watchdog_field(&report, "fail-backs"), engaged, "every engagement failed back:\n{report}");
    let bypassed = watchdog_field(&report, "bypassed-packets") as u64;
    let detection = watchdog_field(&report, "detection");
    assert!((100.0..400.0).contains(&detection), "detected after the 100 ms timeout: {detection} ms");
    // Steered datagrams ran the chain before and after the stall; the forwarder carried the rest.
    let steered = numbers(report.lines().find(|l| l.starts_with("udp-7777 ")).unwrap(), &["udp-7777"])[0];
    assert!(steered > 600 && steered < 2000, "{report}");
    assert!(steered + bypassed >= 2000, "every datagram was steered or bypassed: {steered} + {bypassed}");
    // Every steered datagram's copy reached the pcapng sink: copies resumed after the fail-back.
    assert_eq!(copies_accounted(&report, "udp-7777", "stage 1 copy:", "file"), (steered, 0));
}

/// Streams `n` numbered datagrams web1 -> db1:7777 at 1 kpps through
/// flowsteer running `cfg`, runs `during` 0.5 s into the stream, stops
/// flowsteer; checks every datagram arrived exactly once and returns
/// (how many arrived late, the final report, flowsteer's log).
fn numbered_stream(lab: &Lab, d: &Path, cfg: &Path, n: u32, during: impl FnOnce()) -> (u32, String, String) {
    let fs = start_flowsteer(cfg, d);
    assert!(lab.ping("web1", "10.77.0.21"), "{}", fs.stderr());
    let rx = lab.spawn_in("db1", &[PYTHON, "-c", &numbered_receiver("10.77.0.21", 7777)], d, "receiver");
    std::thread::sleep(Duration::from_millis(300));
    let sender = numbered_sender("10.77.0.21", 7777, n);
    std::thread::scope(|s| {
        let tx = s.spawn(|| lab.exec("web1", &[PYTHON, "-c", &sender]));
        std::thread::sleep(Duration::from_millis(500));
        during();
        let (ok, _, err) = tx.join().unwrap();
        assert!(ok, "{err}");
    });
    let t = Instant::now();
    let got = loop {
        let s = std::fs::read_to_string(&rx.out).unwrap_or_default();
        if !s.is_empty() || t.elapsed() > Duration::from_secs(10) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (code, report, stderr) = fs.stop("-INT");
    assert_eq!(code, Some(0), "{stderr}");
    eprintln!("receiver: {got}{report}");
    let words: Vec<&str> = got.split_whitespace().collect();
    let n = n.to_string();
    assert_eq!(&words[..6], ["received", &n, "unique", &n, "dup", "0"], "every original exactly once: {got}");
    assert_eq!(words[9], "0", "nothing missing: {got}");
    (words[7].parse().unwrap(), report, stderr)
}

/// The numbers of a report line after each of `fields` (`in`, `out`, ...).
fn numbers(line: &str, fields: &[&str]) -> Vec<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    fields
        .iter()
        .map(|f| {
            let i = words.iter().position(|w| w == f).unwrap_or_else(|| panic!("no `{f}` in {line}"));
            words[i + 1].parse().unwrap_or_else(|_| panic!("`{f}` in {line}"))
        })
        .collect()
}

/// Every copy the chain was asked for is written or counted as lost: the
/// steered datagrams are the copy stage's `in` plus what the worker shed
/// before the chain ran (monitoring budget, overload: "chains shed"; a
/// worker descheduled inside its chain block charges that time to the
/// budget), `in = out + shed + dropped + errors`, and the sink's
/// `out = written + errors + lost-down + queued`. Returns (written, lost).
fn copies_accounted(report: &str, rule: &str, stage: &str, sink: &str) -> (u64, u64) {
    let steered = numbers(report.lines().find(|l| l.starts_with(&format!("{rule} "))).unwrap(), &[rule])[0];
    let st = numbers(report.lines().find(|l| l.contains(stage)).unwrap(), &["in", "out", "shed", "dropped", "errors"]);
    let shed_line = report.lines().find_map(|l| l.split_once("chains shed:")).map(|(_, rest)| rest).unwrap();
    let shed: u64 = numbers(shed_line, &["budget", "overload"]).iter().sum();
    assert_eq!(st[0] + shed, steered, "the chain saw every steered datagram the worker did not shed:\n{report}");
    assert_eq!(st[0], st[1] + st[2] + st[3] + st[4], "copy stage: in = out + shed + dropped + errors:\n{report}");
    let line = report.lines().find(|l| l.starts_with(&format!("sink {sink}:"))).unwrap();
    let sk = numbers(line, &["written", "errors", "lost-down", "queued"]);
    assert_eq!(
        st[1],
        sk[0] + sk[1] + sk[2] + sk[3],
        "sink: enqueued = written + errors + lost-down + queued:\n{report}"
    );
    (sk[0], shed + st[2] + st[3] + st[4] + sk[1] + sk[2] + sk[3])
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn mount(at: PathBuf, size: &str) -> TinyDisk {
        std::fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&at).status();
        assert!(ok.unwrap().success(), "mount a tmpfs on {}", at.display());
        TinyDisk(at)
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// lab.yaml plus a rule steering UDP to port 7777 through `chain` (`stages` in YAML flow style).
fn with_udp_chain(cfg: &Path, chain: &str, stages: &str) {
    let text = std::fs::read_to_string(cfg)
        .unwrap()
        .replace("chains:\n", &format!("chains:\n  - name: {chain}\n    stages: {stages}\n"))
        .replace(
            "rules:\n",
            &format!("rules:\n  - name: udp-7777\n    priority: 150\n    match: {{ proto: udp, dst_port: 7777 }}\n    chain: {chain}\n"),
        );
    std::fs::write(cfg, text).unwrap();
}

/// Chaos: the pcapng sink's disk (a 200 KiB tmpfs) fills up in the middle of
/// a stream of 3000 numbered datagrams. Every original arrives; the sink is
/// marked down and logged; every copy is written or counted as lost, and the
/// capture holds exactly the copies counted as written.
#[test]
fn busy_poll_lab_chaos_a_full_disk_loses_copies_counted_never_originals() {
    assert!(Path::new(TSHARK).exists(), "tshark is required: apt-get install tshark");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lab = Lab::up();
    let disk = TinyDisk::mount(d.join("disk"), "200k");
    let cfg = lab.config(d);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "sinks:\n",
        &format!("sinks:\n  - {{ name: small, type: pcapng, path: {}/copies.pcapng }}\n", disk.0.display()),
    );
    std::fs::write(&cfg, text).unwrap();
    with_udp_chain(&cfg, "to-disk", "[ { copy: { to: [small] } } ]");
    let (_, report, stderr) = numbered_stream(&lab, d, &cfg, 3000, || {});
    assert!(stderr.contains("sink small:") && stderr.contains("marked down"), "the failure is logged:\n{stderr}");
    let (written, lost) = copies_accounted(&report, "udp-7777", "stage 0 copy:", "small");
    assert!(written > 100 && lost > 100, "the disk took some copies and refused the rest: {written} / {lost}");
    assert!(report.contains("dropped 0"), "no original dropped:\n{report}");
    let out = Command::new(TSHARK).args(["-n", "-r"]).arg(disk.0.join("copies.pcapng")).output().unwrap();
    let in_file = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
    assert_eq!(in_file, written, "the capture holds exactly the copies counted as written");
}

/// Chaos: a storm of configuration reloads (POST /reload as fast as they
/// are answered, and the file watcher seeing every write) while 3000
/// numbered datagrams cross the lab: valid files that change the steered
/// rule's priority and add or drop another rule alternate with invalid ones
/// (a rule naming a chain that does not exist). Every original arrives
/// exactly once, every invalid file is refused with its located error and
/// keeps the running rules, and the steered rule's counters (kept by name
/// across generations) explain every copy.
#[test]
fn busy_poll_lab_chaos_a_storm_of_reloads_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lab = Lab::up();
    let cfg = lab.config(d);
    with_udp_chain(&cfg, "storm", "[ { copy: { to: [file] } } ]");
    let base = std::fs::read_to_string(&cfg).unwrap();
    assert!(base.contains("priority: 150"), "{base}");
    let sock = d.join("ctl.sock");
    let (mut applied, mut refused) = (0u32, 0u32);
    let (_, report, stderr) = numbered_stream(&lab, d, &cfg, 3000, || {
        let t = Instant::now();
        let mut k = 0u32;
        while t.elapsed() < Duration::from_millis(1800) {
            let valid = k.is_multiple_of(2);
            let text = if valid {
                let extra = if k.is_multiple_of(4) {
                    "  - name: extra\n    priority: 90\n    match: { proto: tcp, dst_port: 9 }\n    chain: storm\n"
                } else {
                    ""
                };
                base.replace("priority: 150", &format!("priority: {}", 150 + k % 3))
                    .replace("rules:\n", &format!("rules:\n{extra}"))
            } else {
                base.replace(
                    "rules:\n",
                    "rules:\n  - name: broken\n    priority: 95\n    match: { proto: icmp }\n    chain: nowhere\n",
                )
            };
            std::fs::write(&cfg, text).unwrap();
            let out = Command::new("curl")
                .args(["-s", "-w", "\n%{http_code}", "-X", "POST", "--unix-socket"])
                .arg(&sock)
                .arg("http://localhost/reload")
                .output()
                .unwrap();
            let answer = String::from_utf8_lossy(&out.stdout).to_string();
            let code = answer.lines().last().unwrap_or_default().to_string();
            if valid {
                assert!(code == "200" || code == "202", "a valid reload is applied: {answer}");
                applied += 1;
            } else {
                assert!(code.starts_with('4'), "an invalid file is refused with a 4xx: {answer}");
                refused += 1;
            }
            k += 1;
        }
    });
    assert!(applied >= 5 && refused >= 5, "a storm: {applied} applied, {refused} refused");
    assert!(stderr.contains("nowhere"), "the refused file's error is logged:\n{stderr}");
    let (written, lost) = copies_accounted(&report, "udp-7777", "stage 0 copy:", "file");
    assert_eq!(lost, 0, "reloads cost no copy:\n{report}");
    let steered = numbers(report.lines().find(|l| l.starts_with("udp-7777 ")).unwrap(), &["udp-7777"])[0];
    assert_eq!((steered, written), (3000, 3000), "every datagram steered and copied across all generations");
    assert!(report.contains("dropped 0"), "no original dropped:\n{report}");
}

/// Chaos: the monitoring tool's interface goes down for a second in the
/// middle of a stream of 3000 numbered datagrams, then comes back. Every
/// original arrives; every copy for the tool is sent or counted as lost, and
/// copies reach the tool again once its link is up.
#[test]
fn busy_poll_lab_chaos_the_tool_interface_going_down_loses_copies_counted_never_originals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lab = Lab::up();
    let cfg = lab.config(d);
    with_udp_chain(&cfg, "to-tool", "[ { copy: { to: [ids] } } ]");
    let tool = format!("{}-tool", lab.prefix);
    let set = |state: &str| assert!(Command::new("ip").args(["link", "set", &tool, state]).status().unwrap().success());
    let (_, report, stderr) = numbered_stream(&lab, d, &cfg, 3000, || {
        set("down");
        std::thread::sleep(Duration::from_secs(1));
        set("up");
    });
    let (written, lost) = copies_accounted(&report, "udp-7777", "stage 0 copy:", "ids");
    assert!(lost > 100, "copies were lost while the tool was down: {lost}\n{stderr}");
    assert!(written > 1000, "copies reached the tool before and after: {written}");
    assert!(report.contains("dropped 0"), "no original dropped:\n{report}");
    let tool_row = report.lines().find(|l| l.starts_with("tool ")).unwrap();
    assert_eq!(numbers(tool_row, &["tool"])[0], 0, "the tool port receives nothing: {tool_row}");
}

/// A VXLAN collector on 127.0.0.1:`port` counting datagrams of VNI 42; prints the count on SIGTERM.
fn vxlan_collector(port: u16, dir: &Path, tag: &str) -> Bg {
    let script = format!("import socket,signal,sys\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', {port})); n=0\ndef done(*_):\n  print(n, flush=True); sys.exit(0)\nsignal.signal(signal.SIGTERM, done)\nprint('listening', file=sys.stderr, flush=True)\nwhile True:\n  d=s.recv(65536)\n  if len(d) >= 8 and d[4:7] == (42).to_bytes(3, 'big'): n += 1");
    let bg = Bg::spawn(Command::new(PYTHON).args(["-c", &script]), dir, tag);
    bg.wait_for_stderr("listening", Duration::from_secs(5));
    bg
}

/// Chaos: the collector of a VXLAN sink goes away for a second in the
/// middle of a stream of 3000 numbered datagrams, then a new one listens on
/// the same port. Every original arrives; the sink is marked down and
/// recovers (both logged); every copy is sent or counted as lost, and what
/// the sink counts as sent is what the two collectors received, but for a
/// few: UDP reports a closed port (ICMP) only on the send after the refused
/// datagram, so the one datagram before each failed send (the first, and one
/// per retry while the collector is away) was counted as sent and lost.
#[test]
fn busy_poll_lab_chaos_a_remote_collector_going_away_loses_copies_counted_never_originals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lab = Lab::up();
    let port = 40_000 + (std::process::id() % 20_000) as u16;
    let cfg = lab.config(d);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "sinks:\n",
        &format!("sinks:\n  - {{ name: collector, type: vxlan, destination: 127.0.0.1, vni: 42, dst_port: {port} }}\n"),
    );
    std::fs::write(&cfg, text).unwrap();
    with_udp_chain(&cfg, "to-collector", "[ { copy: { to: [collector] } } ]");
    let first = vxlan_collector(port, d, "collector1");
    let mut counts = Vec::new();
    let mut second = None;
    let (_, report, stderr) = numbered_stream(&lab, d, &cfg, 3000, || {
        // The sender needs a moment to start in its namespace.
        std::thread::sleep(Duration::from_millis(700));
        counts.push(first.stop("-TERM").1);
        std::thread::sleep(Duration::from_secs(1));
        second = Some(vxlan_collector(port, d, "collector2"));
    });
    counts.push(second.unwrap().stop("-TERM").1);
    let got: Vec<u64> = counts.iter().map(|c| c.trim().parse().unwrap_or_else(|_| panic!("{c:?}"))).collect();
    assert!(stderr.contains("sink collector:") && stderr.contains("marked down"), "{stderr}");
    assert!(stderr.contains("sink collector: recovered"), "{stderr}");
    let (written, lost) = copies_accounted(&report, "udp-7777", "stage 0 copy:", "collector");
    assert!(lost > 100, "copies were lost while nobody listened: {lost}");
    assert!(got[0] > 100 && got[1] > 100, "both collectors received copies: {got:?}");
    let received = got[0] + got[1];
    assert!(
        written >= received && written - received <= 20,
        "sent {written}, received {received}: only one datagram per failed send (retries 100 ms apart, doubling) is unaccounted"
    );
    assert!(report.contains("dropped 0"), "no original dropped:\n{report}");
}

// ---- The process bypass (`flowsteer guard`) ----

/// Runs `scripts/chaos-failover.sh` with this build on a lab of its own;
/// returns the per-fault summary lines (JSON) after checking the exit status.
fn chaos(trials: u32, faults: &str, topo: &str) -> Vec<String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let lab = format!("c{}{}", std::process::id() % 100_000, (b'a' + N.fetch_add(1, Ordering::Relaxed) as u8) as char);
    let out = Command::new(root().join("scripts/chaos-failover.sh"))
        .args([&trials.to_string(), faults, topo])
        .env("LAB", &lab)
        .env("BIN", BIN)
        .env("RATE", "5000")
        .env("HOLD", "0.6")
        .output()
        .expect("run scripts/chaos-failover.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chaos-failover failed:\n{stdout}\n{stderr}");
    let summaries: Vec<String> = stdout.lines().filter(|l| l.contains("\"fault\"")).map(str::to_string).collect();
    assert!(!Command::new("ip").args(["link", "show", &format!("{lab}-web1")]).output().unwrap().status.success());
    summaries
}

/// A number after `"key": {"median": ..., "worst": ` in a summary line.
fn worst(summary: &str, key: &str) -> f64 {
    let at = summary.find(&format!("\"{key}\": {{")).unwrap_or_else(|| panic!("{key} in {summary}"));
    let rest = &summary[at..];
    let w = rest.find("\"worst\": ").unwrap() + 9;
    rest[w..].split([',', '}']).next().unwrap().trim().parse().unwrap()
}

#[test]
fn busy_poll_guard_kill_and_hang_keep_traffic_flowing_without_duplicates_and_tcp_survives() {
    let s = chaos(3, "both", "link");
    assert_eq!(s.len(), 2, "{s:?}");
    for line in &s {
        assert!(line.contains("\"trials\": 3"), "{line}");
        assert!(line.contains("\"dup_total\": 0"), "a packet was delivered twice: {line}");
        assert!(line.contains("\"closed\": \"eof\"") && line.contains("\"bad_chunks\": 0"), "TCP broke: {line}");
        assert!(line.contains("\"ok\": true"), "{line}");
        // Generous bounds: a debug build on a shared machine. The targets (20 and 50 ms) are
        // measured with scripts/chaos-failover.sh on a release build.
        assert!(worst(line, "failover_ms") < 500.0, "{line}");
        assert!(worst(line, "install_us") < 100_000.0, "{line}");
    }
}

#[test]
fn busy_poll_guard_bridges_fail_over_to_a_linux_bridge_and_back() {
    let s = chaos(2, "kill", "bridge");
    assert!(s[0].contains("\"dup_total\": 0") && s[0].contains("\"ok\": true"), "{s:?}");
    assert!(worst(&s[0], "failover_ms") < 500.0, "{s:?}");
    assert!(!Command::new("ip").args(["link", "show", "fsg-vms"]).output().unwrap().status.success());
}

fn guard_config(lab: &Lab, dir: &Path, on_failure: &str) -> PathBuf {
    let text = std::fs::read_to_string(lab.config(dir)).unwrap()
        + &format!("guard:\n  heartbeat: {}\n  on_failure: {on_failure}\n", dir.join("hb.sock").display());
    let p = dir.join("guarded.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn has(cmd: &[&str], what: &str) -> bool {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains(what)
}

#[test]
fn busy_poll_guard_hold_stops_traffic_and_a_stopped_guard_removes_what_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::up();
    let web1 = format!("{}-web1", lab.prefix);

    // hold: the dataplane is down and nothing forwards.
    let cfg = guard_config(&lab, dir.path(), "hold");
    let mut cmd = Command::new(BIN);
    cmd.args(["-v", "guard", "-c"]).arg(&cfg).env_remove("RUST_LOG");
    let guard = Bg::spawn(&mut cmd, dir.path(), "guard");
    guard.wait_for_stderr("on_failure: hold", Duration::from_secs(10));
    assert!(!lab.exec("web1", &["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.77.0.21"]).0, "hold must not forward");
    assert!(!has(&["ip", "-d", "link", "show", "dev", &web1], "master fsg-vms"));
    let fs = start_flowsteer(&cfg, dir.path());
    assert!(lab.ping("web1", "10.77.0.21"), "{}", fs.stderr());
    let (code, stdout, stderr) = guard.stop("-TERM");
    assert_eq!(code, Some(0), "{stderr}");
    // At least the failure at start (no dataplane yet); a loaded machine may add a late heartbeat.
    let holds: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("guard.holds "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(holds >= 1, "{stdout}");
    assert!(!has(&["ip", "link", "show"], "fsg-vms"), "the guard's bridge is left behind");
    drop(fs);

    // bypass with no dataplane: the Linux bridge carries the VMs; stopped with the
    // dataplane down, the guard leaves it in place; --remove takes it away.
    let cfg = guard_config(&lab, dir.path(), "bypass");
    let mut cmd = Command::new(BIN);
    cmd.args(["-v", "guard", "-c"]).arg(&cfg).env_remove("RUST_LOG");
    let guard = Bg::spawn(&mut cmd, dir.path(), "guard2");
    guard.wait_for_stderr("bypass installed", Duration::from_secs(10));
    assert!(has(&["ip", "-d", "link", "show", "dev", &web1], "master fsg-vms"));
    assert!(lab.ping("web1", "10.77.0.12"), "through the bypass bridge: {}", guard.stderr());
    let (code, _, stderr) = guard.stop("-TERM");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("the bypass stays in place"), "{stderr}");
    assert!(lab.ping("web1", "10.77.0.21"), "the bypass outlives the guard");
    let out = Command::new(BIN).args(["guard", "--remove", "-c"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!has(&["ip", "link", "show"], "fsg-vms"), "--remove leaves the bridge");
}
