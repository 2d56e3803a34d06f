//! The command-line clients of the control API (`flowsteer rules`, `stats`,
//! `reload`, `bypass`): one HTTP/1.1 request over the Unix socket each.
//!
//! Exit codes: 0 done, 1 the server could not be reached or answered
//! nonsense, 2 the server refused the request (its error is printed).

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection, or no usable answer (exit 1).
    #[error("{0}")]
    Connection(String),
    /// The server answered with an error status (exit 2).
    #[error("{message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The server's error text.
        message: String,
    },
}

impl ClientError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Connection(_) => 1,
            ClientError::Rejected { .. } => 2,
        }
    }
}

/// A client of one control socket.
pub struct Client {
    socket: PathBuf,
}

/// A body to send and what it is.
pub struct Body {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// `application/json` or `application/yaml`.
    pub content_type: &'static str,
    /// What the user calls it (a file name), for error messages.
    pub origin: Option<String>,
}

impl Body {
    /// A rule or rules given on the command line (`TEXT`) or in a file
    /// (`-` for standard input): JSON when it starts with `{` or the file is
    /// `.json`, YAML otherwise.
    pub fn from_arg(text: Option<&str>, file: Option<&Path>) -> Result<Body, ClientError> {
        let (bytes, origin) = match (text, file) {
            (Some(t), _) => (t.as_bytes().to_vec(), None),
            (None, Some(f)) if f == Path::new("-") => {
                let mut v = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut v)
                    .map_err(|e| ClientError::Connection(format!("reading standard input: {e}")))?;
                (v, Some("(stdin)".to_string()))
            }
            (None, Some(f)) => (
                std::fs::read(f).map_err(|e| ClientError::Connection(format!("{}: {e}", f.display())))?,
                Some(f.display().to_string()),
            ),
            (None, None) => return Err(ClientError::Connection("give the rule as an argument or with --file".into())),
        };
        let json = match file {
            Some(f) if f != Path::new("-") => f.extension().is_some_and(|e| e == "json"),
            _ => bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
        };
        Ok(Body { bytes, content_type: if json { "application/json" } else { "application/yaml" }, origin })
    }
}

impl Client {
    /// A client of the socket at `socket`.
    pub fn new(socket: &Path) -> Client {
        Client { socket: socket.to_path_buf() }
    }

    /// Sends one request; returns the status and the body parsed as JSON
    /// (or as a string when it is not JSON). Error statuses become
    /// [`ClientError::Rejected`].
    pub fn call(&self, method: &str, path: &str, body: Option<&Body>) -> Result<(u16, Value), ClientError> {
        let (status, bytes) = self.raw(method, path, body)?;
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        if status >= 400 {
            let mut message =
                value.get("error").and_then(Value::as_str).map_or_else(|| value.to_string(), str::to_string);
            if let Some(origin) = body.and_then(|b| b.origin.as_deref()) {
                message = message.replacen(crate::api::rule_json::BODY, origin, 1);
            }
            return Err(ClientError::Rejected { status, message });
        }
        Ok((status, value))
    }

    /// Sends one request; returns the status and the raw body.
    pub fn raw(&self, method: &str, path: &str, body: Option<&Body>) -> Result<(u16, Vec<u8>), ClientError> {
        let conn = |e: std::io::Error| {
            ClientError::Connection(format!(
                "{}: {e}{}",
                self.socket.display(),
                match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused =>
                        " (is `flowsteer run` running? see --socket and control.socket)",
                    std::io::ErrorKind::PermissionDenied => " (only the user flowsteer runs as, and root, may connect)",
                    _ => "",
                }
            ))
        };
        let mut s = UnixStream::connect(&self.socket).map_err(conn)?;
        s.set_read_timeout(Some(Duration::from_secs(30))).map_err(conn)?;
        let (bytes, ct) = body.map_or((&[][..], "application/json"), |b| (&b.bytes[..], b.content_type));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: flowsteer\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            bytes.len()
        );
        s.write_all(head.as_bytes()).and_then(|_| s.write_all(bytes)).map_err(conn)?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).map_err(conn)?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let bad = || ClientError::Connection(format!("{}: not an HTTP answer", self.socket.display()));
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => Ok((resp.code.ok_or_else(bad)?, buf[n..].to_vec())),
            _ => Err(bad()),
        }
    }
}

