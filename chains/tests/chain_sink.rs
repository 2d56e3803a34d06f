//! Chains feeding real sink threads: copies reach a pcapng file that tshark
//! reads, a failing sink is marked down and retried with backoff, fail-open
//! keeps originals flowing while fail-closed drops them, and stopping a sink
//! thread writes everything queued.

use chains::sink::pcapng::PcapngSink;
use chains::sink::{CopyRecord, Names, Sink, SinkError, SinkQueue, SinkThread};
use chains::stage::StageSpec;
use chains::{ChainSet, ChainSpec, OnFailure};
use dataplane::flow::FlowKey;
use dataplane::flow::MacAddr;
use dataplane::packet::{Meta, Packet, Pool};
use dataplane::wire::build::PacketBuilder;
use dataplane::worker::{ChainVerdict, Chains};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T0: u64 = 1_700_000_000_000_000_000;

fn frame(i: u16, len: usize) -> Vec<u8> {
    PacketBuilder::ethernet(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]))
        .ipv4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        .udp(1000 + i, 53)
        .pad_to(len)
        .build()
}

fn packet(i: u16, len: usize) -> Packet {
    Packet::from_slice(&frame(i, len), Meta { port: 1, ts_ns: T0 + u64::from(i), orig_len: 0 })
}

fn names() -> Arc<Names> {
    Arc::new(Names {
        ports: vec!["vm-a".into(), "vm-b".into()],
        rules: vec!["dns".to_string()].into(),
        chains: vec!["tap".into()],
    })
}

fn chain(on_failure: OnFailure) -> ChainSpec {
    ChainSpec { name: "tap".into(), on_failure, stages: vec![StageSpec::Copy { to: vec![0] }] }
}

/// Polls `cond` every millisecond for at most `limit`.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// tshark rows of `fields`; fails the test when tshark is missing.
fn tshark(path: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(path).args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "tshark is required by these tests and could not be run ({e}); install it (Debian: apt-get install tshark)"
        )
    });
    assert!(out.status.success(), "tshark failed on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| l.split('|').map(str::to_string).collect()).collect()
}

/// The frames a test sink wrote, shared with the test.
type Written = Arc<Mutex<Vec<Vec<u8>>>>;

/// A sink that fails its first `fail` writes, then records what it is given.
struct Flaky {
    fail: Arc<AtomicUsize>,
    got: Written,
}

impl Flaky {
    fn new(fail: usize) -> (Flaky, Arc<AtomicUsize>, Written) {
        let (fail, got) = (Arc::new(AtomicUsize::new(fail)), Arc::new(Mutex::new(Vec::new())));
        (Flaky { fail: Arc::clone(&fail), got: Arc::clone(&got) }, fail, got)
    }
}

impl Sink for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    fn write(&mut self, rec: &CopyRecord, _: &Names) -> Result<(), SinkError> {
        if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            return Err(SinkError::Io { sink: "flaky".into(), source: std::io::Error::other("injected") });
        }
        self.got.lock().unwrap().push(rec.pkt.data().to_vec());
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[test]
fn copies_reach_the_pcapng_file_through_the_sink_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tap.pcapng");
    let q = Arc::new(SinkQueue::new("tap", 64));
    let sink = PcapngSink::create("tap", &path).unwrap();
    let thread = SinkThread::spawn(Box::new(sink), Arc::clone(&q), names()).unwrap();
    let pool = Pool::new(64, 2048);
    let mut set = ChainSet::new(&[chain(OnFailure::FailOpen)], &[Arc::clone(&q)], &pool, 0, 1);
    let sent: Vec<Vec<u8>> = (0..20).map(|i| frame(i, 60 + usize::from(i) * 50)).collect();
    for i in 0..20u16 {
        assert_eq!(set.run(0, 0, &packet(i, 60 + usize::from(i) * 50), &FlowKey::default(), 0), ChainVerdict::Forward);
    }
    assert!(wait_until(Duration::from_secs(2), || q.written() == 20), "written {}", q.written());
    thread.stop();
    assert_eq!((q.written(), q.errors(), q.lost_down()), (20, 0, 0));
    let st = &set.stats()[0];
    assert_eq!((st.packets.get(), st.stages[0].output.get(), st.stages[0].dropped.get()), (20, 20, 0));
    assert_eq!(pool.available(), pool.capacity(), "copy buffers came back after writing");

    let rows =
        tshark(&path, &["frame.interface_name", "frame.comment", "frame.len", "udp.srcport", "frame.time_epoch"]);
    assert_eq!(rows.len(), 20);
    for (i, row) in rows.iter().enumerate() {
        let expect_ts = format!("1700000000.{:09}", i);
        assert_eq!(
            row,
            &[
                "vm-b".to_string(),
                "flowsteer rule=dns chain=tap".into(),
                sent[i].len().to_string(),
                (1000 + i).to_string(),
                expect_ts
            ]
        );
    }
}

