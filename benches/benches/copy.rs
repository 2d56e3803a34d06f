//! `chains::copy`: the cost of `ChainSet::run` for one matched packet whose
//! chain copies it to one sink queue.
//!
//! Three cases per packet size (64 and 1500 bytes):
//! * `queued`: the copy is made and enqueued; the bench pops it right away
//!   (the pop, and the buffer's return to the pool, are in the figure), so the
//!   queue never fills;
//! * `queue_full`: the queue is full and nobody drains it: a copy buffer is
//!   taken, filled, refused by the queue and given back (the dropped-copy path);
//! * `sink_down`: the sink has failed and is marked down, so no copy is made
//!   (a sink thread over an always-failing sink; its backoff is driven past a
//!   second before measuring, a retry inside the window costs one copy).

#![deny(unsafe_code)]

use chains::sink::{CopyRecord, Names, Sink, SinkError, SinkQueue, SinkThread};
use chains::stage::StageSpec;
use chains::{ChainSet, ChainSpec, OnFailure};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dataplane::flow::FlowKey;
use dataplane::flow::MacAddr;
use dataplane::packet::{Meta, Packet, Pool};
use dataplane::wire::build::PacketBuilder;
use dataplane::worker::Chains;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn packet(len: usize) -> Packet {
    let f = PacketBuilder::ethernet(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]))
        .ipv4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        .udp(1000, 53)
        .pad_to(len)
        .build();
    assert_eq!(f.len(), len);
    Packet::from_slice(&f, Meta { port: 0, ts_ns: 1, orig_len: 0 })
}

fn chain_set(q: &Arc<SinkQueue>, pool: &Arc<Pool>) -> ChainSet {
    let spec = ChainSpec {
        name: "tap".into(),
        on_failure: OnFailure::FailOpen,
        stages: vec![StageSpec::Copy { to: vec![0] }],
    };
    ChainSet::new(&[spec], &[Arc::clone(q)], pool, 0, 1)
}

/// A sink whose every write fails.
struct Broken;

impl Sink for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn write(&mut self, _: &CopyRecord, _: &Names) -> Result<(), SinkError> {
        Err(SinkError::Io { sink: "broken".into(), source: std::io::Error::other("bench") })
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

fn copy(c: &mut Criterion) {
    let mut g = c.benchmark_group("chains::copy");
    g.throughput(Throughput::Elements(1));
    let pool = Pool::new(4096, 2048);

    // A sink that stays down: fail it until its backoff exceeds the measurement.
    let down = Arc::new(SinkQueue::new("down", 1024));
    let down_thread = SinkThread::spawn(Box::new(Broken), Arc::clone(&down), Arc::new(Names::default())).unwrap();
    let mut down_set = chain_set(&down, &pool);
    let probe = packet(64);
    let t = Instant::now();
    while down.errors() < 5 && t.elapsed() < Duration::from_secs(5) {
        down_set.run(0, 0, &probe, &FlowKey::default(), 1);
        std::thread::sleep(Duration::from_millis(1));
    }

    for len in [64usize, 1500] {
        let pkt = packet(len);

        let q = Arc::new(SinkQueue::new("q", 1024));
        let mut set = chain_set(&q, &pool);
        g.bench_function(format!("queued/{len}"), |b| {
            b.iter(|| {
                let v = set.run(0, 0, black_box(&pkt), &FlowKey::default(), 1);
                black_box(q.pop());
                v
            })
        });

        let full = Arc::new(SinkQueue::new("full", 1));
        let mut full_set = chain_set(&full, &pool);
        full_set.run(0, 0, &pkt, &FlowKey::default(), 1);
        assert_eq!(full.len(), 1);
        g.bench_function(format!("queue_full/{len}"), |b| {
            b.iter(|| full_set.run(0, 0, black_box(&pkt), &FlowKey::default(), 1))
        });
        let st = &full_set.stats()[0].stages[0];
        assert_eq!(st.output.get(), 1, "the full queue took nothing more");

        let before = down_set.stats()[0].stages[0].output.get();
        g.bench_function(format!("sink_down/{len}"), |b| {
            b.iter(|| down_set.run(0, 0, black_box(&pkt), &FlowKey::default(), 1))
        });
        let made = down_set.stats()[0].stages[0].output.get() - before;
        eprintln!("sink_down/{len}: {made} copies made in retry windows (a handful per retry)");
    }
    g.finish();
    down_thread.stop();
}

criterion_group!(benches, copy);
criterion_main!(benches);
