//! `dataplane::parse`: cost of extracting a flow key from one frame, per
//! packet shape. The fast path (`tcp4`) is what bounds Mpps per core.
//!
//! `parse/*` is one call at a time, the key returned by value: its latency,
//! which includes reading back the key just written. `parse_burst/*` is
//! what the worker does: 32 frames of a shape keyed into an array in place,
//! the cost per frame when a burst's parses overlap.

#![deny(unsafe_code)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dataplane::flow::FlowKey;
use dataplane::flow::MacAddr;
use dataplane::parser::{parse, parse_into};
use dataplane::wire::build::PacketBuilder;
use std::net::{Ipv4Addr, Ipv6Addr};

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let a = MacAddr([2, 0, 0, 0, 0, 1]);
    let b = MacAddr([2, 0, 0, 0, 0, 2]);
    let v4 = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let v6: (Ipv6Addr, Ipv6Addr) = ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap());
    let tcp4 = PacketBuilder::ethernet(a, b).ipv4(v4.0, v4.1).tcp(40000, 80).pad_to(60).build();
    vec![
        ("tcp4", tcp4.clone()),
        ("udp6", PacketBuilder::ethernet(a, b).ipv6(v6.0, v6.1).udp(40000, 53).payload(&[0; 18]).build()),
        ("qinq_tcp4", PacketBuilder::ethernet(a, b).vlan(100).vlan(200).ipv4(v4.0, v4.1).tcp(40000, 80).build()),
        // VXLAN over IPv4 around the tcp4 frame: keyed by the inner flow.
        (
            "vxlan_tcp4",
            PacketBuilder::ethernet(b, a)
                .ipv4(Ipv4Addr::new(172, 16, 0, 1), Ipv4Addr::new(172, 16, 0, 2))
                .vxlan(5001, &tcp4)
                .build(),
        ),
        ("arp", PacketBuilder::ethernet(a, b).ethertype(0x0806).payload(&[0; 28]).pad_to(60).build()),
        // Cut inside the TCP header: the malformed path must not be slower.
        ("truncated", tcp4[..14 + 20 + 10].to_vec()),
    ]
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("dataplane::parse");
    group.throughput(Throughput::Elements(1));
    for (name, frame) in frames() {
        group.bench_function(name, |bench| bench.iter(|| parse(black_box(&frame), black_box(1))));
    }
    group.finish();

    let mut group = c.benchmark_group("dataplane::parse_burst");
    group.throughput(Throughput::Elements(BURST as u64));
    for (name, frame) in frames() {
        // A burst of distinct frames of one shape: the last byte (payload or padding) differs.
        let burst: Vec<Vec<u8>> = (0..BURST)
            .map(|i| {
                let mut f = frame.clone();
                if let Some(b) = f.last_mut() {
                    *b = i as u8;
                }
                f
            })
            .collect();
        let mut keys = [FlowKey::default(); BURST];
        group.bench_function(name, |bench| {
            bench.iter(|| {
                for (f, k) in burst.iter().zip(keys.iter_mut()) {
                    black_box(parse_into(black_box(f), 1, k));
                }
                black_box(&keys);
            })
        });
    }
    group.finish();
}

/// Frames per burst, as the worker receives them.
const BURST: usize = 32;

criterion_group!(benches, bench_parse);
criterion_main!(benches);
