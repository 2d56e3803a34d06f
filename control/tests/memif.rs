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

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bursts of 32 packets per port and round: 2^13 packets, within a 2^14 ring.
const BURSTS: u64 = 256;
const ROUNDS: u64 = 4;
/// testpmd's txonly engine sends bursts of 32.
const BURST: u64 = 32;

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
    let (gen_prefix, fs_prefix) = (unique_prefix("fsm"), unique_prefix("fsm"));
    // testpmd 256 MB + flowsteer 256 MB, and room for what others hold.
    // Dropped after the files below are removed, so the pages are free.
    let _pages = (!no_huge).then(|| Hugepages::reserve(512));
    let _files = DpdkFiles(vec![gen_prefix.clone(), fs_prefix.clone()]);
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

    let per_round = BURSTS * BURST;
    gen.rounds(BURSTS, ROUNDS, &mut fs);
    let stats = gen.port_stats();

    fs.signal("-INT");
    let code = fs.wait(Duration::from_secs(20));
    let report = fs.stdout();
    assert_eq!(code, Some(0), "flowsteer exit {code:?}\nstdout:\n{report}\nstderr:\n{}", fs.stderr());
    gen.quit_after_peer_left();

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