/// One line about an applied change.
pub fn describe_applied(v: &Value) -> String {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let pending = v["workers_pending"].as_array().map_or(0, Vec::len);
    let mut s = format!(
        "generation {}: {} rules ({} new, {} removed, {} changed); ",
        n("generation"),
        n("rules"),
        n("added"),
        n("removed"),
        n("changed")
    );
    if pending == 0 {
        s.push_str(&format!("every worker runs it ({} us)", n("latency_us")));
    } else {
        s.push_str(&format!("workers {} have not taken it yet", v["workers_pending"]));
    }
    s
}

/// The rules as a table.
pub fn rules_table(v: &Value) -> String {
    let mut out = format!("generation {}\n", v["generation"]);
    out.push_str(&format!("{:<24} {:>8}  {:<16} {}\n", "RULE", "PRIORITY", "ACTION", "MATCH"));
    for r in v["rules"].as_array().into_iter().flatten() {
        let action = r["chain"].as_str().map_or_else(|| "drop".to_string(), |c| format!("chain {c}"));
        let mut m: Vec<String> = r["match"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect();
        if r["symmetric"].as_bool() == Some(true) {
            m.push("symmetric".into());
        }
        out.push_str(&format!(
            "{:<24} {:>8}  {:<16} {}\n",
            r["name"].as_str().unwrap_or_default(),
            r["priority"].to_string(),
            action,
            if m.is_empty() { "any".into() } else { m.join(" ") }
        ));
    }
    out
}

/// A rate in packets per second, in testpmd's units.
fn rate(now: u64, then: u64, secs: f64) -> String {
    let r = now.saturating_sub(then) as f64 / secs;
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// The stats table; with `prev` (an earlier `/stats` answer and the seconds since), rates too.
pub fn stats_table(v: &Value, prev: Option<(&Value, f64)>) -> String {
    let g = |x: &Value, k: &str| x[k].as_u64().unwrap_or(0);
    let find = |list: &str, name: &Value| -> Option<Value> {
        prev.and_then(|(p, _)| p[list].as_array()?.iter().find(|x| x["name"] == *name || x["id"] == *name).cloned())
    };
    let r = |now: u64, then: Option<u64>| match (prev, then) {
        (Some((_, secs)), Some(t)) if secs > 0.0 => rate(now, t, secs),
        _ => "-".into(),
    };
    let t = &v["totals"];
    let pt = prev.map(|(p, _)| &p["totals"]);
    let mut o = format!(
        "flowsteer  generation {}  bypass {}  up {:.0} s\ntotal  rx {} ({}/s)  tx {} ({}/s)  matched {}  unmatched {}  bypassed {}  dropped {}  copies lost {}\n\n",
        v["generation"],
        if v["bypass"].as_bool() == Some(true) { "ON" } else { "off" },
        v["uptime_seconds"].as_f64().unwrap_or(0.0),
        g(t, "rx"),
        r(g(t, "rx"), pt.map(|p| g(p, "rx"))),
        g(t, "tx"),
        r(g(t, "tx"), pt.map(|p| g(p, "tx"))),
        g(t, "matched"),
        g(t, "unmatched"),
        g(t, "bypassed"),
        g(t, "dropped"),
        g(t, "copies_lost"),
    );
    o.push_str(&format!(
        "{:<20} {:>5} {:>14} {:>10} {:>14} {:>10} {:>10}\n",
        "PORT", "LINK", "RX", "RX/s", "TX", "TX/s", "DROPPED"
    ));
    for p in v["ports"].as_array().into_iter().flatten() {
        let q = find("ports", &p["name"]);
        o.push_str(&format!(
            "{:<20} {:>5} {:>14} {:>10} {:>14} {:>10} {:>10}\n",
            p["name"].as_str().unwrap_or_default(),
            p["link"].as_str().unwrap_or_default(),
            g(p, "rx_packets"),
            r(g(p, "rx_packets"), q.as_ref().map(|q| g(q, "rx_packets"))),
            g(p, "tx_packets"),
            r(g(p, "tx_packets"), q.as_ref().map(|q| g(q, "tx_packets"))),
            g(p, "rx_dropped") + g(p, "tx_dropped"),
        ));
    }
    o.push_str(&format!(
        "\n{:<8} {:>10} {:>14} {:>10} {:>12} {:>12} {:>10}\n",
        "WORKER", "GENERATION", "RX", "RX/s", "MATCHED", "UNMATCHED", "DROPPED"
    ));
    for w in v["workers"].as_array().into_iter().flatten() {
        let q = find("workers", &w["id"]);
        o.push_str(&format!(
            "{:<8} {:>10} {:>14} {:>10} {:>12} {:>12} {:>10}\n",
            w["id"].to_string(),
            g(w, "generation"),
            g(w, "rx"),
            r(g(w, "rx"), q.as_ref().map(|q| g(q, "rx"))),
            g(w, "matched"),
            g(w, "unmatched"),
            g(w, "dropped"),
        ));
    }
    o.push_str(&format!("\n{:<24} {:>14} {:>10} {:>16}\n", "RULE", "PACKETS", "PKTS/s", "BYTES"));
    for x in v["rules"].as_array().into_iter().flatten() {
        let q = find("rules", &x["name"]);
        o.push_str(&format!(
            "{:<24} {:>14} {:>10} {:>16}\n",
            x["name"].as_str().unwrap_or_default(),
            g(x, "packets"),
            r(g(x, "packets"), q.as_ref().map(|q| g(q, "packets"))),
            g(x, "bytes"),
        ));
    }
    o.push_str(&format!(
        "\n{:<24} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "CHAIN / STAGE", "IN", "OUT", "SHED", "DROPPED", "ERRORS"
    ));
    for c in v["chains"].as_array().into_iter().flatten() {
        o.push_str(&format!("{:<24} {:>10}\n", c["name"].as_str().unwrap_or_default(), g(c, "packets")));
        for st in c["stages"].as_array().into_iter().flatten() {
            o.push_str(&format!(
                "  {:<22} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
                st["kind"].as_str().unwrap_or_default(),
                g(st, "in"),
                g(st, "out"),
                g(st, "shed"),
                g(st, "dropped"),
                g(st, "errors"),
            ));
        }
    }
    o.push_str(&format!(
        "\n{:<20} {:>5} {:>12} {:>10} {:>10} {:>10} {:>8}\n",
        "SINK", "UP", "WRITTEN", "WRITTEN/s", "ERRORS", "LOST-DOWN", "QUEUED"
    ));
    for k in v["sinks"].as_array().into_iter().flatten() {
        let q = find("sinks", &k["name"]);
        o.push_str(&format!(
            "{:<20} {:>5} {:>12} {:>10} {:>10} {:>10} {:>8}\n",
            k["name"].as_str().unwrap_or_default(),
            if k["up"].as_bool() == Some(true) { "up" } else { "DOWN" },
            g(k, "written"),
            r(g(k, "written"), q.as_ref().map(|q| g(q, "written"))),
            g(k, "errors"),
            g(k, "lost_down"),
            g(k, "queued"),
        ));
    }
    o
}

/// `flowsteer stats --watch`: redraws the table in place every `interval`
/// (ANSI: cursor home, clear to end), with rates, until interrupted or the
/// server goes away.
pub fn watch(client: &Client, interval: Duration, stop: &std::sync::atomic::AtomicBool) -> Result<(), ClientError> {
    let mut prev: Option<(Value, Instant)> = None;
    let mut out = std::io::stdout();
    let _ = write!(out, "\x1b[2J");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let (_, v) = client.call("GET", "/stats", None)?;
        let now = Instant::now();
        let table = stats_table(&v, prev.as_ref().map(|(p, t)| (p, (now - *t).as_secs_f64())));
        let _ = write!(out, "\x1b[H{}\x1b[J", table.replace('\n', "\x1b[K\n"));
        let _ = out.flush();
        prev = Some((v, now));
        let until = now + interval;
        while Instant::now() < until && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
        }
    }
    Ok(())
}
