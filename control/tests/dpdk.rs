//! DPDK end to end: `flowsteer check` on dpdk configurations (with and
//! without the `dpdk` feature), and the same capture pushed through `type:
//! dpdk` net_pcap ports and through `type: pcap` ports, which must forward
//! the same bytes and make the same copies (pcapng sink and tool port), once
//! without hugepages and once with real ones. Every process started here is
//! killed by PID on drop; hugepages reserved here are given back, EAL files
//! removed, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_flowsteer");

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `flowsteer check -c <text>`: exit code and stderr.
fn check(text: &str) -> (i32, String, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "c.yaml", text);
    let out = Command::new(BIN).args(["check", "-c"]).arg(&file).env_remove("RUST_LOG").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned(), file, dir)
}

/// Asserts that `text` fails `check` with one located error.
fn check_fails(text: &str, line_col: (usize, usize), field: &str, msg: &str) {
    let (code, stderr, file, _dir) = check(text);
    assert_eq!(code, 2, "want exit 2 for\n{text}\ngot stderr {stderr}");
    let want = format!("flowsteer: {}:{}:{}: {field}: ", file.display(), line_col.0, line_col.1);
    assert!(stderr.starts_with(&want), "want a line starting with\n  {want}\ngot\n  {stderr}");
    assert!(stderr.contains(msg), "want `{msg}` in\n  {stderr}");
}

#[cfg(not(feature = "dpdk"))]
#[test]
fn check_refuses_dpdk_in_a_binary_built_without_it() {
    check_fails(
        "ports:\n  - name: vm1\n    type: dpdk\n    device: net_null0\n",
        (3, 11),
        "ports[0].type",
        "port `vm1` is a dpdk port, but this flowsteer was built without DPDK",
    );
    check_fails(
        "dpdk:\n  no_huge: true\nports:\n  - name: a\n    type: pcap\n    tx: /dev/null\n",
        (2, 3),
        "dpdk",
        "built without DPDK",
    );
}

