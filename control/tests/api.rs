//! The control API end to end: the real `flowsteer run` binary, every
//! endpoint of docs/API.md driven with `curl --unix-socket`, the metrics
//! checked by `promtool check metrics`, the CLI clients, reloads by SIGHUP,
//! by file change and by request (invalid files keep the running rules),
//! bad requests (4xx, the server keeps serving), the socket's owner check.
//!
//! The dataplane runs over capture-file ports (the input is read once, then
//! the worker keeps polling), so the test needs no namespace; the worker
//! busy-polls a core, hence `busy_poll` in the test's name. Every process
//! started is stopped by PID, also when an assertion fails.

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flowsteer");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A `flowsteer run`, killed by PID on drop unless it was stopped.
struct Run {
    child: Option<Child>,
    log: PathBuf,
}

impl Run {
    fn start(cfg: &Path, log: &Path) -> Run {
        let err = std::fs::File::create(log).unwrap();
        let child = Command::new(BIN)
            .args(["-v", "run", "-c"])
            .arg(cfg)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start flowsteer run");
        Run { child: Some(child), log: log.to_path_buf() }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("/bin/kill").arg(sig).arg(self.pid().to_string()).status().unwrap();
        assert!(st.success(), "kill {sig}");
    }

    /// SIGINT, then the exit code.
    fn stop(mut self) -> Option<i32> {
        self.signal("-INT");
        let mut c = self.child.take().unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!("flowsteer did not stop on SIGINT");
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `curl --unix-socket` (or plain `curl` for a URL on TCP); returns (status, headers, body).
fn curl_full(
    sock: Option<&Path>,
    method: &str,
    url: &str,
    ctype: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "-i", "--max-time", "20", "-X", method]);
    if let Some(s) = sock {
        cmd.arg("--unix-socket").arg(s);
    }
    if let Some(t) = ctype {
        cmd.args(["-H", &format!("Content-Type: {t}")]);
    }
    if body.is_some() {
        cmd.args(["--data-binary", "@-"]);
    }
    let url = if url.starts_with("http") { url.to_string() } else { format!("http://localhost{url}") };
    cmd.arg(&url).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("curl");
    {
        let mut stdin = child.stdin.take().unwrap();
        if let Some(b) = body {
            stdin.write_all(b).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("curl {method} {url}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// `curl --unix-socket` with a JSON answer.
fn curl(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, _, text) =
        curl_full(Some(sock), method, path, body.map(|_| "application/json"), body.map(str::as_bytes));
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    (status, v)
}

/// `flowsteer ARGS --socket SOCK`; returns (exit code, stdout, stderr).
fn cli(sock: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).arg("--socket").arg(sock).env_remove("RUST_LOG").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rule_names(sock: &Path) -> Vec<String> {
    let (s, v) = curl(sock, "GET", "/rules", None);
    assert_eq!(s, 200);
    v["rules"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect()
}

/// Waits until `f` holds (at most `secs`).
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn config(d: &Path, metrics_port: u16, extra_rules: &str, tx: &str) -> String {
    format!(
        "dataplane:\n  stats_interval: 0\nports:\n  - {{ name: vm-web-1, type: pcap, rx: {} }}\n  - {{ name: uplink, type: pcap, tx: {}/{tx} }}\nlinks:\n  - [vm-web-1, uplink]\nsinks:\n  - {{ name: ids, type: pcapng, path: {}/copies.pcapng }}\nchains:\n  - name: inspect\n    stages:\n      - copy: {{ to: [ids] }}\ncontrol:\n  socket: {}/ctl/flowsteer.sock\n  metrics_listen: 127.0.0.1:{metrics_port}\nrules:\n  - name: web-to-db\n    priority: 100\n    match: {{ src: 10.0.0.8/29, dst: 10.0.0.21, proto: tcp, dst_port: 5432 }}\n    symmetric: true\n    chain: inspect\n  - name: icmp-audit\n    priority: 50\n    match: {{ proto: icmp }}\n    chain: inspect\n{extra_rules}",
        root().join("examples/sample.pcapng").display(),
        d.display(),
        d.display(),
        d.display(),
    )
}

#[test]
fn busy_poll_control_api_end_to_end_with_curl_cli_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Others must be able to reach the socket's directory: the socket's own mode is what keeps them out.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = d.join("flowsteer.yaml");
    std::fs::write(&cfg, config(d, metrics_port, "", "fwd.pcapng")).unwrap();
    let sock = d.join("ctl/flowsteer.sock");
    // A stale socket from a crashed run is removed at start.
    std::fs::create_dir_all(d.join("ctl")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());

    let run = Run::start(&cfg, &d.join("run.log"));
    eventually(10, "the control API", || UnixStream::connect(&sock).is_ok());
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode");
    assert!(run.log().contains("removed the stale control socket"), "{}", run.log());

    // A second instance on the same socket refuses to start and leaves the first alone.
    let cfg2 = d.join("second.yaml");
    std::fs::write(&cfg2, config(d, 0, "", "fwd2.pcapng")).unwrap();
    let second = Command::new(BIN).args(["run", "-c"]).arg(&cfg2).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("another flowsteer is serving on it"), "{second:?}");

    // Health and the rules as started.
    let (s, h) = curl(&sock, "GET", "/health", None);
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["workers"][0]["generation"], 1);
    assert_eq!(h["sinks"][0]["name"], "ids");
    assert_eq!(h["sinks"][0]["up"], true);
    assert_eq!(rule_names(&sock), ["web-to-db", "icmp-audit"]);
    let (s, r) = curl(&sock, "GET", "/rules/web-to-db", None);
    assert_eq!(s, 200);
    assert_eq!(r["match"]["dst"], "10.0.0.21/32");
    assert_eq!(r["match"]["dst_port"], 5432);
    assert_eq!((r["symmetric"].as_bool(), r["chain"].as_str()), (Some(true), Some("inspect")));
    let (s, e) = curl(&sock, "GET", "/rules/nope", None);
    assert_eq!(s, 404);
    assert!(e["error"].as_str().unwrap().contains("no rule `nope`"));

    // Stats: the capture went through; the ICMP packets were counted under their rule.
    eventually(10, "the capture to be forwarded", || {
        let (_, v) = curl(&sock, "GET", "/stats", None);
        v["totals"]["rx"].as_u64() > Some(0) && v["totals"]["rx"] == v["totals"]["tx"]
    });
    let (s, st) = curl(&sock, "GET", "/stats", None);
    assert_eq!(s, 200);
    let rx = st["totals"]["rx"].as_u64().unwrap();
    assert_eq!(st["ports"][0]["name"], "vm-web-1");
    assert_eq!(st["ports"][0]["rx_packets"].as_u64(), Some(rx));
    assert_eq!(st["workers"][0]["rx"].as_u64(), Some(rx));
    let icmp = st["rules"].as_array().unwrap().iter().find(|r| r["name"] == "icmp-audit").unwrap()["packets"]
        .as_u64()
        .unwrap();
    assert!(icmp > 0, "{st}");
    assert_eq!(st["chains"][0]["stages"][0]["kind"], "copy");
    assert_eq!(st["sinks"][0]["name"], "ids");

    // Add, replace, delete one rule.
    let dns = r#"{"name": "dns", "priority": 5, "match": {"proto": "udp", "dst_port": 53}, "chain": "inspect"}"#;
    let (s, a) = curl(&sock, "POST", "/rules", Some(dns));
    assert_eq!(s, 201, "{a}");
    assert_eq!((a["generation"].as_u64(), a["rules"].as_u64(), a["added"].as_u64()), (Some(2), Some(3), Some(1)));
    assert_eq!(a["workers_pending"], serde_json::json!([]));
    let (s, a) = curl(&sock, "POST", "/rules", Some(dns));
    assert_eq!(s, 409, "{a}");
    let (s, a) = curl(&sock, "PUT", "/rules/dns", Some(&dns.replace("\"priority\": 5", "\"priority\": 6")));
    assert_eq!((s, a["changed"].as_u64()), (200, Some(1)), "{a}");
    let (s, a) = curl(&sock, "PUT", "/rules/dns", Some(&dns.replace("\"dns\"", "\"other\"")));
    assert_eq!(s, 400, "{a}");
    let (s, _) = curl(
        &sock,
        "PUT",
        "/rules/ntp",
        Some(&dns.replace("dns", "ntp").replace("53", "123").replace("\"priority\": 5", "\"priority\": 7")),
    );
    assert_eq!(s, 201);
    // Counters of a rule that keeps its name survive a replacement of the whole set.
    let (s, a) = curl(&sock, "GET", "/rules", None);
    assert_eq!(s, 200);
    let mut all = a["rules"].as_array().unwrap().clone();
    all.retain(|r| r["name"] != "ntp");
    let (s, a) = curl(&sock, "PUT", "/rules", Some(&serde_json::json!({ "rules": all }).to_string()));
    assert_eq!((s, a["removed"].as_u64(), a["added"].as_u64()), (200, Some(1), Some(0)), "{a}");
    let (_, st) = curl(&sock, "GET", "/stats", None);
    let icmp_now =
        st["rules"].as_array().unwrap().iter().find(|r| r["name"] == "icmp-audit").unwrap()["packets"].as_u64();
    assert_eq!(icmp_now, Some(icmp), "icmp-audit's counter after two updates");
    let (s, _) = curl(&sock, "DELETE", "/rules/dns", None);
    assert_eq!(s, 200);
    let (s, _) = curl(&sock, "DELETE", "/rules/dns", None);
    assert_eq!(s, 404);
    assert_eq!(rule_names(&sock), ["web-to-db", "icmp-audit"]);

    // Bad requests: 4xx, located where they can be, and the server keeps serving.
    let (s, e) =
        curl(&sock, "POST", "/rules", Some("{\n  \"name\": \"x\",\n  \"priority\": 1,\n  \"match\": {\"src\": }\n}"));
    assert_eq!(s, 400);
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64(), e["field"].as_str()),
        (Some(4), Some(20), Some("match.src")),
        "{e}"
    );
    let (s, e) = curl(&sock, "POST", "/rules", Some(r#"{"name": "x", "priority": 1, "chian": "inspect"}"#));
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("unknown field `chian`"), "{e}");
    let (s, e) = curl(&sock, "POST", "/rules", Some(r#"{"name": "x", "priority": 1, "chain": "nope"}"#));
    assert_eq!((s, e["field"].as_str()), (400, Some("chain")), "{e}");
    let (s, e) = curl(
        &sock,
        "POST",
        "/rules",
        Some(
            r#"{"name": "x", "priority": 100, "match": {"proto": "tcp", "dst_port": 5432, "src": "10.0.0.9", "dst": "10.0.0.21"}, "chain": "inspect"}"#,
        ),
    );
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("same priority 100"), "{e}");
    let (s, e) = curl(
        &sock,
        "POST",
        "/rules",
        Some(r#"{"name": "x", "priority": 1, "match": {"dst": "10.0.0.300/24"}, "chain": "inspect"}"#),
    );
    assert_eq!((s, e["field"].as_str()), (400, Some("match.dst")), "{e}");
    let big = vec![b' '; 33 * 1024 * 1024];
    let (s, _, body) = curl_full(Some(&sock), "PUT", "/rules", Some("application/json"), Some(&big));
    assert_eq!(s, 413, "{body}");
    let (s, head, _) = curl_full(Some(&sock), "PATCH", "/rules", None, None);
    assert_eq!(s, 405);
    assert!(head.contains("Allow: GET, POST, PUT, DELETE"), "{head}");
    let (s, head, _) = curl_full(Some(&sock), "DELETE", "/stats", None, None);
    assert!(s == 405 && head.contains("Allow: GET"), "{head}");
    let (s, _, _) = curl_full(Some(&sock), "GET", "/nothing-here", None, None);
    assert_eq!(s, 404);
    let (s, _, _) = curl_full(Some(&sock), "POST", "/rules", Some("text/html"), Some(b"<p>"));
    assert_eq!(s, 415);
    let (s, _) = curl(&sock, "POST", "/bypass", Some(r#"{"on": "maybe"}"#));
    assert_eq!(s, 400);
    // Slow clients hold a connection each, up to the limit; others are still answered, the
    // ones over the limit get 503 at once, and their going away frees the slots.
    let mut idle: Vec<UnixStream> = (0..5).map(|_| UnixStream::connect(&sock).unwrap()).collect();
    idle[0].write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t = Instant::now();
    assert_eq!(curl(&sock, "GET", "/health", None).0, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "a slow client blocked another");
    idle.extend((0..16).map(|_| UnixStream::connect(&sock).unwrap()));
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = UnixStream::connect(&sock).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(idle);
    eventually(5, "the slots to be free", || curl_full(Some(&sock), "GET", "/health", None, None).0 == 200);
    assert!(rule_names(&sock).len() == 2);

    // Metrics, on the socket and on the TCP listener; promtool accepts them.
    let (s, head, text) = curl_full(Some(&sock), "GET", "/metrics", None, None);
    assert_eq!(s, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(text.contains(&format!("flowsteer_rule_packets_total{{rule=\"icmp-audit\"}} {icmp}\n")), "{text}");
    assert!(text.contains("flowsteer_port_rx_packets_total{port=\"vm-web-1\"}"));
    assert!(text.contains("# TYPE flowsteer_dropped_packets_total counter"));
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let p = promtool.wait_with_output().unwrap();
    assert!(
        p.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&p.stdout),
        String::from_utf8_lossy(&p.stderr)
    );
    let url = format!("http://127.0.0.1:{metrics_port}");
    let (s, _, tcp) = curl_full(None, "GET", &format!("{url}/metrics"), None, None);
    assert_eq!(s, 200);
    assert!(tcp.contains("flowsteer_rules 2\n"), "{tcp}");
    assert_eq!(curl_full(None, "GET", &format!("{url}/rules"), None, None).0, 404);
    assert_eq!(curl_full(None, "POST", &format!("{url}/metrics"), None, None).0, 405);

    // Bypass by hand: health reports it.
    let (s, b) = curl(&sock, "POST", "/bypass", Some(r#"{"on": true}"#));
    assert_eq!((s, b["on"].as_bool(), b["was"].as_bool()), (200, Some(true), Some(false)));
    let (s, h) = curl(&sock, "GET", "/health", None);
    assert_eq!((s, h["status"].as_str(), h["bypass"].as_bool()), (503, Some("degraded"), Some(true)), "{h}");
    let (s, b) = curl(&sock, "GET", "/bypass", None);
    assert_eq!((s, b["on"].as_bool()), (200, Some(true)));
    let (s, _) = curl(&sock, "POST", "/bypass", Some(r#"{"on": false}"#));
    assert_eq!(s, 200);
    assert_eq!(curl(&sock, "GET", "/health", None).0, 200);

    // Reloads: by request, invalid files keep the rules, other sections need a restart.
    let more = "  - { name: reloaded, priority: 10, match: { proto: udp }, chain: inspect }\n";
    std::fs::write(&cfg, config(d, metrics_port, more, "fwd.pcapng")).unwrap();
    let (s, a) = curl(&sock, "POST", "/reload", None);
    assert_eq!(s, 200, "{a}");
    assert_eq!(rule_names(&sock), ["web-to-db", "icmp-audit", "reloaded"]);
    let bad = config(
        d,
        metrics_port,
        "  - { name: broken, priority: 11, match: { dst: 10.0.0.300 }, chain: inspect }\n",
        "fwd.pcapng",
    );
    std::fs::write(&cfg, &bad).unwrap();
    let (s, e) = curl(&sock, "POST", "/reload", None);
    assert_eq!(s, 400, "{e}");
    let line = bad.lines().position(|l| l.contains("broken")).unwrap() + 1;
    let msg = e["error"].as_str().unwrap();
    assert!(msg.starts_with(&format!("{}:{line}:", cfg.display())), "{msg}");
    assert!(msg.contains("rules[2].match.dst"), "{msg}");
    assert_eq!(rule_names(&sock), ["web-to-db", "icmp-audit", "reloaded"]);
    std::fs::write(&cfg, config(d, metrics_port, more, "other.pcapng")).unwrap();
    let (s, e) = curl(&sock, "POST", "/reload", None);
    assert_eq!(s, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("section `ports` changed"), "{e}");
    // SIGHUP.
    let hup = "  - { name: via-hup, priority: 12, match: { proto: sctp }, chain: inspect }\n";
    std::fs::write(&cfg, config(d, metrics_port, hup, "fwd.pcapng")).unwrap();
    run.signal("-HUP");
    eventually(5, "the SIGHUP reload", || rule_names(&sock).contains(&"via-hup".to_string()));
    // A change of the file alone.
    let watched = "  - { name: via-watch, priority: 13, match: { proto: 47 }, chain: inspect }\n";
    std::fs::write(&cfg, config(d, metrics_port, watched, "fwd.pcapng")).unwrap();
    eventually(5, "the file-change reload", || rule_names(&sock).contains(&"via-watch".to_string()));
    assert!(!rule_names(&sock).contains(&"via-hup".to_string()));
    assert!(run.log().contains("reload (SIGHUP): generation"), "{}", run.log());
    assert!(run.log().contains("reload (file changed): generation"), "{}", run.log());

    // The CLI clients.
    let (c, out, err) = cli(&sock, &["rules", "list"]);
    assert_eq!(c, 0, "{err}");
    assert!(out.contains("via-watch") && out.contains("chain inspect") && out.contains("dst=10.0.0.21/32"), "{out}");
    let yaml = d.join("rule.yaml");
    std::fs::write(
        &yaml,
        "name: from-cli\npriority: 20\nmatch: { proto: udp, dst_port: \"8000-8080\" }\naction: drop\n",
    )
    .unwrap();
    let (c, out, err) = cli(&sock, &["rules", "add", "-f", yaml.to_str().unwrap()]);
    assert_eq!(c, 0, "{err}");
    assert!(out.contains("1 new") && out.contains("every worker runs it"), "{out}");
    let (c, _, err) = cli(&sock, &["rules", "add", "-f", yaml.to_str().unwrap()]);
    assert_eq!(c, 2);
    assert!(err.contains("rule `from-cli` already exists"), "{err}");
    std::fs::write(&yaml, "name: from-cli\npriority: 20\nmatch: { proto: udp, dst_port: 99999 }\naction: drop\n")
        .unwrap();
    let (c, _, err) = cli(&sock, &["rules", "replace", "from-cli", "-f", yaml.to_str().unwrap()]);
    assert_eq!(c, 2);
    assert!(err.contains(&format!("{}:3:", yaml.display())) && err.contains("match.dst_port"), "{err}");
    let (c, out, err) = cli(
        &sock,
        &["rules", "replace", "from-cli", "--rule", r#"{"name": "from-cli", "priority": 21, "action": "drop"}"#],
    );
    assert_eq!(c, 0, "{err}");
    assert!(out.contains("1 changed"), "{out}");
    let (c, out, _) = cli(&sock, &["rules", "list", "--json"]);
    assert_eq!(c, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    let json_file = d.join("all.json");
    std::fs::write(&json_file, serde_json::json!({ "rules": listed["rules"] }).to_string()).unwrap();
    let (c, out, err) = cli(&sock, &["rules", "replace", "--all", "-f", json_file.to_str().unwrap()]);
    assert_eq!(c, 0, "{err}");
    assert!(out.contains("0 new, 0 removed, 0 changed"), "{out}");
    let (c, _, _) = cli(&sock, &["rules", "del", "from-cli"]);
    assert_eq!(c, 0);
    let (c, _, err) = cli(&sock, &["rules", "del", "from-cli"]);
    assert_eq!(c, 2, "{err}");
    let (c, out, _) = cli(&sock, &["stats"]);
    assert_eq!(c, 0);
    assert!(
        out.contains("PORT") && out.contains("vm-web-1") && out.contains("icmp-audit") && out.contains("ids"),
        "{out}"
    );
    let (c, out, _) = cli(&sock, &["stats", "--json"]);
    assert_eq!(c, 0);
    assert!(serde_json::from_str::<Value>(&out).unwrap()["totals"]["rx"].as_u64() == Some(rx));
    let watch = Command::new(BIN)
        .args(["stats", "--watch", "--interval", "0.2", "--socket"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(900));
    let st = Command::new("/bin/kill").arg("-INT").arg(watch.id().to_string()).status().unwrap();
    assert!(st.success());
    let w = watch.wait_with_output().unwrap();
    assert_eq!(w.status.code(), Some(0));
    let screen = String::from_utf8_lossy(&w.stdout);
    assert!(screen.matches("\x1b[H").count() >= 3, "not redrawn in place: {screen:?}");
    assert!(screen.contains("RX/s") && screen.contains("0/s"), "no rates: {screen}");
    let (c, out, err) = cli(&sock, &["bypass", "on"]);
    assert_eq!((c, out.trim()), (0, "bypass on (was off)"), "{err}");
    let (c, out, _) = cli(&sock, &["bypass", "off"]);
    assert_eq!((c, out.trim()), (0, "bypass off (was on)"));
    let (c, out, err) = cli(&sock, &["reload"]);
    assert_eq!(c, 0, "{err}");
    assert!(out.starts_with("reloaded: generation"), "{out}");
    let (c, _, err) = cli(&sock, &["rules", "del", "--all"]);
    assert_eq!(c, 0, "{err}");
    assert!(rule_names(&sock).is_empty());
    let (c, _, err) = cli(&d.join("nothing.sock"), &["stats"]);
    assert_eq!(c, 1);
    assert!(err.contains("is `flowsteer run` running?"), "{err}");

    // Only the owner (and root) can connect: another user is stopped by the socket's mode,
    // and, should the mode be widened by mistake, by the peer-credential check.
    let nobody = |path: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "curl", "-s", "-S", "--unix-socket"])
            .arg(&sock)
            .arg(format!("http://localhost{path}"))
            .output()
            .unwrap()
    };
    std::fs::set_permissions(d.join("ctl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = nobody("/health");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied")
            || String::from_utf8_lossy(&o.stderr).contains("Couldn't connect"),
        "{o:?}"
    );
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = nobody("/rules");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("uid 65534 is not allowed"), "{o:?}");
    assert!(run.log().contains("refused a connection: uid 65534"), "{}", run.log());

    assert_eq!(run.stop(), Some(0));
    assert!(!sock.exists(), "the socket is removed at exit");
}