#[test]
fn a_failing_sink_goes_down_fail_open_forwards_fail_closed_drops() {
    // Fails far longer than the test runs: stays down (apart from brief retries).
    let (flaky, _fail, _got) = Flaky::new(usize::MAX);
    let q = Arc::new(SinkQueue::new("flaky", 16));
    let thread = SinkThread::spawn(Box::new(flaky), Arc::clone(&q), names()).unwrap();
    let pool = Pool::new(16, 2048);
    let mut open = ChainSet::new(&[chain(OnFailure::FailOpen)], &[Arc::clone(&q)], &pool, 0, 1);
    let mut closed = ChainSet::new(&[chain(OnFailure::FailClosed)], &[Arc::clone(&q)], &pool, 0, 1);

    assert_eq!(open.run(0, 0, &packet(0, 60), &FlowKey::default(), 0), ChainVerdict::Forward);
    // While down (backoff 100 ms, then 200, ...): no copy is made, originals follow
    // the policy. A retry window opening between the checks (a descheduled test
    // thread) spoils a round, so take a few.
    let mut confirmed = false;
    for _ in 0..5 {
        // A retry window that opened after the last round's copies needs a
        // copy to fail again: send one while it is up.
        assert!(
            wait_until(Duration::from_secs(2), || {
                if q.is_up() {
                    open.run(0, 0, &packet(3, 60), &FlowKey::default(), 0);
                }
                !q.is_up()
            }),
            "the sink is marked down after a write error"
        );
        let (o0, c0) = (open.stats()[0].stages[0].errors.get(), closed.stats()[0].closed_drops.get());
        let open_verdict = open.run(0, 0, &packet(1, 60), &FlowKey::default(), 0);
        let closed_verdict = closed.run(0, 0, &packet(2, 60), &FlowKey::default(), 0);
        if q.is_up() {
            continue;
        }
        assert_eq!((open_verdict, closed_verdict), (ChainVerdict::Forward, ChainVerdict::Drop));
        assert_eq!(open.stats()[0].stages[0].errors.get(), o0 + 1, "the lost copy is counted");
        assert_eq!(closed.stats()[0].closed_drops.get(), c0 + 1);
        assert_eq!(open.stats()[0].closed_drops.get(), 0);
        confirmed = true;
        break;
    }
    assert!(confirmed, "never observed a down sink across two chain runs");
    assert!(q.errors() >= 1);
    assert_eq!(q.written(), 0);
    thread.stop();
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn a_recovered_sink_comes_back_up_after_its_backoff_and_copies_again() {
    let (flaky, fail, got) = Flaky::new(1);
    let q = Arc::new(SinkQueue::new("flaky", 16));
    let thread = SinkThread::spawn(Box::new(flaky), Arc::clone(&q), names()).unwrap();
    let pool = Pool::new(16, 2048);
    let mut closed = ChainSet::new(&[chain(OnFailure::FailClosed)], &[Arc::clone(&q)], &pool, 0, 1);

    assert_eq!(closed.run(0, 0, &packet(0, 60), &FlowKey::default(), 0), ChainVerdict::Forward, "up at start");
    assert!(wait_until(Duration::from_secs(1), || !q.is_up()));
    assert_eq!(fail.load(Ordering::SeqCst), 0, "the one failure was used");
    assert_eq!(closed.run(0, 0, &packet(1, 60), &FlowKey::default(), 0), ChainVerdict::Drop, "fail-closed while down");
    let t = Instant::now();
    assert!(wait_until(Duration::from_secs(2), || q.is_up()), "back up within its backoff");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(closed.run(0, 0, &packet(2, 60), &FlowKey::default(), 0), ChainVerdict::Forward);
    assert!(wait_until(Duration::from_secs(2), || q.written() == 1));
    thread.stop();
    assert_eq!(*got.lock().unwrap(), [frame(2, 60)], "only the copy made after recovery was written");
    assert_eq!((q.written(), q.errors()), (1, 1));
}

#[test]
fn pcapng_on_a_full_disk_goes_down_and_counts_errors() {
    let q = Arc::new(SinkQueue::new("full", 64));
    let sink = PcapngSink::create("full", Path::new("/dev/full")).unwrap();
    let thread = SinkThread::spawn(Box::new(sink), Arc::clone(&q), names()).unwrap();
    let pool = Pool::new(64, 2048);
    let mut open = ChainSet::new(&[chain(OnFailure::FailOpen)], &[Arc::clone(&q)], &pool, 0, 1);
    let mut closed = ChainSet::new(&[chain(OnFailure::FailClosed)], &[Arc::clone(&q)], &pool, 0, 1);
    assert_eq!(open.run(0, 0, &packet(0, 1500), &FlowKey::default(), 0), ChainVerdict::Forward);
    // The copy is buffered; the flush when the queue runs empty hits ENOSPC.
    assert!(wait_until(Duration::from_secs(1), || !q.is_up()), "marked down");
    assert!(q.errors() >= 1);
    assert_eq!(open.run(0, 0, &packet(1, 1500), &FlowKey::default(), 0), ChainVerdict::Forward);
    assert_eq!(closed.run(0, 0, &packet(2, 1500), &FlowKey::default(), 0), ChainVerdict::Drop);
    thread.stop();
}

#[test]
fn copies_lost_in_a_failed_flush_are_not_counted_as_written() {
    let q = Arc::new(SinkQueue::new("full", 64));
    let sink = PcapngSink::create("full", Path::new("/dev/full")).unwrap();
    let thread = SinkThread::spawn(Box::new(sink), Arc::clone(&q), names()).unwrap();
    let pool = Pool::new(64, 2048);
    let mut open = ChainSet::new(&[chain(OnFailure::FailOpen)], &[Arc::clone(&q)], &pool, 0, 1);
    for i in 0..3 {
        open.run(0, 0, &packet(i, 1500), &FlowKey::default(), 0);
    }
    assert!(wait_until(Duration::from_secs(1), || !q.is_up()));
    thread.stop();
    // Nothing reached /dev/full, so nothing may be reported as written.
    assert_eq!(q.written(), 0, "written = {}, errors = {}", q.written(), q.errors());
}

#[test]
fn stopping_the_sink_thread_writes_everything_queued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shutdown.pcapng");
    let q = Arc::new(SinkQueue::new("s", 1024));
    let pool = Pool::new(1024, 2048);
    let mut set = ChainSet::new(&[chain(OnFailure::FailOpen)], &[Arc::clone(&q)], &pool, 0, 1);
    // Queue everything before the thread starts, then stop it at once.
    for i in 0..1000u16 {
        set.run(0, 0, &packet(i, 200), &FlowKey::default(), 0);
    }
    assert_eq!(q.len(), 1000);
    let sink = PcapngSink::create("s", &path).unwrap();
    let thread = SinkThread::spawn(Box::new(sink), Arc::clone(&q), names()).unwrap();
    thread.stop();
    assert!(q.is_empty());
    assert_eq!((q.written(), q.errors(), q.lost_down()), (1000, 0, 0));
    assert_eq!(tshark(&path, &["udp.srcport"]).len(), 1000);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn a_quiet_sink_thread_dozes_and_the_next_copy_wakes_it() {
    let q = Arc::new(SinkQueue::new("tap", 64));
    let (sink, _, got) = Flaky::new(0);
    let thread = SinkThread::spawn(Box::new(sink), Arc::clone(&q), names()).unwrap();
    let pool = Pool::new(64, 2048);
    let mut set = ChainSet::new(&[chain(OnFailure::FailOpen)], &[Arc::clone(&q)], &pool, 0, 1);
    for round in 0..3u16 {
        // A few hundred empty checks, a fraction of a second on an idle host.
        assert!(wait_until(Duration::from_secs(10), || q.is_dozing()), "round {round}: the idle sink never dozed off");
        assert_eq!(set.run(0, 0, &packet(round, 100), &FlowKey::default(), 0), ChainVerdict::Forward);
        assert!(!q.is_dozing(), "round {round}: the copy did not wake the sink thread");
        let want = u64::from(round) + 1;
        assert!(wait_until(Duration::from_secs(5), || q.written() == want), "round {round}: written {}", q.written());
    }
    assert!(wait_until(Duration::from_secs(10), || q.is_dozing()));
    thread.stop();
    assert_eq!(got.lock().unwrap().len(), 3);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn a_sink_that_failed_once_dozes_again_when_quiet() {
    let (sink, fail, got) = Flaky::new(1);
    let q = Arc::new(SinkQueue::new("flaky", 16));
    let thread = SinkThread::spawn(Box::new(sink), Arc::clone(&q), names()).unwrap();
    let pool = Pool::new(16, 2048);
    let mut set = ChainSet::new(&[chain(OnFailure::FailOpen)], &[Arc::clone(&q)], &pool, 0, 1);
    assert_eq!(set.run(0, 0, &packet(0, 60), &FlowKey::default(), 0), ChainVerdict::Forward);
    // The error count stays; the down state lasts only the 100 ms backoff.
    assert!(wait_until(Duration::from_secs(2), || q.errors() == 1), "the failed write is counted");
    assert_eq!(fail.load(Ordering::SeqCst), 0);
    assert!(wait_until(Duration::from_secs(2), || q.is_up()), "up again after the backoff");
    // No copy came to confirm the recovery: the thread must still doze off.
    assert!(wait_until(Duration::from_secs(10), || q.is_dozing()), "a sink that was down never dozed off");
    assert_eq!(set.run(0, 0, &packet(1, 60), &FlowKey::default(), 0), ChainVerdict::Forward);
    assert!(wait_until(Duration::from_secs(5), || q.written() == 1));
    assert!(wait_until(Duration::from_secs(10), || q.is_dozing()), "recovered and quiet, yet awake");
    thread.stop();
    assert_eq!(*got.lock().unwrap(), [frame(1, 60)]);
    assert_eq!((q.written(), q.errors()), (1, 1));
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn a_second_sink_thread_on_the_same_queue_drains_it() {
    let q = Arc::new(SinkQueue::new("tap", 16));
    let pool = Pool::new(16, 2048);
    let mut set = ChainSet::new(&[chain(OnFailure::FailOpen)], &[Arc::clone(&q)], &pool, 0, 1);
    let (first, _, first_got) = Flaky::new(0);
    SinkThread::spawn(Box::new(first), Arc::clone(&q), names()).unwrap().stop();
    let (second, _, got) = Flaky::new(0);
    let thread = SinkThread::spawn(Box::new(second), Arc::clone(&q), names()).unwrap();
    // Dozing, then woken by each copy (which thread is woken is checked in queue.rs).
    for i in 0..3u16 {
        assert!(wait_until(Duration::from_secs(10), || q.is_dozing()), "copy {i}: never dozed off");
        assert_eq!(set.run(0, 0, &packet(i, 60), &FlowKey::default(), 0), ChainVerdict::Forward);
        assert!(wait_until(Duration::from_secs(5), || q.written() == u64::from(i) + 1), "copy {i}: not written");
    }
    thread.stop();
    assert_eq!((got.lock().unwrap().len(), first_got.lock().unwrap().len()), (3, 0));
}
