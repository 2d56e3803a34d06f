//! `chains::stage`: the cost of one stage's `process` on one packet with a
//! copy planned (the plan is reset each time, as `ChainSet::run` does).
//!
//! * `sample/packet`, `sample/flow`: 1 in 10; the flow case cycles over 1024
//!   flow keys so the hash sees varied input;
//! * `filter`: a proto + port range + CIDR match that the packets pass;
//! * `dedup/dup/64`: the same packet again within the window (a shed);
//!   `dedup/new/{64,1500}`: 4096 distinct packets in turn, window 0, so each
//!   is a miss and an insert — the hash pass over the packet is the cost;
//! * `strip/vxlan`, `strip/vlan`: a VXLAN packet (64-byte inner frame) and a
//!   tagged 64-byte frame;
//! * `budget/within`, `budget/over`: pps and bps buckets, the clock advancing
//!   1 µs per packet (1 Mpps), under a cap the traffic stays inside or exceeds.

#![deny(unsafe_code)]

use benches::flows;
use chains::stage::budget::Budget;
use chains::stage::dedup::Dedup;
use chains::stage::filter::Filter;
use chains::stage::sample::Sample;
use chains::stage::strip::{Strip, VXLAN_PORT};
use chains::stage::{CopyPlan, StageCounters, StageIn, StripLayer};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dataplane::classifier::{Match, PortRange};
use dataplane::flow::{proto, FlowKey, MacAddr};
use dataplane::packet::{Meta, Packet};
use dataplane::parser::parse;
use dataplane::wire::build::PacketBuilder;

const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

fn packet(frame: &[u8]) -> (Packet, FlowKey) {
    (Packet::from_slice(frame, Meta::default()), parse(frame, 0).0)
}

fn udp(len: usize, payload: &[u8]) -> Vec<u8> {
    PacketBuilder::ethernet(A, B)
        .ipv4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        .udp(1000, 53)
        .payload(payload)
        .pad_to(len)
        .build()
}

fn vxlan() -> Vec<u8> {
    let inner = udp(64, &[]);
    let header = [0x08, 0, 0, 0, 0, 0x13, 0x89, 0];
    PacketBuilder::ethernet(MacAddr([2, 0, 0, 0, 1, 1]), MacAddr([2, 0, 0, 0, 1, 2]))
        .ipv4("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap())
        .udp(49152, VXLAN_PORT)
        .payload(&[&header[..], &inner].concat())
        .build()
}

/// Runs one stage's `process` on `(pkt, key)` at `now_ns` with a fresh plan; returns the plan.
macro_rules! run {
    ($stage:expr, $pkt:expr, $key:expr, $now:expr, $c:expr) => {{
        let mut plan = CopyPlan::default();
        $stage.process(
            &StageIn { pkt: black_box($pkt), key: black_box($key), rule: 0, chain: 0, now_ns: $now },
            &mut plan,
            $c,
        );
        black_box(plan)
    }};
}

fn stages(c: &mut Criterion) {
    let mut g = c.benchmark_group("chains::stage");
    g.throughput(Throughput::Elements(1));
    let counters = StageCounters::default();
    let (pkt64, key64) = packet(&udp(64, &[]));

    let mut s = Sample::new(10, false, 1, 0);
    g.bench_function("sample/packet", |b| b.iter(|| run!(s, &pkt64, &key64, 1, &counters)));

    let keys: Vec<FlowKey> = flows(1024).iter().map(|f| parse(f, 0).0).collect();
    let mut s = Sample::new(10, true, 1, 0);
    let mut i = 0;
    g.bench_function("sample/flow", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            run!(s, &pkt64, &keys[i], 1, &counters)
        })
    });

    let mut f = Filter::new(Match {
        proto: Some(proto::UDP),
        dst_port: Some(PortRange { lo: 1, hi: 1023 }),
        dst_ip: Some("10.0.0.0/8".parse().unwrap()),
        ..Match::default()
    });
    g.bench_function("filter", |b| b.iter(|| run!(f, &pkt64, &key64, 1, &counters)));

    let mut d = Dedup::new(u64::MAX);
    g.bench_function("dedup/dup/64", |b| b.iter(|| run!(d, &pkt64, &key64, 1, &counters)));
    for len in [64usize, 1500] {
        // A real payload (not padding, which dedup leaves out) filling the frame.
        let payload = |n: u32| [&n.to_le_bytes()[..], &vec![0xa5; len - 46]].concat();
        let distinct: Vec<(Packet, FlowKey)> = (0..4096u32).map(|n| packet(&udp(len, &payload(n)))).collect();
        let mut d = Dedup::new(0);
        let (mut i, mut now) = (0, 0);
        g.bench_function(format!("dedup/new/{len}"), |b| {
            b.iter(|| {
                (i, now) = ((i + 1) & 4095, now + 1);
                let (p, k) = &distinct[i];
                run!(d, p, k, now, &counters)
            })
        });
    }

    let (vx, vx_key) = packet(&vxlan());
    let mut st = Strip::new(vec![StripLayer::Vxlan]);
    g.bench_function("strip/vxlan", |b| b.iter(|| run!(st, &vx, &vx_key, 1, &counters)));
    let (tagged, tagged_key) = packet(
        &PacketBuilder::ethernet(A, B)
            .vlan(10)
            .ipv4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
            .udp(1, 2)
            .pad_to(64)
            .build(),
    );
    let mut st = Strip::new(vec![StripLayer::Vlan]);
    g.bench_function("strip/vlan", |b| b.iter(|| run!(st, &tagged, &tagged_key, 1, &counters)));

    for (name, pps) in [("within", 2_000_000), ("over", 100_000)] {
        let mut bu = Budget::new(Some(pps), Some(pps * 64 * 8), 1);
        let mut now = 0;
        g.bench_function(format!("budget/{name}"), |b| {
            b.iter(|| {
                now += 1_000;
                run!(bu, &pkt64, &key64, now, &counters)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
