//! Rotating pcapng sinks read back by tshark: rotation by size and by time,
//! the file name pattern, `keep`, and a real full disk (a small tmpfs) that
//! marks the sink down and from which it recovers by itself once space
//! returns, leaving every file readable.

use chains::sink::pcapng::{Fsync, PcapngOptions, PcapngSink};
use chains::sink::{CopyRecord, Names, Sink, SinkQueue, SinkThread};
use dataplane::flow::MacAddr;
use dataplane::packet::{Meta, Packet};
use dataplane::wire::build::PacketBuilder;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: u64 = 1_700_000_000_000_000_000;

fn copy(i: u16, len: usize) -> CopyRecord {
    let frame = PacketBuilder::ethernet(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]))
        .ipv4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        .udp(i, 53)
        .pad_to(len)
        .build();
    CopyRecord {
        pkt: Packet::from_slice(&frame, Meta { port: 1, ts_ns: T0 + u64::from(i), orig_len: 0 }),
        rule: 0,
        chain: 0,
    }
}

fn names() -> Names {
    Names {
        ports: vec!["vm-a".into(), "vm-b".into()],
        rules: vec!["dns".to_string()].into(),
        chains: vec!["tap".into()],
    }
}

/// The UDP source ports of the frames in `path`, read by tshark; fails the
/// test when tshark is missing or cannot read the file.
fn tshark_ports(path: &Path) -> Vec<u16> {
    let out = Command::new("/usr/bin/tshark")
        .arg("-r")
        .arg(path)
        .args(["-T", "fields", "-e", "udp.srcport", "-e", "frame.interface_name"])
        .output()
        .unwrap_or_else(|e| {
            panic!("/usr/bin/tshark is required by these tests and could not be run ({e}); install it (Debian: apt-get install tshark)")
        });
    assert!(out.status.success(), "tshark cannot read {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (port, iface) = l.split_once('\t').unwrap();
            assert_eq!(iface, "vm-b", "every file has its own interface block");
            port.parse().unwrap()
        })
        .collect()
}

/// Files in `dir` whose names start with `prefix`, sorted by name.
fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// The sequence number of a file named `<prefix>...-NNNNN.pcapng`.
fn seq(path: &Path) -> u64 {
    let name = path.file_name().unwrap().to_str().unwrap();
    let stem = name.strip_suffix(".pcapng").unwrap_or_else(|| panic!("{name}: no .pcapng extension"));
    let n = stem.rsplit('-').next().unwrap();
    assert_eq!(n.len(), 5, "{name}: sequence number not padded to 5");
    n.parse().unwrap()
}

#[test]
fn size_rotation_makes_valid_files_below_the_limit_named_by_the_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let opts = PcapngOptions { rotate_bytes: Some(40_000), fsync: Fsync::OnRotate, ..Default::default() };
    let mut sink = PcapngSink::with_options("ids", &dir.path().join("ids-%Y%m%d-%H%M%S-%n.pcapng"), opts).unwrap();
    let names = names();
    for i in 0..1000 {
        sink.write(&copy(i, 200), &names).unwrap();
    }
    sink.flush().unwrap();
    drop(sink);

    let files = files(dir.path(), "ids-");
    assert!(files.len() >= 5, "1000 copies of ~260 bytes in 40 kB files: {} files", files.len());
    let mut all = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let name = f.file_name().unwrap().to_str().unwrap();
        let parts: Vec<&str> = name.strip_prefix("ids-").unwrap().split('-').collect();
        assert!(
            parts[0].len() == 8 && parts[0].starts_with("20") && parts[0].bytes().all(|b| b.is_ascii_digit()),
            "{name}"
        );
        assert!(parts[1].len() == 6 && parts[1].bytes().all(|b| b.is_ascii_digit()), "{name}");
        assert_eq!(seq(f), i as u64, "{name}: numbered from 0 in order");
        let size = std::fs::metadata(f).unwrap().len();
        assert!(size <= 40_000, "{name}: {size} bytes, over the limit");
        let ports = tshark_ports(f);
        assert!(!ports.is_empty(), "{name}: no packets");
        all.extend(ports);
    }
    assert_eq!(all, (0..1000).collect::<Vec<u16>>(), "every copy once, in order, across the files");
}

#[test]
fn time_rotation_at_the_next_copy_or_flush_after_the_period() {
    let dir = tempfile::tempdir().unwrap();
    let period = Duration::from_millis(200);
    let opts = PcapngOptions { rotate_every: Some(period), fsync: Fsync::EveryFlush, ..Default::default() };
    // No %n: `-%n` is inserted before the extension.
    let mut sink = PcapngSink::with_options("t", &dir.path().join("t-%H%M%S.pcapng"), opts).unwrap();
    let names = names();
    for i in 0..5 {
        sink.write(&copy(i, 100), &names).unwrap();
    }
    sink.flush().unwrap();
    std::thread::sleep(period + Duration::from_millis(50));
    // The first copy after the period opens the second file.
    for i in 5..10 {
        sink.write(&copy(i, 100), &names).unwrap();
    }
    sink.flush().unwrap();
    std::thread::sleep(period + Duration::from_millis(50));
    // An idle sink's flush closes the file on time too (the third file is empty).
    sink.flush().unwrap();
    // An empty file is not rotated away, however long it stays open.
    std::thread::sleep(period + Duration::from_millis(50));
    sink.flush().unwrap();
    drop(sink);

    let files = files(dir.path(), "t-");
    let counts: Vec<Vec<u16>> = files.iter().map(|f| tshark_ports(f)).collect();
    assert_eq!(counts, [(0..5).collect::<Vec<_>>(), (5..10).collect(), vec![]], "{files:?}");
    assert_eq!(files.iter().map(|f| seq(f)).collect::<Vec<_>>(), [0, 1, 2]);
}

