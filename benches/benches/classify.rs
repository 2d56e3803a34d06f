//! `dataplane::classify`: the cost of classifying one flow key.
//!
//! Rule sets of 100, 1,000 and 10,000 wildcard rules shaped like a steering
//! config (/32, /24 and /16 networks inside 10.0.0.0/8, well-known ports and
//! port ranges, TCP/UDP/any, a fifth of them symmetric). Measured: a
//! tuple-space search that hits a rule, one that misses every rule (the worst
//! case: every tuple probed), the flow-cache hit that most packets take, and
//! building a 10,000-rule set. Keys cycle through 1,024 different flows so the
//! branch predictor cannot learn one key.
//!
//! `direct/*` decides the worker's `DIRECT_TUPLES`: rule sets of 1, 2, 4 and
//! 8 tuples classified directly (every tuple probed: no key matches), beside
//! a flow-cache lookup over 163,840 flows in a cache sized like the memif
//! benchmark's (four slots per flow), whose slots are mostly not in CPU cache.
//! `direct/burst/*` is what the worker does with such a set: one
//! `classify_burst` call per burst of 32 keys (time per key).

#![deny(unsafe_code)]

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataplane::cache::FlowCache;
use dataplane::classifier::{naive, Action, ChainId, IpNet, Match, PortRange, Rule, RuleSet};
use dataplane::flow::{ip_to_key_bytes, proto, FlowKey};
use std::net::{IpAddr, Ipv4Addr};

const KEYS: usize = 1024;

/// xorshift64*: reproducible rule sets without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A network inside 10.0.0.0/8: mostly hosts, some /24s, a few /16s.
fn net(rng: &mut Rng) -> IpNet {
    let prefix = match rng.below(10) {
        0..=4 => 32,
        5..=7 => 24,
        _ => 16,
    };
    let addr = Ipv4Addr::from(0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff));
    IpNet::new(IpAddr::V4(addr), prefix).unwrap().trunc()
}

const WELL_KNOWN: [u16; 8] = [22, 53, 80, 443, 3306, 5432, 6379, 8080];

fn rules(n: usize, seed: u64) -> Vec<Rule> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let proto = match rng.below(10) {
                0..=6 => Some(proto::TCP),
                7..=8 => Some(proto::UDP),
                _ => None,
            };
            let dst_port = match (proto, rng.below(10)) {
                (None, _) | (_, 0..=1) => None,
                (_, 2..=7) => Some(PortRange::single(WELL_KNOWN[rng.below(8) as usize])),
                _ => {
                    let lo = 1024 + rng.below(60_000) as u16;
                    Some(PortRange { lo, hi: lo.saturating_add(rng.below(2000) as u16) })
                }
            };
            let matches = Match {
                src_ip: (rng.below(2) == 0).then(|| net(&mut rng)),
                dst_ip: Some(net(&mut rng)),
                proto,
                dst_port,
                ..Match::default()
            };
            Rule {
                name: format!("rule-{i}"),
                priority: (n - i) as u32,
                matches,
                symmetric: rng.below(5) == 0,
                action: Action::Chain((i % 16) as ChainId),
            }
        })
        .collect()
}

/// A key inside `m`, host bits and unconstrained ports random.
fn key_in(m: &Match, rng: &mut Rng) -> FlowKey {
    let addr = |n: Option<IpNet>, rng: &mut Rng| {
        let random = 0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff);
        let v = match n {
            Some(IpNet::V4(n)) => u32::from(n.network()) | (random & u32::from(n.hostmask())),
            _ => random,
        };
        ip_to_key_bytes(IpAddr::V4(Ipv4Addr::from(v)))
    };
    let port = |r: Option<PortRange>, rng: &mut Rng| match r {
        Some(r) => r.lo + (rng.next() % (u64::from(r.hi - r.lo) + 1)) as u16,
        None => rng.next() as u16,
    };
    FlowKey {
        src_ip: addr(m.src_ip, rng),
        dst_ip: addr(m.dst_ip, rng),
        src_port: port(m.src_port, rng),
        dst_port: port(m.dst_port, rng),
        proto: m.proto.unwrap_or(proto::TCP),
        ip_version: 4,
        ethertype: 0x0800,
        ..FlowKey::default()
    }
}

/// Keys no rule matches: both addresses outside 10.0.0.0/8.
fn miss_key(rng: &mut Rng) -> FlowKey {
    let a =
        |rng: &mut Rng| ip_to_key_bytes(IpAddr::V4(Ipv4Addr::from(0xac10_0000 | (rng.next() as u32 & 0x000f_ffff))));
    FlowKey {
        src_ip: a(rng),
        dst_ip: a(rng),
        src_port: rng.next() as u16,
        dst_port: WELL_KNOWN[rng.below(8) as usize],
        proto: proto::TCP,
        ip_version: 4,
        ethertype: 0x0800,
        ..FlowKey::default()
    }
}

