//! Crash and supervised restart on DPDK ports the kernel cannot take over
//! (memif, vhost-user), end to end with the restart harness
//! (`benches/src/bin/restart.rs`, built here): it plays the VMs with its
//! own DPDK process, sends numbered packets through flowsteer, kills
//! flowsteer with SIGKILL three times and starts it again each time.
//!
//! Asserted, for memif (flowsteer the memif client) and vhost-user
//! (flowsteer's `net_vhost` the client of virtio_user ports with
//! `server=1`): traffic comes back after every restart, no packet arrives
//! twice, every restart writes copies of packets sent after it (the
//! harness reads each start's pcapng with tshark; this test reads the last
//! one again), and nothing is left: no flowsteer process, no DPDK runtime
//! directory, no socket. Without hugepages (`--no-huge`), so nothing is
//! reserved. Busy-polls both cores: `busy_poll` in the names makes nextest
//! run them alone.
#![cfg(feature = "dpdk")]

mod common;

use common::{require, root, Proc, BIN, TSHARK};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TRIALS: usize = 3;

/// Builds the restart harness (the benches crate's `restart` binary, behind
/// its `dpdk` feature) and returns its path.
fn harness() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args(["build", "-p", "benches", "--features", "benches/dpdk", "--bin", "restart"])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "building the restart harness failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "restart")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo did not report the restart executable")
}

/// One value from the harness's `restart:` line (`key value`).
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            return words.next().unwrap_or_default();
        }
    }
    panic!("no `{key}` in `{line}`");
}

fn restarts_busy_poll(mode: &str) {
    require(TSHARK, "tshark");
    let exe = harness();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(&exe)
        .args(["--mode", mode, "--trials", &TRIALS.to_string(), "--settle-ms", "300", "--no-huge"])
        .arg("--flowsteer")
        .arg(BIN)
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run the restart harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = || {
        let err: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("VHOST_CONFIG")).collect();
        format!("stdout:\n{stdout}\nstderr (without VHOST_CONFIG):\n{}", err[err.len().saturating_sub(40)..].join("\n"))
    };
    assert!(out.status.success(), "the harness failed ({}) after {:?}\n{}", out.status, started.elapsed(), context());

    let line = stdout.lines().find(|l| l.starts_with("restart: mode")).unwrap_or_else(|| panic!("{}", context()));
    assert_eq!(field(line, "trials"), TRIALS.to_string(), "{}", context());
    assert_eq!(field(line, "resumed"), TRIALS.to_string(), "traffic did not come back every time\n{}", context());
    assert_eq!(field(line, "duplicates"), "0", "packets arrived twice\n{}", context());
    assert_eq!(field(line, "copies_resumed"), TRIALS.to_string(), "copies did not resume\n{}", context());
    // One row per trial, each with a first packet after the restart.
    let rows: Vec<&str> =
        stdout.lines().filter(|l| l.split_whitespace().next().is_some_and(|w| w.parse::<usize>().is_ok())).collect();
    assert_eq!(rows.len(), TRIALS, "{}", context());

    // The last start was stopped with SIGTERM: its pcapng is complete. tshark
    // decodes the copies: the stream's UDP packets, with the harness's marker.
    let last = dir.path().join(format!("copies-{TRIALS}.pcapng"));
    let t = Command::new(TSHARK)
        .args(["-n", "-r"])
        .arg(&last)
        .args(["-Y", "udp.dstport == 5001", "-T", "fields", "-e", "udp.payload"])
        .output()
        .expect("run tshark");
    assert!(t.status.success(), "tshark -r {}: {}", last.display(), String::from_utf8_lossy(&t.stderr));
    let payloads = String::from_utf8_lossy(&t.stdout);
    let copies = payloads.lines().filter(|l| l.replace(':', "").starts_with("46535245535452")).count();
    assert!(copies > 1000, "{} holds {copies} copies of the stream after the last restart", last.display());

    // Nothing left behind: every flowsteer the harness started is gone, and
    // so are both DPDK runtime directories and every socket.
    for pid in field(line, "flowsteer_pids").split(',') {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "flowsteer {pid} is still there");
    }
    let harness_pid = field(line, "harness_pid");
    for prefix in [format!("fsrp{harness_pid}"), format!("fsrf{harness_pid}")] {
        assert!(!Path::new(&format!("/var/run/dpdk/{prefix}")).exists(), "DPDK runtime directory {prefix} is left");
    }
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".sock"), "a socket is left: {name}");
    }
}

#[test]
fn memif_restart_after_kill_busy_poll() {
    restarts_busy_poll("memif");
}

#[test]
fn vhost_user_restart_after_kill_busy_poll() {
    restarts_busy_poll("vhost");
}

/// The harness cleans up when it is interrupted (Ctrl-C) in the middle of a run.
#[test]
fn restart_harness_interrupted_busy_poll() {
    let exe = harness();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&exe);
    cmd.args(["--mode", "memif", "--trials", "50", "--no-huge", "--flowsteer", BIN, "--dir"]).arg(dir.path());
    // Killed by PID on drop, also when an assertion below fails.
    let mut harness = Proc::spawn(&mut cmd, dir.path(), "harness", Stdio::null());
    // Until flowsteer has been started at least twice (one kill).
    let t = Instant::now();
    while !dir.path().join("flowsteer-1.log").exists() && t.elapsed() < Duration::from_secs(60) {
        harness.assert_running();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dir.path().join("flowsteer-1.log").exists(), "no restart within 60 s");
    harness.signal("-INT");
    let code = harness.wait(Duration::from_secs(30));
    assert_ne!(code, Some(0), "an interrupted run reports failure");
    let pid = harness.id();
    let prefix = format!("fsrf{pid}");
    assert!(!Path::new(&format!("/var/run/dpdk/{prefix}")).exists(), "{prefix} runtime directory left");
    assert!(!Path::new(&format!("/var/run/dpdk/fsrp{pid}")).exists(), "peer runtime directory left");
    let procs = Command::new("pgrep").args(["-f", &dir.path().display().to_string()]).output().unwrap();
    assert!(procs.stdout.is_empty(), "processes of the run are left: {}", String::from_utf8_lossy(&procs.stdout));
}
