//! Real traffic through `flowsteer run` over the DPDK device kinds a user
//! plugs VMs and containers into, beyond memif (tests/memif.rs) and net_pcap
//! (tests/dpdk.rs):
//!
//! - kernel-facing ports (`net_tap`, `net_af_packet`, `net_af_xdp`): two
//!   network namespaces made by the test, 10.x.0.1/24 and 10.x.0.2/24 on the
//!   same subnet, whose only path to each other is flowsteer's link. ARP and
//!   ping must cross it, then exactly N UDP datagrams to port 7777, which a
//!   rule steers to a pcapng copy: the receiver, the rule and the sink count
//!   N, and flowsteer forwarded everything it received (rx of one port = tx
//!   of the other, no drop). With `net_tap` flowsteer creates the taps and
//!   the test moves each into its namespace; `net_af_packet` and
//!   `net_af_xdp` sit on the host ends of veth pairs whose peers are in the
//!   namespaces.
//! - vhost-user (`net_vhost`, what QEMU connects to) and its DPDK frontend
//!   `net_virtio_user` in both roles, and memif with flowsteer as the server
//!   (tests/memif.rs has it as the client): Debian's `dpdk-testpmd` is the
//!   VM side and sends exact bursts (`start tx_first`, as in
//!   tests/memif.rs); its counters and flowsteer's agree packet for packet,
//!   and the steered share is exactly one in eight.
//!
//! Every EAL runs without hugepages (`no_huge`, `--no-huge`). Every process
//! is stopped by PID, every namespace, interface, socket and DPDK runtime
//! directory removed on drop, also when an assertion fails. The tests
//! busy-poll a core: `busy_poll` in their names makes nextest run them alone.
#![cfg(feature = "dpdk")]

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";
/// UDP datagrams sent across the kernel-facing ports.
const DATAGRAMS: u64 = 200;
/// testpmd's txonly engine sends bursts of 32; 64 bursts per port and round
/// (2048 packets) fit in the 4096-entry virtio rings while testpmd is still
/// sending and not yet polling.
const BURST: u64 = 32;
const BURSTS: u64 = 64;
const ROUNDS: u64 = 3;
const VRING: u32 = 4096;

/// A name of this test's own, short enough for interface names (15 bytes):
/// `fd<pid><n>`.
fn unique() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("fd{}{}", std::process::id() % 100_000, (b'a' + N.fetch_add(1, Ordering::Relaxed) as u8) as char)
}

/// One test at a time also under `cargo test` (threads in one process):
/// each busy-polls a core and testpmd another. nextest runs them apart anyway.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a command that must succeed; returns its stdout.
fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace; deleted on drop (with the interfaces in it).
struct Netns(String);

