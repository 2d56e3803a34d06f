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

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

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
        // A vdev string that is not one.
        check_fails(&TWO.replace("\"net_memif0,role=server,socket=/run/fs-vm1.sock,id=0\"", "memif0"), (8, 13), "ports[0].device", "neither a PCI address");
        check_fails(&TWO.replace("0000:01:00.0", "0000:01:00.9"), (12, 13), "ports[1].device", "neither a PCI address");
        // Queue mistakes.
        check_fails(&TWO.replace("\"vm1:1\"", "\"vm1:2\""), (4, 16), "dataplane.workers[1].queues[0]", "there is no queue 2");
        check_fails(&TWO.replace("\"vm1:1\"", "\"vm1:0\""), (4, 16), "dataplane.workers[1].queues[0]", "already polled by worker 0");
        check_fails(&TWO.replace("\"vm1:1\", ", ""), (9, 16), "ports[0].rx_queues", "rx queue 1 of dpdk port `vm1` is polled by no worker");
        check_fails(&TWO.replace("\"vm1:1\"", "\"vm9:1\""), (4, 16), "dataplane.workers[1].queues[0]", "unknown port `vm9`");
        check_fails(&TWO.replace("\"vm1:1\"", "\"vm1\""), (4, 16), "dataplane.workers[1].queues[0]", "is not `port:queue`");
        // Fields of other backends, and the other way round.
        check_fails(&TWO.replace("    rx_queues: 2\n  - name: vm2", "    rx_queues: 2\n    interface: eth0\n  - name: vm2"), (7, 11), "ports[0].type", "`interface` does not apply to dpdk ports");
        check_fails("ports:\n  - name: a\n    type: pcap\n    tx: /dev/null\n    rx_queues: 2\n", (3, 11), "ports[0].type", "`rx_queues` does not apply to pcap ports");
        check_fails(&TWO.replace("mtu: 9000", "mtu: 20"), (14, 10), "ports[1].mtu", "between 68 and 9600");
        check_fails(&TWO.replace("    rx_queues: 2\n  - name: vm2", "    rx_queues: 2\n    tx_queues: 1\n  - name: vm2"), (10, 16), "ports[0].tx_queues", "2 workers transmit on port `vm1`");
        // Without queue lists, queue q goes to worker q: three queues need three workers.
        let plain = "dataplane:\n  workers: [{}, {}]\nports:\n  - name: vm1\n    type: dpdk\n    device: net_null0\n    rx_queues: 3\n";
        check_fails(plain, (7, 16), "ports[0].rx_queues", "3 rx queues but 2 workers");
        // The EAL section.
        check_fails(&format!("dpdk:\n  mbuf_cache: 600\n{TWO}"), (2, 15), "dpdk.mbuf_cache", "at most 512");
        check_fails(&format!("dpdk:\n  mbufs: 1000\n{TWO}"), (2, 10), "dpdk.mbufs", "1000 mbufs cannot fill the rings");
        check_fails(&format!("dpdk:\n  file_prefix: \"a/b\"\n{TWO}"), (2, 16), "dpdk.file_prefix", "letters, digits");
        check_fails(&format!("dpdk:\n  hugepages: 3\n{TWO}"), (2, 3), "dpdk.hugepages", "unknown field `hugepages`");
    }
}
