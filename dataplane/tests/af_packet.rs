//! The AF_PACKET port on real interfaces: two network namespaces, each with
//! one end of a veth pair; the test owns the other ends in the root namespace
//! and forwards between them through `AfPacketPort`s, a bump in the wire.
//! Addresses (10.99.0.0/24) exist only inside the namespaces, so no traffic
//! leaves them. Needs root (namespaces, packet sockets) and `ip`/`ping`.

// One module so that `cargo test -p dataplane af_packet` selects every test here.
mod af_packet {
    use dataplane::packet::Pool;
    use dataplane::port::af_packet::{AfPacketConfig, AfPacketError, AfPacketPort};
    use dataplane::port::{Burst, Port};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    /// Runs `args` and panics with its output when it fails.
    fn sh(args: &[&str]) {
        let out = Command::new(args[0]).args(&args[1..]).output().expect("spawn");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Two namespaces ("VMs") at 10.99.0.1 and 10.99.0.2, each reached
    /// through a veth whose host end (`a`, `b`) the test owns. Everything is
    /// deleted on drop, also when a test panics.
    struct Lab {
        ns: [String; 2],
        a: String,
        b: String,
    }

    impl Lab {
        /// A lab with `mtu` on both ends of both veths; names are unique per
        /// process and lab, so tests may also run as threads of one process.
        fn new(mtu: u32) -> Lab {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let pid = std::process::id();
            let lab = Lab {
                ns: [format!("fs-{pid}-{}", 2 * n), format!("fs-{pid}-{}", 2 * n + 1)],
                a: format!("fsA{pid}_{n}"),
                b: format!("fsB{pid}_{n}"),
            };
            let mtu = mtu.to_string();
            for (i, (ns, host)) in lab.ns.iter().zip([&lab.a, &lab.b]).enumerate() {
                let addr = format!("10.99.0.{}/24", i + 1);
                sh(&["ip", "netns", "add", ns]);
                sh(&["ip", "link", "add", host, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "netns", ns]);
                // No IPv6 chatter: every packet in the lab is one the test caused.
                sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
                sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"]);
                std::fs::write(format!("/proc/sys/net/ipv6/conf/{host}/disable_ipv6"), "1").expect("sysctl");
                sh(&["ip", "-n", ns, "link", "set", "eth0", "mtu", &mtu, "up"]);
                sh(&["ip", "-n", ns, "addr", "add", &addr, "dev", "eth0"]);
                sh(&["ip", "link", "set", host, "up"]);
            }
            lab
        }

        /// `ping` from the first namespace to the second, with extra arguments.
        fn ping(&self, args: &[&str]) -> Command {
            self.ping_from(0, args)
        }

        /// `ping` from namespace `from` (0 or 1) to the other one.
        fn ping_from(&self, from: usize, args: &[&str]) -> Command {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.ns[from], "ping", "-q"]).args(args);
            c.arg(if from == 0 { "10.99.0.2" } else { "10.99.0.1" });
            c
        }

        fn port(&self, host: &str, id: u16, cfg: impl FnOnce(&mut AfPacketConfig)) -> AfPacketPort {
            let mut c = AfPacketConfig::new(host);
            cfg(&mut c);
            AfPacketPort::open(host, id, &c, Pool::new(1024, 2048)).expect("open")
        }