#[test]
fn keep_leaves_the_newest_files_and_never_touches_files_it_did_not_create() {
    let dir = tempfile::tempdir().unwrap();
    // An earlier run's file with the first name the pattern gives.
    let foreign = dir.path().join("cap-00000.pcapng");
    std::fs::write(&foreign, b"not ours").unwrap();
    let opts = PcapngOptions { rotate_bytes: Some(10_000), keep: Some(3), ..Default::default() };
    let mut sink = PcapngSink::with_options("k", &dir.path().join("cap-%n.pcapng"), opts).unwrap();
    let names = names();
    for i in 0..1000 {
        sink.write(&copy(i, 200), &names).unwrap();
    }
    drop(sink);

    assert_eq!(std::fs::read(&foreign).unwrap(), b"not ours", "neither overwritten nor deleted");
    let ours: Vec<PathBuf> = files(dir.path(), "cap-").into_iter().filter(|f| *f != foreign).collect();
    let seqs: Vec<u64> = ours.iter().map(|f| seq(f)).collect();
    assert_eq!(seqs.len(), 3, "{ours:?}");
    assert!(seqs[2] >= 10, "many files were made: {seqs:?}");
    assert_eq!(seqs, [seqs[2] - 2, seqs[2] - 1, seqs[2]], "the three newest remain");
    let ports: Vec<u16> = ours.iter().flat_map(|f| tshark_ports(f)).collect();
    assert_eq!(ports.last(), Some(&999));
    let first = ports[0];
    assert_eq!(ports, (first..1000).collect::<Vec<u16>>(), "the newest copies, contiguous");
}

/// A tmpfs mounted on a fresh directory, unmounted when dropped (also when
/// the test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test needs root to mount a small tmpfs as a disk that fills up for real \
             (mount -t tmpfs -o size={size} tmpfs {}): {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .output()
            .expect("running mount");
        assert!(out.status.success(), "remount: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(self.path()).status().is_ok_and(|s| s.success());
        if !ok {
            eprintln!("could not unmount {}", self.path().display());
        }
    }
}

/// Feeds copies to `q` the way a worker does (only while the sink is up,
/// never blocking) until `done` or `limit`; returns how many were queued.
fn feed(q: &SinkQueue, next: &mut u16, limit: Duration, mut done: impl FnMut() -> bool) -> u64 {
    let end = Instant::now() + limit;
    let mut queued = 0;
    while !done() {
        assert!(Instant::now() < end, "gave up after {limit:?}");
        if q.is_up() && q.push(copy(*next, 1000)).is_ok() {
            *next = next.wrapping_add(1);
            queued += 1;
            // Bursts of 16 with pauses, so the queue runs empty and the
            // thread flushes now and then, as with real traffic.
            if queued % 16 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    queued
}

/// Runs a sink on a 256 KiB tmpfs until the disk is full, then makes room and
/// checks it comes back by itself; returns the capture files left.
fn fill_then_make_room(fs: &Tmpfs, sink: PcapngSink) -> Vec<PathBuf> {
    let q = Arc::new(SinkQueue::new("ids", 64));
    let thread = SinkThread::spawn(Box::new(sink), Arc::clone(&q), Arc::new(names())).unwrap();
    let mut next = 0;
    let mut queued = feed(&q, &mut next, Duration::from_secs(10), || !q.is_up());
    assert!(q.errors() >= 1, "the full disk lost copies and they are counted");
    let written_full = q.written();
    assert!(written_full > 50, "copies were written before the disk filled: {written_full}");

    fs.resize("4m");
    // Retries come after a backoff (100 ms, doubling): copies flow again by themselves.
    queued += feed(&q, &mut next, Duration::from_secs(30), || q.is_up() && q.written() >= written_full + 500);
    thread.stop();
    let (written, errors, lost_down) = (q.written(), q.errors(), q.lost_down());
    assert_eq!(written + errors + lost_down, queued, "every copy is accounted for");

    let files = files(fs.path(), "ids");
    let total: usize = files.iter().map(|f| tshark_ports(f).len()).sum();
    // Copies that reached the disk before an error in the same flush window
    // are counted as errors though they are readable.
    assert!(
        (written..=written + errors).contains(&(total as u64)),
        "{total} readable copies, {written} written, {errors} errors"
    );
    files
}

#[test]
fn full_disk_marks_the_sink_down_and_it_recovers_into_a_new_file() {
    let fs = Tmpfs::mount("256k");
    let opts = PcapngOptions { rotate_bytes: Some(64 * 1024), ..Default::default() };
    let sink = PcapngSink::with_options("ids", &fs.path().join("ids-%n.pcapng"), opts).unwrap();
    let files = fill_then_make_room(&fs, sink);
    // The files written before the disk filled, the broken one, and after
    // recovery a new file with the next number.
    let seqs: Vec<u64> = files.iter().map(|f| seq(f)).collect();
    assert!(seqs.len() >= 4, "{files:?}");
    let last = files.last().unwrap();
    assert!(!tshark_ports(last).is_empty(), "copies after recovery went to a new file: {files:?}");
}

#[test]
fn full_disk_single_file_sink_carries_on_in_its_file() {
    let fs = Tmpfs::mount("256k");
    let path = fs.path().join("ids.pcapng");
    let sink = PcapngSink::create("ids", &path).unwrap();
    let files = fill_then_make_room(&fs, sink);
    assert_eq!(files, std::slice::from_ref(&path), "one file, as asked");
    assert!(std::fs::metadata(&path).unwrap().len() > 256 * 1024, "it grew past the old size of the disk");
}