fn classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("dataplane::classify");
    for n in [100usize, 1_000, 10_000] {
        let rules = rules(n, 0x5eed ^ n as u64);
        let set = RuleSet::new(rules).unwrap();
        let mut rng = Rng(42);
        let hits: Vec<FlowKey> =
            (0..KEYS).map(|_| key_in(&set.rules()[rng.below(n as u64) as usize].matches, &mut rng)).collect();
        let misses: Vec<FlowKey> = (0..KEYS).map(|_| miss_key(&mut rng)).collect();
        for k in hits.iter().take(64) {
            assert!(set.classify(k).is_some());
            assert_eq!(set.classify(k), naive::classify(set.rules(), k));
        }
        for k in misses.iter().take(64) {
            assert_eq!(set.classify(k), None);
        }
        eprintln!("{n} rules: {} tuples", set.tuple_count());

        for (what, keys) in [("hit", &hits), ("miss", &misses)] {
            g.bench_function(format!("{what}/{n}"), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % KEYS;
                    black_box(set.classify(black_box(&keys[i])))
                })
            });
        }
        g.bench_function(format!("cache_hit/{n}"), |b| {
            let mut cache = FlowCache::new(4 * KEYS);
            cache.set_generation(1);
            for k in &hits {
                cache.lookup(k, |k| set.classify(k).map(|v| v.rule));
            }
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % KEYS;
                black_box(cache.lookup(black_box(&hits[i]), |k| set.classify(k).map(|v| v.rule)))
            })
        });
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("dataplane::classify");
    g.sample_size(10);
    let realistic = rules(10_000, 7);
    g.bench_function("build/10000", |b| {
        b.iter_batched(|| realistic.clone(), |r| RuleSet::new(r).unwrap(), BatchSize::LargeInput)
    });
    // Worst case for validation: one priority, so every pair is compared.
    let flat: Vec<Rule> = (0..10_000u32)
        .map(|i| Rule {
            name: format!("host-{i}"),
            priority: 1,
            matches: Match {
                dst_ip: Some(IpNet::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)), 32).unwrap()),
                ..Match::default()
            },
            symmetric: false,
            action: Action::Drop,
        })
        .collect();
    g.bench_function("build/10000_one_priority", |b| {
        b.iter_batched(|| flat.clone(), |r| RuleSet::new(r).unwrap(), BatchSize::LargeInput)
    });
    g.finish();
}

/// `tuples` rules with distinct masks (destination prefixes /8 ../32 and a
/// source prefix), none of which matches [`miss_key`]s.
fn tuple_rules(tuples: usize) -> Vec<Rule> {
    (0..tuples)
        .map(|i| {
            let prefix = 32 - (i as u8 % 8) * 3;
            let dst = IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), prefix).unwrap().trunc();
            let src = (i >= 8).then(|| IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), 16).unwrap());
            Rule {
                name: format!("t{i}"),
                priority: (i + 1) as u32,
                matches: Match { dst_ip: Some(dst), src_ip: src, ..Match::default() },
                symmetric: false,
                action: Action::Drop,
            }
        })
        .collect()
}

fn direct(c: &mut Criterion) {
    let mut g = c.benchmark_group("dataplane::classify");
    let mut rng = Rng(9);
    let misses: Vec<FlowKey> = (0..KEYS).map(|_| miss_key(&mut rng)).collect();
    for t in [1usize, 2, 4, 8] {
        let set = RuleSet::new(tuple_rules(t)).unwrap();
        assert_eq!(set.tuple_count(), t);
        g.bench_function(format!("direct/{t}_tuples"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % KEYS;
                black_box(set.classify(black_box(&misses[i])))
            })
        });
    }
    for t in [1usize, 2] {
        let set = RuleSet::new(tuple_rules(t)).unwrap();
        let mut out = [None; dataplane::BURST];
        g.throughput(Throughput::Elements(dataplane::BURST as u64));
        g.bench_function(format!("direct/burst/{t}_tuples"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + dataplane::BURST) % KEYS;
                black_box(set.classify_burst(black_box(&misses[i..i + dataplane::BURST]), &mut out))
            })
        });
    }
    // Back to one lookup per iteration for the flow cache.
    g.throughput(Throughput::Elements(1));
    const FLOWS: usize = 163_840;
    let set = RuleSet::new(tuple_rules(1)).unwrap();
    let flows: Vec<FlowKey> = (0..FLOWS).map(|_| miss_key(&mut rng)).collect();
    let mut cache = FlowCache::new(4 * FLOWS);
    cache.set_generation(1);
    for k in &flows {
        cache.lookup(k, |k| set.classify(k).map(|v| v.rule));
    }
    g.bench_function("direct/cache_163840_flows", |b| {
        let mut i = 0;
        b.iter(|| {
            // A stride through the flows, as a generator's round robin would.
            i = (i + 7919) % FLOWS;
            black_box(cache.lookup(black_box(&flows[i]), |k| set.classify(k).map(|v| v.rule)))
        })
    });
    g.finish();
}

criterion_group!(benches, classify, build, direct);
criterion_main!(benches);