        /// Default ports on the two host ends: ids 0 (`a`) and 1 (`b`).
        fn ports(&self) -> Vec<AfPacketPort> {
            vec![self.port(&self.a, 0, |_| {}), self.port(&self.b, 1, |_| {})]
        }
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            // Deleting a host end deletes its peer; ignore what is already gone.
            for host in [&self.a, &self.b] {
                let _ = Command::new("ip").args(["link", "del", host]).stderr(Stdio::null()).status();
            }
            for ns in &self.ns {
                let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
            }
        }
    }

    /// One pass of a bump in the wire over port pairs (`ports[2k]`,
    /// `ports[2k+1]`): what one receives the other transmits. Checks the
    /// metadata every received packet must carry.
    fn forward(ports: &mut [AfPacketPort], burst: &mut Burst) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        for pair in ports.chunks_mut(2) {
            for from in 0..2 {
                let (rx, tx) = if from == 0 {
                    pair.split_at_mut(1)
                } else {
                    let (l, r) = pair.split_at_mut(1);
                    (r, l)
                };
                let (rx, tx) = (&mut rx[0], &mut tx[0]);
                if rx.rx_burst(burst) > 0 {
                    for p in burst.iter() {
                        assert_eq!(p.meta.port, rx.id());
                        assert!(p.meta.ts_ns.abs_diff(now) < 60 * 1_000_000_000, "ts {}", p.meta.ts_ns);
                    }
                    tx.tx_burst(burst);
                }
            }
        }
    }

    /// Forwards while `cmd` runs (at most `limit`); true when it succeeded.
    fn forward_while(ports: &mut [AfPacketPort], mut cmd: Command, limit: Duration) -> bool {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
        forward_until_exit(ports, &mut child, limit)
    }

    /// Forwards until `child` exits (killed after `limit`); true when it succeeded.
    fn forward_until_exit(ports: &mut [AfPacketPort], child: &mut Child, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut burst = Burst::new();
        loop {
            forward(ports, &mut burst);
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }

    #[test]
    fn busy_poll_bump_in_the_wire_carries_arp_and_ping() {
        let lab = Lab::new(1500);
        // Nothing connects the namespaces but us.
        assert!(!lab.ping(&["-c", "1", "-W", "1"]).status().unwrap().success());
        let mut ports = lab.ports();
        assert!(ports[0].link_up() && ports[1].link_up());
        assert!(forward_while(&mut ports, lab.ping(&["-c", "5", "-i", "0.2"]), Duration::from_secs(5)));
        let (a, b) = (ports[0].stats(), ports[1].stats());
        // ARP request and reply, five echo requests and five replies (at least).
        assert!(a.rx_packets >= 6 && b.rx_packets >= 6, "{a:?} {b:?}");
    }

    #[test]
    fn busy_poll_large_pings_counters_match() {
        let lab = Lab::new(1500);
        let mut ports = lab.ports();
        assert!(forward_while(&mut ports, lab.ping(&["-c", "20", "-i", "0.02", "-s", "1400"]), Duration::from_secs(5)));
        let (a, b) = (ports[0].stats(), ports[1].stats());
        // Everything one side received, the other sent, byte for byte.
        assert_eq!((a.rx_packets, a.rx_bytes), (b.tx_packets, b.tx_bytes), "{a:?} {b:?}");
        assert_eq!((b.rx_packets, b.rx_bytes), (a.tx_packets, a.tx_bytes), "{a:?} {b:?}");
        assert_eq!((a.tx_dropped, b.tx_dropped, a.rx_dropped, b.rx_dropped), (0, 0, 0, 0));
        // 20 echo requests of 1442 bytes each way, plus ARP.
        assert!(a.rx_packets >= 21 && a.rx_bytes >= 20 * 1442, "{a:?}");
        assert!(b.rx_packets >= 21 && b.rx_bytes >= 20 * 1442, "{b:?}");
    }

    #[test]
    fn busy_poll_oversize_frames_are_counted() {
        // Jumbo-capable links, but ports whose ring frame holds only 2 KiB.
        let lab = Lab::new(9000);
        let mut ports = lab.ports();
        assert!(!forward_while(
            &mut ports,
            lab.ping(&["-c", "3", "-i", "0.1", "-W", "1", "-s", "3000"]),
            Duration::from_secs(5)
        ));
        let a = ports[0].stats();
        assert!(ports[0].rx_oversize() >= 3, "{a:?}");
        assert!(a.rx_dropped >= ports[0].rx_oversize());
        assert_eq!(ports[1].stats().rx_packets, 1, "only the ARP reply comes back");
        // Frames that fit still pass.
        assert!(forward_while(&mut ports, lab.ping(&["-c", "2", "-i", "0.1", "-s", "1000"]), Duration::from_secs(5)));
    }

    #[test]
    fn busy_poll_link_flap_is_survived() {
        let lab = Lab::new(1500);
        let mut ports = lab.ports();
        assert!(forward_while(&mut ports, lab.ping(&["-c", "2", "-i", "0.2"]), Duration::from_secs(5)));

        sh(&["ip", "link", "set", &lab.a, "down"]);
        assert!(!ports[0].link_up());
        // The second namespace still sends; its packets cannot leave through `a`.
        let sent_down =
            forward_while(&mut ports, lab.ping_from(1, &["-c", "3", "-i", "0.2", "-W", "1"]), Duration::from_secs(5));
        assert!(!sent_down);
        assert!(ports[0].stats().tx_dropped >= 3, "{:?}", ports[0].stats());

        sh(&["ip", "link", "set", &lab.a, "up"]);
        assert!(ports[0].link_up());
        // Same ports, no reopen: traffic flows again in both directions.
        assert!(forward_while(&mut ports, lab.ping(&["-c", "3", "-i", "0.2"]), Duration::from_secs(5)));
        assert!(forward_while(&mut ports, lab.ping_from(1, &["-c", "2", "-i", "0.2"]), Duration::from_secs(5)));
    }

    #[test]
    fn busy_poll_fanout_keeps_both_directions_of_a_flow_on_one_member() {
        let lab = Lab::new(1500);
        let base = std::process::id() as u16;
        // Two workers' worth of ports: pairs (a0, b0) and (a1, b1); `a`s in
        // one fanout group, `b`s in another (a group belongs to one interface).
        let mut ports = Vec::new();
        for i in 0..2 {
            ports.push(lab.port(&lab.a, 2 * i, |c| c.fanout_group = Some(base)));
            ports.push(lab.port(&lab.b, 2 * i + 1, |c| c.fanout_group = Some(base.wrapping_add(1))));
        }
        assert!(forward_while(&mut ports, lab.ping(&["-c", "10", "-i", "0.05"]), Duration::from_secs(5)));
        let rx: Vec<u64> = ports.iter().map(|p| p.stats().rx_packets).collect();
        // Each frame reached exactly one member of its group...
        assert!(rx[0] + rx[2] >= 11 && rx[1] + rx[3] >= 11, "{rx:?}");
        // ...and the symmetric hash put requests and replies on the same index.
        assert_eq!((rx[0], rx[2]), (rx[1], rx[3]), "{rx:?}");
    }

    /// Bytes the TCP test sends: 4 MiB of a fixed pseudo-random sequence.
    fn payload() -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..4 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// FNV-1a: enough to tell a corrupted or reordered stream from the original.
    fn digest(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    }

    const TCP_ROLE: &str = "FS_AF_PACKET_TCP_ROLE";

    /// Not a test on its own: the TCP server and client of
    /// `busy_poll_tcp_transfer_arrives_intact`, which runs this binary inside
    /// the lab's namespaces with `--ignored --exact` and a role in the environment.
    #[test]
    #[ignore = "helper, run inside a lab namespace by busy_poll_tcp_transfer_arrives_intact"]
    fn tcp_peer() {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        match std::env::var(TCP_ROLE).as_deref() {
            Ok("server") => {
                let listener = TcpListener::bind("10.99.0.2:5001").unwrap();
                let mut got = Vec::new();
                listener.accept().unwrap().0.read_to_end(&mut got).unwrap();
                println!("RESULT {} {}", got.len(), digest(&got));
            }
            Ok("client") => {
                let deadline = Instant::now() + Duration::from_secs(3);
                let mut conn = loop {
                    match TcpStream::connect_timeout(&"10.99.0.2:5001".parse().unwrap(), Duration::from_secs(1)) {
                        Ok(c) => break c,
                        Err(e) if Instant::now() > deadline => panic!("connect: {e}"),
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                };
                conn.write_all(&payload()).unwrap();
                conn.shutdown(Shutdown::Write).unwrap();
            }
            _ => {}
        }
    }

    #[test]
    fn busy_poll_tcp_transfer_arrives_intact() {
        use std::io::Read;
        let lab = Lab::new(1500);
        // Checksums and segmentation done in software by the VMs: without
        // PACKET_VNET_HDR the port cannot carry offload state (see the module doc).
        for ns in &lab.ns {
            sh(&["ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off"]);
        }
        let exe = std::env::current_exe().unwrap();
        let helper = |ns: &str, role: &str| {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&exe).args([
                "--ignored",
                "--exact",
                "af_packet::tcp_peer",
                "--nocapture",
            ]);
            c.env(TCP_ROLE, role);
            c
        };
        let mut server = helper(&lab.ns[1], "server").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut client = helper(&lab.ns[0], "client").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let mut ports = lab.ports();
        // The server exits once it has read the whole stream: forward until then.
        let done = forward_until_exit(&mut ports, &mut server, Duration::from_secs(8));
        if !done {
            let _ = client.kill();
        }
        assert!(client.wait().unwrap().success() && done, "transfer did not complete");
        let mut out = String::new();
        server.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let data = payload();
        let want = format!("RESULT {} {}", data.len(), digest(&data));
        assert!(out.lines().any(|l| l == want), "server said {out:?}, want {want}");
        let (a, b) = (ports[0].stats(), ports[1].stats());
        assert_eq!((a.rx_packets, b.rx_packets), (b.tx_packets, a.tx_packets), "{a:?} {b:?}");
        assert!(a.rx_bytes > data.len() as u64, "{a:?}");
    }

    #[test]
    fn busy_poll_deleted_interface_counts_errors() {
        let lab = Lab::new(1500);
        let mut ports = lab.ports();
        assert!(forward_while(&mut ports, lab.ping(&["-c", "1"]), Duration::from_secs(5)));
        let before = ports[0].stats();
        sh(&["ip", "link", "del", &lab.a]);
        assert!(!ports[0].link_up());
        // The second namespace keeps sending; `a` is gone, so every frame is dropped and counted.
        assert!(!forward_while(
            &mut ports,
            lab.ping_from(1, &["-c", "3", "-i", "0.2", "-W", "1"]),
            Duration::from_secs(5)
        ));
        let a = ports[0].stats();
        assert!(a.tx_dropped >= 3 && a.tx_packets == before.tx_packets, "{a:?}");
        let mut burst = Burst::new();
        assert_eq!(ports[0].rx_burst(&mut burst), 0);
    }

    #[test]
    fn open_reports_missing_interface_and_bad_geometry() {
        let missing = format!("fsNone{}", std::process::id());
        let pool = Pool::new(4, 2048);
        let err = AfPacketPort::open("p", 0, &AfPacketConfig::new(&missing), Arc::clone(&pool)).err().unwrap();
        assert!(matches!(err, AfPacketError::NoSuchInterface { .. }), "{err}");
        assert!(err.to_string().contains(&missing), "{err}");

        let cfg = AfPacketConfig { block_size: 1000, ..AfPacketConfig::new("lo") };
        let err = AfPacketPort::open("p", 0, &cfg, pool).err().unwrap();
        assert!(matches!(err, AfPacketError::Geometry { .. }) && err.to_string().starts_with("lo:"), "{err}");
    }
}