impl Netns {
    fn add(name: String) -> Netns {
        run(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        // No IPv6 chatter: what crosses flowsteer is ARP and what the test sends.
        for key in ["all", "default"] {
            ns.exec(&["sysctl", "-qw", &format!("net.ipv6.conf.{key}.disable_ipv6=1")]);
        }
        ns
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.0];
        all.extend_from_slice(args);
        run(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// An interface in the root namespace (a veth host end); deleted on drop.
struct Link(String);

impl Drop for Link {
    fn drop(&mut self) {
        if Path::new("/sys/class/net").join(&self.0).exists() {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
}

/// `flowsteer -v run` (in namespace `netns` if given) on a configuration of
/// two linked dpdk ports `a` and `b` (`port` fields added to both; one
/// worker on core 1, no hugepages) and a rule steering `matcher` to a pcapng
/// copy; returns once it runs (its control API is up). Chain work is never
/// shed (no budget, no backlog rule): every matched packet must be copied,
/// the counts are exact.
fn flowsteer(dir: &Path, netns: Option<&str>, prefix: &str, (a, b): (&str, &str), port: &str, matcher: &str) -> Proc {
    let cfg = dir.join("flowsteer.yaml");
    std::fs::write(
        &cfg,
        format!(
            "dpdk:
  file_prefix: {prefix}
  memory_mb: 256
  no_huge: true
  mbufs: 32767
  eal_args: [\"--log-level=lib.eal:warning\"]
ports:
  - {{ name: a, type: dpdk, device: \"{a}\"{port} }}
  - {{ name: b, type: dpdk, device: \"{b}\"{port} }}
links: [[a, b]]
dataplane:
  workers:
    - core: 1
      queues: [\"a:0\", \"b:0\"]
  stats_interval: 0
  monitor_budget: 1
  overload_bursts: 0
sinks:
  - {{ name: capture, type: pcapng, path: {copies} }}
chains:
  - name: inspect
    stages:
      - copy: {{ to: [capture] }}
rules:
  - name: steered
    priority: 10
    match: {matcher}
    chain: inspect
",
            copies = dir.join("copies.pcapng").display()
        ),
    )
    .unwrap();
    let check = Command::new(BIN).args(["check", "-c"]).arg(&cfg).output().expect("run flowsteer check");
    assert!(check.status.success(), "flowsteer check: {}", String::from_utf8_lossy(&check.stderr));
    let mut cmd = match netns {
        Some(ns) => {
            // `ip netns exec` execs flowsteer: the PID is flowsteer's.
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    // A control socket of its own: another flowsteer may serve the default one.
    cmd.env_remove("RUST_LOG").arg("-v").arg("run").arg("-c").arg(&cfg).arg("--socket").arg(dir.join("ctl.sock"));
    let mut fs = Proc::spawn(&mut cmd, dir, "flowsteer", Stdio::null());
    // Devices open and started, workers polling, then the API: running.
    fs.wait_for("control API on", Duration::from_secs(60));
    fs
}

/// How the kernel-facing test reaches its namespaces.
#[derive(Clone, Copy)]
enum Kernel {
    /// flowsteer creates tap interfaces; the test moves them into the namespaces.
    Tap,
    /// veth pairs, flowsteer on the host ends with this PMD.
    AfPacket,
    AfXdp,
}

/// Namespace `ns` <-> flowsteer port a <-> port b <-> namespace: ping and
/// exactly [`DATAGRAMS`] UDP datagrams across, all counted.
fn kernel_ports(kind: Kernel, subnet: u8) {
    let _turn = one_at_a_time();
    require(PYTHON, "python3");
    require(TSHARK, "tshark");
    let id = unique();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = format!("{id}x");
    let _files = DpdkFiles(vec![prefix.clone()]);
    let ns = [Netns::add(format!("{id}-a")), Netns::add(format!("{id}-b"))];
    let ifaces = [format!("{id}a"), format!("{id}b")];
    // Host ends of the veth pairs (deleted on drop; the taps vanish with flowsteer).
    let mut _links = vec![];
    if !matches!(kind, Kernel::Tap) {
        for (n, iface) in ns.iter().zip(&ifaces) {
            run(&["ip", "link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", &n.0]);
            _links.push(Link(iface.clone()));
            run(&["sysctl", "-qw", &format!("net.ipv6.conf.{iface}.disable_ipv6=1")]);
            run(&["ip", "link", "set", iface, "up"]);
        }
    }
    let device = |i: usize| match kind {
        Kernel::Tap => format!("net_tap{i},iface={}", ifaces[i]),
        Kernel::AfPacket => format!("net_af_packet{i},iface={}", ifaces[i]),
        Kernel::AfXdp => format!("net_af_xdp{i},iface={},start_queue=0,queue_count=1", ifaces[i]),
    };
    // flowsteer makes its taps in a namespace of its own without IPv6, so
    // that nothing but what the test sends crosses it before they are moved.
    let home = matches!(kind, Kernel::Tap).then(|| Netns::add(format!("{id}-f")));
    let mut fs = flowsteer(
        d,
        home.as_ref().map(|n| n.0.as_str()),
        &prefix,
        (&device(0), &device(1)),
        "",
        "{ proto: udp, dst_port: 7777 }",
    );
    if matches!(kind, Kernel::AfXdp) {
        // libxdp attached its socket-redirect program to each host end: in
        // driver mode (`xdp`) where veth has it, else generic (`xdpgeneric`).
        for iface in &ifaces {
            let link = run(&["ip", "link", "show", iface]);
            assert!(link.contains("prog/xdp"), "no XDP program on {iface}:\n{link}");
            eprintln!("{}", link.lines().next().unwrap_or_default());
        }
    }
    let inner: [String; 2] = match kind {
        Kernel::Tap => {
            // flowsteer has started the taps (they are up); each goes to its namespace.
            for (n, iface) in ns.iter().zip(&ifaces) {
                run(&["ip", "-n", &home.as_ref().unwrap().0, "link", "set", iface, "netns", &n.0]);
            }
            ifaces.clone()
        }
        _ => ["eth0".into(), "eth0".into()],
    };
    for (i, (n, iface)) in ns.iter().zip(&inner).enumerate() {
        n.exec(&["ip", "addr", "add", &format!("10.{subnet}.0.{}/24", i + 1), "dev", iface]);
        n.exec(&["ip", "link", "set", iface, "up"]);
        // Checksums in software: a veth peer would leave them to an offload
        // that never happens on the way through flowsteer.
        let _ = Command::new("ip").args(["netns", "exec", &n.0, "ethtool", "-K", iface, "tx", "off"]).output();
    }
    let peer = format!("10.{subnet}.0.2");
    // ARP and ping across flowsteer (the first tries may go to link setup).
    let ping = |count: &str| {
        Command::new("ip")
            .args(["netns", "exec", &ns[0].0, "ping", "-c", count, "-i", "0.2", "-W", "2", &peer])
            .output()
            .expect("run ping")
    };
    let start = Instant::now();
    while !ping("1").status.success() {
        fs.assert_running();
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no ping reply across flowsteer within 20 s\n{}",
            fs.stderr()
        );
    }
    let out = ping("10");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("10 packets transmitted, 10 received"), "ping across flowsteer:\n{text}");

    // Exactly DATAGRAMS UDP datagrams, counted by a receiver in the other namespace.
    let mut rx = Proc::spawn(
        Command::new("ip").args(["netns", "exec", &ns[1].0, PYTHON, "-u", "-c"]).arg(format!(
            "import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('{peer}', 7777))
print('ready')
s.settimeout(10)
n = 0
try:
    while True:
        s.recv(2048)
        n += 1
        s.settimeout(2)
except socket.timeout:
    pass
print('received', n)
"
        )),
        d,
        "receiver",
        Stdio::null(),
    );
    rx.wait_for("ready", Duration::from_secs(10));
    ns[0].exec(&[
        PYTHON,
        "-c",
        &format!(
            "import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range({DATAGRAMS}):
    s.sendto(b'%06d' % i + bytes(58), ('{peer}', 7777))
    time.sleep(0.002)
"
        ),
    ]);
    assert_eq!(rx.wait(Duration::from_secs(30)), Some(0), "receiver: {}", rx.stderr());
    let received = rx.stdout();
    let report = fs.stop();
    let (a, b) = (report_port(&report, "a"), report_port(&report, "b"));
    eprintln!("{received}{report}");
    assert!(received.contains(&format!("received {DATAGRAMS}\n")), "UDP across flowsteer: {received}\n{report}");
    // Everything one port received left by the other: nothing dropped.
    assert_eq!((a.0, a.2, b.2), (b.1, 0, 0), "port a rx = port b tx, no drops\n{report}");
    assert_eq!(b.0, a.1, "port b rx = port a tx\n{report}");
    // 11+ pings and their replies, the datagrams, ARP.
    assert!(a.0 >= DATAGRAMS + 11 && b.0 >= 11, "{report}");
    assert_eq!(report_rule(&report, "steered"), DATAGRAMS, "{report}");
    assert_eq!(report_value(&report, "sink capture:", "written"), DATAGRAMS, "{report}");
    // The copies are the datagrams, each once, in order: tshark reads their
    // sequence numbers (the first six payload bytes).
    let out = Command::new(TSHARK)
        .arg("-n")
        .arg("-r")
        .arg(d.join("copies.pcapng"))
        .args(["-Y", &format!("ip.src == 10.{subnet}.0.1 && ip.dst == {peer} && udp.dstport == 7777")])
        .args(["-T", "fields", "-e", "data.data"])
        .output()
        .expect("run tshark");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    let seqs: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| l.get(..12).unwrap_or(l).to_string()).collect();
    let want: Vec<String> =
        (0..DATAGRAMS).map(|i| format!("{i:06}").bytes().map(|b| format!("{b:02x}")).collect()).collect();
    assert_eq!(seqs, want, "payload sequence numbers of the copies");
}

#[test]
fn busy_poll_net_tap_ping_and_udp_between_namespaces() {
    kernel_ports(Kernel::Tap, 81);
}

#[test]
fn busy_poll_net_af_packet_ping_and_udp_between_namespaces() {
    kernel_ports(Kernel::AfPacket, 82);
}

#[test]
fn busy_poll_net_af_xdp_ping_and_udp_between_namespaces() {
    kernel_ports(Kernel::AfXdp, 83);
}

/// Which end of a shared-memory interface flowsteer is.
#[derive(Clone, Copy, PartialEq)]
enum Peer {
    /// flowsteer owns the sockets with `net_vhost` (as for QEMU); testpmd
    /// connects with `net_virtio_user`.
    VhostServer,
    /// testpmd is the vhost-user server, flowsteer the `net_virtio_user` client.
    VirtioUserClient,
    /// flowsteer is the memif server, testpmd the client (tests/memif.rs has
    /// the other roles).
    MemifServer,
}

/// testpmd (VM side) <-> flowsteer over vhost-user or memif, both ways,
/// counted.
fn shared_memory_round_trip(peer: Peer) {
    let _turn = one_at_a_time();
    require(TESTPMD, "dpdk");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = unique();
    let (gen_prefix, fs_prefix) = (format!("{id}g"), format!("{id}f"));
    let _files = DpdkFiles(vec![gen_prefix.clone(), fs_prefix.clone()]);
    let sock = |n: &str| d.join(format!("{n}.sock")).display().to_string();
    let vhost = |i: usize, s: &str| format!("net_vhost{i},iface={},client=0", sock(s));
    let virtio = |i: usize, s: &str| format!("net_virtio_user{i},path={},queue_size={VRING}", sock(s));
    // 2^12 = VRING slots per memif ring.
    let memif = |i: usize, s: &str, role: &str| format!("net_memif{i},role={role},socket={},id=0,rsize=12", sock(s));
    let (gen_a, gen_b, fs_a, fs_b) = match peer {
        Peer::VhostServer => (virtio(0, "a"), virtio(1, "b"), vhost(0, "a"), vhost(1, "b")),
        Peer::VirtioUserClient => (vhost(0, "a"), vhost(1, "b"), virtio(0, "a"), virtio(1, "b")),
        Peer::MemifServer => {
            (memif(0, "a", "client"), memif(1, "b", "client"), memif(0, "a", "server"), memif(1, "b", "server"))
        }
    };
    let flowsteer_serves = peer != Peer::VirtioUserClient;
    let matcher = "{ src: 198.18.0.0/19, proto: udp, dst_port: 9 }";
    // The server listens first: flowsteer's ports exist once it runs. Its
    // rings as large as testpmd's.
    let port = format!(", rx_descriptors: {VRING}, tx_descriptors: {VRING}");
    let start_flowsteer = || flowsteer(d, None, &fs_prefix, (&fs_a, &fs_b), &port, matcher);
    let mut fs = flowsteer_serves.then(start_flowsteer);
    let gen_args: Vec<String> = [
        "--no-huge",
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
        &gen_a,
        "--vdev",
        &gen_b,
        "--log-level=lib.eal:warning",
        "--",
        "-i",
        "--forward-mode=rxonly",
        "--txonly-multi-flow",
        "--txpkts=64",
        "--nb-cores=1",
        &format!("--rxd={VRING}"),
        &format!("--txd={VRING}"),
        "--total-num-mbufs=32768",
    ]
    .map(String::from)
    .to_vec();
    let mut gen = Testpmd::start(&gen_args, d);
    if fs.is_none() {
        fs = Some(start_flowsteer());
    }
    let mut fs = fs.unwrap();

    // Both links up on testpmd's side (connected, features negotiated).
    let start = Instant::now();
    loop {
        let info = gen.cmd("show port info all");
        if info.matches("Link status: up").count() == 2 {
            break;
        }
        fs.assert_running();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "links not up within 60 s:\n{info}\nflowsteer:\n{}",
            fs.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The vhost side marks its queues ready just after the link.
    std::thread::sleep(Duration::from_millis(500));

    let per_round = BURSTS * BURST;
    gen.rounds(BURSTS, ROUNDS, &mut fs);
    let stats = gen.port_stats();
    // The client (the VM) goes first, as when a VM shuts down; testpmd's
    // virtio_user does not survive its vhost-user server going away.
    let report = if flowsteer_serves {
        gen.quit();
        fs.stop()
    } else {
        let report = fs.stop();
        gen.quit();
        report
    };
    eprintln!("testpmd (rx, tx, errors): {stats:?}\n{report}");

    let total = 2 * ROUNDS * per_round;
    let steered = total / 8;
    for (port, &(rx, tx, errors)) in stats.iter().enumerate() {
        assert_eq!((rx, tx, errors), (ROUNDS * per_round, ROUNDS * per_round, 0), "testpmd port {port}");
    }
    assert_eq!(report_port(&report, "a"), (stats[0].1, stats[0].0, 0), "port a vs testpmd port 0\n{report}");
    assert_eq!(report_port(&report, "b"), (stats[1].1, stats[1].0, 0), "port b vs testpmd port 1\n{report}");
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
    assert_eq!(report_rule(&report, "steered"), steered, "{report}");
    assert_eq!(report_value(&report, "sink capture:", "written"), steered, "{report}");
}

#[test]
fn busy_poll_net_vhost_in_flowsteer_virtio_user_in_testpmd() {
    shared_memory_round_trip(Peer::VhostServer);
}

#[test]
fn busy_poll_net_virtio_user_in_flowsteer_vhost_in_testpmd() {
    shared_memory_round_trip(Peer::VirtioUserClient);
}

#[test]
fn busy_poll_net_memif_server_in_flowsteer_client_in_testpmd() {
    shared_memory_round_trip(Peer::MemifServer);
}