#[cfg(feature = "dpdk")]
mod with_dpdk {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
    }

    const TWO: &str = "\
dataplane:
  workers:
    - queues: [\"vm1:0\", \"vm2:0\"]
    - queues: [\"vm1:1\", \"vm2:1\"]
ports:
  - name: vm1
    type: dpdk
    device: \"net_memif0,role=server,socket=/run/fs-vm1.sock,id=0\"
    rx_queues: 2
  - name: vm2
    type: dpdk
    device: 0000:01:00.0
    rx_queues: 2
    mtu: 9000
links:
  - [vm1, vm2]
";

    #[test]
    fn check_accepts_queue_maps_and_locates_every_mistake() {
        let (code, stderr, _, _d) = check(TWO);
        assert_eq!(code, 0, "{stderr}");
        let example = std::fs::read_to_string(root().join("examples/dpdk.yaml")).unwrap();
        let (code, stderr, _, _d) = check(&example);
        assert_eq!(code, 0, "examples/dpdk.yaml: {stderr}");
        // Offline replay never opens a DPDK device: every port is a capture-file port, and a
        // DPDK tool port's copies are discarded (counted as written, not as errors).
        let out = Command::new(BIN)
            .args(["replay", "-c", "examples/dpdk.yaml", "-i", "examples/sample.pcapng"])
            .current_dir(root())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let ids = stdout.lines().find(|l| l.starts_with("sink ids:")).unwrap_or_else(|| panic!("{stdout}"));
        assert!(ids.contains(" errors 0 ") && !ids.contains("written 0 "), "{ids}");
        // A vdev string that is not one.
        check_fails(
            &TWO.replace("\"net_memif0,role=server,socket=/run/fs-vm1.sock,id=0\"", "memif0"),
            (8, 13),
            "ports[0].device",
            "neither a PCI address",
        );
        check_fails(&TWO.replace("0000:01:00.0", "0000:01:00.9"), (12, 13), "ports[1].device", "neither a PCI address");
        // Queue mistakes.
        check_fails(
            &TWO.replace("\"vm1:1\"", "\"vm1:2\""),
            (4, 16),
            "dataplane.workers[1].queues[0]",
            "there is no queue 2",
        );
        check_fails(
            &TWO.replace("\"vm1:1\"", "\"vm1:0\""),
            (4, 16),
            "dataplane.workers[1].queues[0]",
            "already polled by worker 0",
        );
        check_fails(
            &TWO.replace("\"vm1:1\", ", ""),
            (9, 16),
            "ports[0].rx_queues",
            "rx queue 1 of dpdk port `vm1` is polled by no worker",
        );
        check_fails(
            &TWO.replace("\"vm1:1\"", "\"vm9:1\""),
            (4, 16),
            "dataplane.workers[1].queues[0]",
            "unknown port `vm9`",
        );
        check_fails(
            &TWO.replace("\"vm1:1\"", "\"vm1\""),
            (4, 16),
            "dataplane.workers[1].queues[0]",
            "is not `port:queue`",
        );
        // Fields of other backends, and the other way round.
        check_fails(
            &TWO.replace("    rx_queues: 2\n  - name: vm2", "    rx_queues: 2\n    interface: eth0\n  - name: vm2"),
            (7, 11),
            "ports[0].type",
            "`interface` does not apply to dpdk ports",
        );
        check_fails(
            "ports:\n  - name: a\n    type: pcap\n    tx: /dev/null\n    rx_queues: 2\n",
            (3, 11),
            "ports[0].type",
            "`rx_queues` does not apply to pcap ports",
        );
        check_fails(&TWO.replace("mtu: 9000", "mtu: 20"), (14, 10), "ports[1].mtu", "between 68 and 9600");
        check_fails(
            &TWO.replace("    rx_queues: 2\n  - name: vm2", "    rx_queues: 2\n    tx_queues: 1\n  - name: vm2"),
            (10, 16),
            "ports[0].tx_queues",
            "2 workers transmit on port `vm1`",
        );
        // Without queue lists, queue q goes to worker q: three queues need three workers.
        let plain = "dataplane:\n  workers: [{}, {}]\nports:\n  - name: vm1\n    type: dpdk\n    device: net_null0\n    rx_queues: 3\n";
        check_fails(plain, (7, 16), "ports[0].rx_queues", "3 rx queues but 2 workers");
        // The EAL section.
        check_fails(&format!("dpdk:\n  mbuf_cache: 600\n{TWO}"), (2, 15), "dpdk.mbuf_cache", "at most 512");
        check_fails(&format!("dpdk:\n  mbufs: 1000\n{TWO}"), (2, 10), "dpdk.mbufs", "1000 mbufs cannot fill the rings");
        check_fails(&format!("dpdk:\n  file_prefix: \"a/b\"\n{TWO}"), (2, 16), "dpdk.file_prefix", "letters, digits");
        check_fails(&format!("dpdk:\n  hugepages: 3\n{TWO}"), (2, 3), "dpdk.hugepages", "unknown field `hugepages`");
    }

    use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    use pcap_file::pcapng::{Block, PcapNgReader};
    use std::fs::File;
    use std::process::{Child, Output, Stdio};
    use std::time::{Duration, Instant};

    /// A running flowsteer (its log in a file beside its configuration);
    /// killed (SIGKILL) and reaped by PID on drop unless it exited.
    struct Proc(Option<Child>, PathBuf);

    impl Proc {
        fn run(config: &Path) -> Proc {
            let log = config.with_extension("log");
            let child = Command::new(BIN)
                .args(["-v", "run", "--stats-interval", "0", "--socket"])
                .arg(config.with_extension("sock"))
                .arg("-c")
                .arg(config)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(File::create(&log).unwrap())
                .spawn()
                .unwrap();
            Proc(Some(child), log)
        }

        /// The log so far.
        fn log(&self) -> String {
            std::fs::read_to_string(&self.1).unwrap_or_default()
        }

        /// SIGINT, then the exit status, stdout and the log (the process is killed after 20 s).
        fn interrupt(mut self) -> (Output, String) {
            let child = self.0.as_ref().unwrap();
            let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
            assert!(ok.success());
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.0.as_mut().unwrap().try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "flowsteer did not stop within 20 s of SIGINT");
                std::thread::sleep(Duration::from_millis(20));
            }
            let out = self.0.take().unwrap().wait_with_output().unwrap();
            (out, self.log())
        }
    }

    impl Drop for Proc {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Frames of a pcap file; `None` while it is incomplete (being written).
    fn pcap_frames(path: &Path) -> Option<Vec<Vec<u8>>> {
        let mut r = PcapReader::new(File::open(path).ok()?).ok()?;
        let mut out = Vec::new();
        while let Some(p) = r.next_packet() {
            out.push(p.ok()?.data.into_owned());
        }
        Some(out)
    }

    /// One copy in a pcapng sink, without its timestamp: interface (port)
    /// name, original length, bytes, comment (rule and chain).
    type Copy = (String, u32, Vec<u8>, String);

    fn pcapng_copies(path: &Path) -> Vec<Copy> {
        let mut r = PcapNgReader::new(File::open(path).unwrap()).unwrap();
        let mut names = Vec::new();
        let mut out = Vec::new();
        while let Some(b) = r.next_block() {
            match b.unwrap() {
                Block::InterfaceDescription(idb) => names.push(
                    idb.options
                        .iter()
                        .find_map(|o| match o {
                            InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                            _ => None,
                        })
                        .unwrap_or_default(),
                ),
                Block::EnhancedPacket(epb) => {
                    let comment = epb
                        .options
                        .iter()
                        .find_map(|o| match o {
                            EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    out.push((
                        names[epb.interface_id as usize].clone(),
                        epb.original_len,
                        epb.data.into_owned(),
                        comment,
                    ));
                }
                _ => {}
            }
        }
        out
    }

    /// examples/sample.pcapng as a pcap file (net_pcap reads pcap), and its frames.
    fn sample_pcap(dir: &Path) -> (PathBuf, Vec<Vec<u8>>) {
        let mut r = PcapNgReader::new(File::open(root().join("examples/sample.pcapng")).unwrap()).unwrap();
        let path = dir.join("in.pcap");
        let mut w = PcapWriter::new(File::create(&path).unwrap()).unwrap();
        let mut frames = Vec::new();
        while let Some(b) = r.next_block() {
            if let Block::EnhancedPacket(epb) = b.unwrap() {
                w.write_packet(&PcapPacket::new(epb.timestamp, epb.original_len, &epb.data)).unwrap();
                frames.push(epb.data.into_owned());
            }
        }
        (path, frames)
    }

    /// Ports by backend: `pcap` or DPDK net_pcap vdevs reading and writing the same files.
    fn config(dir: &Path, input: &Path, dpdk: Option<&str>) -> PathBuf {
        let d = dir.display();
        let ports = match dpdk {
            None => format!(
                "  - {{ name: vm1, type: pcap, rx: {} }}\n  - {{ name: vm2, type: pcap, tx: {d}/fwd.pcap }}\n  - {{ name: ids, type: pcap, tx: {d}/tool.pcap }}\n",
                input.display()
            ),
            Some(section) => format!(
                "{section}ports:\n  - {{ name: vm1, type: dpdk, device: \"net_pcap0,rx_pcap={}\" }}\n  - {{ name: vm2, type: dpdk, device: \"net_pcap1,tx_pcap={d}/fwd.pcap\" }}\n  - {{ name: ids, type: dpdk, device: \"net_pcap2,tx_pcap={d}/tool.pcap\" }}\n",
                input.display()
            ),
        };
        let head = if dpdk.is_some() { "" } else { "ports:\n" };
        let text = format!(
            "{head}{ports}links:\n  - [vm1, vm2]\nsinks:\n  - {{ name: archive, type: pcapng, path: {d}/copies.pcapng }}\n  - {{ name: tool, type: port, port: ids }}\nchains:\n  - name: all\n    stages:\n      - copy: {{ to: [archive, tool] }}\n  - name: heads\n    stages:\n      - slice: {{ snaplen: 64 }}\n      - copy: {{ to: [archive] }}\nrules:\n  - {{ name: tcp, priority: 10, match: {{ proto: tcp }}, chain: all }}\n  - {{ name: udp, priority: 10, match: {{ proto: udp }}, chain: heads }}\n"
        );
        write(dir, "flowsteer.yaml", &text)
    }

    /// What one run produced: forwarded frames, copies, tool-port frames, and its log.
    struct Outputs {
        forwarded: Vec<Vec<u8>>,
        copies: Vec<Copy>,
        tool: Vec<Vec<u8>>,
        log: String,
    }

    /// Runs flowsteer until every input frame is forwarded, stops it with
    /// SIGINT (it drains: sinks write what is queued) and reads its outputs.
    fn run(dir: &Path, input: &Path, frames: usize, dpdk: Option<&str>) -> Outputs {
        let cfg = config(dir, input, dpdk);
        let proc = Proc::run(&cfg);
        let fwd = dir.join("fwd.pcap");
        let deadline = Instant::now() + Duration::from_secs(30);
        while pcap_frames(&fwd).map_or(0, |f| f.len()) < frames {
            assert!(Instant::now() < deadline, "not everything was forwarded within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (out, log) = proc.interrupt();
        let log = format!("{}{log}", String::from_utf8_lossy(&out.stdout));
        assert!(out.status.success(), "flowsteer failed: {log}");
        Outputs {
            forwarded: pcap_frames(&fwd).unwrap(),
            copies: pcapng_copies(&dir.join("copies.pcapng")),
            tool: pcap_frames(&dir.join("tool.pcap")).unwrap(),
            log,
        }
    }

    /// Removes what the EAL may leave for a prefix, also when the test fails.
    struct EalFiles(String);

    impl Drop for EalFiles {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.0));
            if let Ok(d) = std::fs::read_dir("/dev/hugepages") {
                for e in d.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&self.0) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }

    /// The same capture through the pcap backend and through DPDK net_pcap
    /// ports: identical forwarded frames, copies and tool-port frames, and a
    /// full mbuf pool after shutdown.
    fn compare(no_huge: bool) {
        let dir = tempfile::tempdir().unwrap();
        let (input, frames) = sample_pcap(dir.path());
        let pcap_dir = dir.path().join("pcap");
        let dpdk_dir = dir.path().join("dpdk");
        std::fs::create_dir_all(&pcap_dir).unwrap();
        std::fs::create_dir_all(&dpdk_dir).unwrap();
        let want = run(&pcap_dir, &input, frames.len(), None);
        assert_eq!(want.forwarded, frames, "the pcap backend forwards every frame unchanged");

        let prefix = format!("fs-e2e-{}-{}", std::process::id(), if no_huge { "nohuge" } else { "huge" });
        let _files = EalFiles(prefix.clone());
        let section = format!(
            "dpdk:\n  eal_args: [\"--log-level=lib.eal:warning\", \"--no-telemetry\"]\n  file_prefix: {prefix}\n  memory_mb: 128\n  no_huge: {no_huge}\n"
        );
        let got = run(&dpdk_dir, &input, frames.len(), Some(&section));
        assert!(got.forwarded == want.forwarded, "forwarded frames differ between the dpdk and pcap backends");
        assert_eq!(got.copies.len(), want.copies.len(), "number of copies");
        assert!(got.copies == want.copies, "copies differ between the dpdk and pcap backends");
        assert!(got.tool == want.tool, "tool-port frames differ between the dpdk and pcap backends");
        // The chains really ran: full copies of TCP to both sinks, sliced UDP to the archive.
        assert!(
            want.tool.len() > 10 && want.copies.len() > want.tool.len(),
            "{} copies, {} tool frames",
            want.copies.len(),
            want.tool.len()
        );
        assert!(
            want.copies.iter().any(|c| c.3.contains("rule=udp") && c.2.len() == 64 && c.1 > 64),
            "a sliced copy keeps its original length"
        );
        // Clean shutdown: no mbuf leaked, hugepage files and runtime directory gone.
        let full = got
            .log
            .lines()
            .find(|l| l.contains("mempool full again"))
            .unwrap_or_else(|| panic!("no pool report in\n{}", got.log));
        assert!(full.contains("(16383 of 16383 mbufs)"), "{full}");
        assert!(!got.log.contains("not returned"), "{}", got.log);
        assert!(got.log.contains(&format!("--file-prefix={prefix}")), "{}", got.log);
        assert_eq!(got.log.contains("--no-huge"), no_huge);
        assert!(!Path::new(&format!("/var/run/dpdk/{prefix}")).exists(), "runtime directory left behind");
        let left: Vec<_> = std::fs::read_dir("/dev/hugepages")
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "hugepage files left behind: {left:?}");
    }

    #[test]
    fn busy_poll_dpdk_pcap_vdevs_match_pcap_backend_without_hugepages() {
        compare(true);
    }

    const NR_HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

    /// Hugepages reserved for a test (with scripts/setup-hugepages.sh); the
    /// previous reservation is restored on drop.
    struct Hugepages(u64);

    impl Hugepages {
        fn reserve(extra: u64) -> Result<Hugepages, String> {
            let before: u64 = std::fs::read_to_string(NR_HUGEPAGES)
                .map_err(|e| e.to_string())?
                .trim()
                .parse()
                .map_err(|e| format!("{e}"))?;
            let guard = Hugepages(before);
            let out = Command::new(root().join("scripts/setup-hugepages.sh"))
                .arg((before + extra).to_string())
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok(guard)
        }
    }

    impl Drop for Hugepages {
        fn drop(&mut self) {
            let _ = std::fs::write(NR_HUGEPAGES, self.0.to_string());
        }
    }

    #[test]
    fn busy_poll_dpdk_pcap_vdevs_match_pcap_backend_with_hugepages() {
        // -m 128 in 2 MB pages, plus slack.
        let _pages = match Hugepages::reserve(80) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("SKIPPED: cannot reserve hugepages on this machine: {e}");
                return;
            }
        };
        compare(false);
    }

    /// Two workers, two DPDK devices with two rx queues each (net_null: an
    /// endless source and a sink), mapped queue by queue: both workers
    /// register with the EAL, poll their own queues, transmit on their own tx
    /// queues, and every mbuf is back after SIGINT.
    #[test]
    fn busy_poll_dpdk_two_workers_poll_their_own_queues() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("fs-e2e-{}-queues", std::process::id());
        let _files = EalFiles(prefix.clone());
        let text = format!(
            "dpdk:\n  eal_args: [\"--log-level=lib.eal:warning\", \"--no-telemetry\"]\n  file_prefix: {prefix}\n  memory_mb: 128\n  no_huge: true\n  in_memory: true\n\
dataplane:\n  workers:\n    - queues: [\"a:0\", \"b:1\"]\n    - queues: [\"a:1\", \"b:0\"]\n\
ports:\n  - {{ name: a, type: dpdk, device: net_null0, rx_queues: 2, rx_descriptors: 256, tx_descriptors: 256 }}\n  - {{ name: b, type: dpdk, device: \"net_null1,size=128\", rx_queues: 2, rx_descriptors: 256, tx_descriptors: 256 }}\n\
links:\n  - [a, b]\n"
        );
        let cfg = write(dir.path(), "q.yaml", &text);
        let proc = Proc::run(&cfg);
        // Start-up (EAL, devices) takes long on a loaded machine: poll for a second once both workers run.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(proc.log().contains("worker 0: polling") && proc.log().contains("worker 1: polling")) {
            assert!(Instant::now() < deadline, "workers did not start within 30 s:\n{}", proc.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(1000));
        let (out, log) = proc.interrupt();
        let log = format!("{}{log}", String::from_utf8_lossy(&out.stdout));
        assert!(out.status.success(), "{log}");
        for w in 0..2 {
            assert!(log.contains(&format!("worker {w}: polling 2 port(s)")), "{log}");
        }
        // Both devices received and transmitted (each worker forwards its queues to its own tx queue).
        for port in ["a", "b"] {
            let row: Vec<u64> = log
                .lines()
                .find(|l| l.split_whitespace().next() == Some(port))
                .unwrap_or_else(|| panic!("no row for port {port} in\n{log}"))
                .split_whitespace()
                .skip(1)
                .take(6)
                .map(|v| v.parse().unwrap())
                .collect();
            assert!(row[0] > 1000 && row[3] > 1000, "port {port}: rx {} tx {}\n{log}", row[0], row[3]);
        }
        assert!(log.contains("mempool full again (16383 of 16383 mbufs)"), "{log}");
    }
}
