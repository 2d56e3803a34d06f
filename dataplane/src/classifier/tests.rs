use super::*;
use crate::flow::{ip_to_key_bytes, proto, tunnel, NO_VLAN, NO_VNI};
use proptest::prelude::*;
use std::net::IpAddr;

fn rule(name: &str, priority: u32, matches: Match) -> Rule {
    Rule { name: name.into(), priority, matches, symmetric: false, action: Action::Chain(priority as ChainId) }
}

fn sym(mut r: Rule) -> Rule {
    r.symmetric = true;
    r
}

fn net(s: &str) -> Option<IpNet> {
    Some(s.parse().unwrap())
}

fn ports(lo: u16, hi: u16) -> Option<PortRange> {
    Some(PortRange { lo, hi })
}

fn key(src: &str, dst: &str, sport: u16, dport: u16) -> FlowKey {
    let (s, d): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    FlowKey {
        src_ip: ip_to_key_bytes(s),
        dst_ip: ip_to_key_bytes(d),
        ip_version: if s.is_ipv4() { 4 } else { 6 },
        ethertype: if s.is_ipv4() { 0x0800 } else { 0x86dd },
        proto: proto::TCP,
        src_port: sport,
        dst_port: dport,
        ..FlowKey::default()
    }
}

fn hit<'a>(set: &'a RuleSet, k: &FlowKey) -> Option<&'a str> {
    let v = set.classify(k);
    assert_eq!(v, naive::classify(set.rules(), k), "compiled and naive disagree on {k:?}");
    v.map(|v| set.rules()[v.rule as usize].name.as_str())
}

#[test]
fn rule_set_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<RuleSet>();
}

#[test]
fn empty_set_matches_nothing() {
    let set = RuleSet::empty();
    assert!(set.is_empty());
    assert_eq!(set.len(), 0);
    assert_eq!(set.classify(&FlowKey::default()), None);
    assert_eq!(set.rule_id("x"), None);
}

#[test]
fn highest_priority_wins_whatever_the_order() {
    let wide = Match { dst_ip: net("10.0.0.0/8"), ..Match::default() };
    let narrow = Match { dst_ip: net("10.1.0.0/16"), dst_port: ports(80, 80), ..Match::default() };
    for rules in [
        vec![rule("wide", 10, wide.clone()), rule("narrow", 20, narrow.clone())],
        vec![rule("narrow", 20, narrow.clone()), rule("wide", 10, wide.clone())],
        vec![rule("narrow", 5, narrow.clone()), rule("wide", 10, wide.clone())],
    ] {
        let set = RuleSet::new(rules).unwrap();
        let narrow_prio = set.rules()[set.rule_id("narrow").unwrap() as usize].priority;
        let expect = if narrow_prio > 10 { "narrow" } else { "wide" };
        assert_eq!(hit(&set, &key("1.1.1.1", "10.1.2.3", 999, 80)), Some(expect));
        assert_eq!(hit(&set, &key("1.1.1.1", "10.1.2.3", 999, 81)), Some("wide"));
        assert_eq!(hit(&set, &key("1.1.1.1", "11.1.2.3", 999, 80)), None);
    }
}

#[test]
fn verdict_carries_rule_id_and_action() {
    let set = RuleSet::new(vec![
        rule("a", 1, Match { proto: Some(proto::UDP), ..Match::default() }),
        Rule { action: Action::Drop, ..rule("b", 2, Match { proto: Some(proto::TCP), ..Match::default() }) },
    ])
    .unwrap();
    assert_eq!(set.rule_id("b"), Some(1));
    assert_eq!(set.classify(&key("1.1.1.1", "2.2.2.2", 1, 2)), Some(Verdict { rule: 1, action: Action::Drop }));
}

#[test]
fn symmetric_rules_match_both_directions() {
    let m = Match {
        src_ip: net("10.0.0.1/32"),
        dst_ip: net("10.0.0.2/32"),
        dst_port: ports(443, 443),
        src_mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
        ..Match::default()
    };
    let mut fwd = key("10.0.0.1", "10.0.0.2", 50000, 443);
    fwd.src_mac = MacAddr([2, 0, 0, 0, 0, 1]);
    let rev = fwd.reversed();

    let one_way = RuleSet::new(vec![rule("tls", 1, m.clone())]).unwrap();
    assert_eq!(hit(&one_way, &fwd), Some("tls"));
    assert_eq!(hit(&one_way, &rev), None);

    let both = RuleSet::new(vec![sym(rule("tls", 1, m))]).unwrap();
    assert_eq!(hit(&both, &fwd), Some("tls"));
    assert_eq!(hit(&both, &rev), Some("tls"));
    // Half-reversed keys are neither direction.
    assert_eq!(hit(&both, &key("10.0.0.2", "10.0.0.1", 50000, 443)), None);
}

#[test]
fn ip_families_do_not_mix() {
    let set = RuleSet::new(vec![
        rule("any-v4", 1, Match { src_ip: net("0.0.0.0/0"), ..Match::default() }),
        rule("any-v6", 2, Match { src_ip: net("::/0"), ..Match::default() }),
        rule("mapped", 3, Match { dst_ip: net("::ffff:0:0/96"), ..Match::default() }),
        rule("v4-net", 4, Match { dst_ip: net("10.0.0.0/8"), ..Match::default() }),
    ])
    .unwrap();
    assert_eq!(hit(&set, &key("10.0.0.1", "10.0.0.2", 1, 2)), Some("v4-net"));
    assert_eq!(hit(&set, &key("10.0.0.1", "11.0.0.2", 1, 2)), Some("any-v4"));
    assert_eq!(hit(&set, &key("2001:db8::1", "2001:db8::2", 1, 2)), Some("any-v6"));
    // An IPv6 key whose address happens to look IPv4-mapped is still IPv6.
    assert_eq!(hit(&set, &key("2001:db8::1", "::ffff:10.0.0.2", 1, 2)), Some("mapped"));
    // Not IP at all.
    assert_eq!(hit(&set, &FlowKey::default()), None);
    let unmatchable = Match { src_ip: net("10.0.0.0/8"), dst_ip: net("2001:db8::/32"), ..Match::default() };
    assert!(matches!(RuleSet::new(vec![rule("bad", 1, unmatchable)]), Err(RuleError::Unmatchable { rule: 0, .. })));
}

#[test]
fn port_range_edges() {
    for (lo, hi) in [(1000, 2000), (0, 10), (65000, 65535), (80, 80), (0, 65535), (1, 65534)] {
        let set = RuleSet::new(vec![rule("r", 1, Match { dst_port: ports(lo, hi), ..Match::default() })]).unwrap();
        let at = |p: u16| hit(&set, &key("1.1.1.1", "2.2.2.2", 7, p)).is_some();
        assert!(at(lo) && at(hi), "{lo}-{hi}");
        if let Some(below) = lo.checked_sub(1) {
            assert!(!at(below), "{lo}-{hi} at {below}");
        }
        if let Some(above) = hi.checked_add(1) {
            assert!(!at(above), "{lo}-{hi} at {above}");
        }
        assert_eq!(at(0), lo == 0);
        assert_eq!(at(65535), hi == 65535);
    }
    let empty = Match { src_port: ports(10, 9), ..Match::default() };
    assert!(matches!(RuleSet::new(vec![rule("e", 1, empty)]), Err(RuleError::Unmatchable { .. })));
}

#[test]
fn vlans_macs_ethertype_and_in_port_are_exact() {
    let m = Match {
        in_port: Some(3),
        vlan: Some(100),
        inner_vlan: Some(NO_VLAN),
        ethertype: Some(0x0806),
        dst_mac: Some(MacAddr::BROADCAST),
        ..Match::default()
    };
    let set = RuleSet::new(vec![rule("arp", 1, m)]).unwrap();
    let k =
        FlowKey { in_port: 3, outer_vlan: 100, ethertype: 0x0806, dst_mac: MacAddr::BROADCAST, ..FlowKey::default() };
    assert_eq!(hit(&set, &k), Some("arp"));
    assert_eq!(hit(&set, &FlowKey { inner_vlan: 5, ..k }), None);
    assert_eq!(hit(&set, &FlowKey { outer_vlan: NO_VLAN, ..k }), None);
    assert_eq!(hit(&set, &FlowKey { in_port: 2, ..k }), None);
}

#[test]
fn symmetric_rule_on_inner_addresses_stays_inside_its_vni() {
    use crate::parser::parse;
    use crate::wire::build::PacketBuilder;
    let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    let m = Match { src_ip: net("192.168.0.1/32"), dst_ip: net("192.168.0.2/32"), vni: Some(5001), ..Match::default() };
    let set = RuleSet::new(vec![sym(rule("tenant", 10, m))]).unwrap();
    // Real frames through the parser: VXLAN between two hosts, each direction.
    let frame = |vni: u32, forward: bool| {
        let (s, d) = ("192.168.0.1".parse().unwrap(), "192.168.0.2".parse().unwrap());
        let (s, d, sm, dm) = if forward { (s, d, a, b) } else { (d, s, b, a) };
        let inner = PacketBuilder::ethernet(sm, dm).ipv4(s, d).tcp(40000, 443).build();
        let outer = PacketBuilder::ethernet(MacAddr([2, 0, 0, 0, 1, 1]), MacAddr([2, 0, 0, 0, 1, 2]));
        parse(&outer.ipv4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()).vxlan(vni, &inner).build(), 1).0
    };
    assert_eq!(hit(&set, &frame(5001, true)), Some("tenant"));
    assert_eq!(hit(&set, &frame(5001, false)), Some("tenant"));
    assert_eq!(hit(&set, &frame(5002, true)), None);
    assert_eq!(hit(&set, &frame(5002, false)), None);
    // The same addresses on a flat network are not in VNI 5001.
    let flat = key("192.168.0.1", "192.168.0.2", 40000, 443);
    assert_eq!(hit(&set, &flat), None);
    // Mirroring keeps the VNI; rules in different VNIs never overlap.
    assert_eq!(set.rules()[0].matches.mirrored().vni, Some(5001));
    let other = Match { vni: Some(5002), ..set.rules()[0].matches.clone() };
    assert!(!set.rules()[0].matches.overlaps(&other));
    assert!(set.rules()[0].matches.overlaps(&Match::default()));
}

#[test]
fn equal_priority_overlap_is_rejected() {
    let a = Match { dst_ip: net("10.0.0.0/8"), ..Match::default() };
    let b = Match { dst_ip: net("10.1.0.0/16"), dst_port: ports(80, 90), ..Match::default() };
    let err = RuleSet::new(vec![rule("x", 1, Match::default()), rule("a", 5, a.clone()), rule("b", 5, b.clone())]);
    assert_eq!(
        err.unwrap_err(),
        RuleError::Overlap { first: 1, first_name: "a".into(), second: 2, second_name: "b".into(), priority: 5 }
    );
    // Different priorities: fine.
    RuleSet::new(vec![rule("a", 5, a.clone()), rule("b", 6, b.clone())]).unwrap();
    // Equal priority, disjoint in one field: fine.
    let c = Match { dst_port: ports(91, 100), ..b.clone() };
    RuleSet::new(vec![rule("b", 5, b.clone()), rule("c", 5, c)]).unwrap();
    let d = Match { dst_ip: net("2001:db8::/32"), ..Match::default() };
    RuleSet::new(vec![rule("a", 5, a), rule("d", 5, d)]).unwrap();
}

#[test]
fn symmetric_mirror_overlap_is_rejected() {
    let out =
        Match { src_ip: net("10.0.0.1/32"), dst_ip: net("10.0.0.2/32"), dst_port: ports(80, 80), ..Match::default() };
    let back =
        Match { src_ip: net("10.0.0.2/32"), dst_ip: net("10.0.0.1/32"), src_port: ports(80, 80), ..Match::default() };
    assert!(!out.overlaps(&back));
    assert!(out.overlaps(&back.mirrored()));
    // Neither symmetric: the two directions are different packets.
    RuleSet::new(vec![rule("out", 5, out.clone()), rule("back", 5, back.clone())]).unwrap();
    for (so, sb) in [(true, false), (false, true), (true, true)] {
        let mk = |r: Rule, s: bool| if s { sym(r) } else { r };
        let err = RuleSet::new(vec![mk(rule("out", 5, out.clone()), so), mk(rule("back", 5, back.clone()), sb)]);
        assert!(matches!(err, Err(RuleError::Overlap { first: 0, second: 1, .. })), "{so} {sb}: {err:?}");
    }
}

#[test]
fn duplicate_names_are_rejected() {
    let err = RuleSet::new(vec![
        rule("a", 1, Match::default()),
        rule("b", 2, Match::default()),
        rule("a", 3, Match::default()),
    ]);
    assert_eq!(err.unwrap_err(), RuleError::DuplicateName { name: "a".into(), first: 0, second: 2 });
}

#[test]
fn many_disjoint_rules_of_one_priority_validate() {
    let rules: Vec<Rule> = (0..2000u32)
        .map(|i| {
            let m = Match { dst_ip: net(&format!("10.{}.{}.0/24", i / 256, i % 256)), ..Match::default() };
            rule(&format!("r{i}"), 7, m)
        })
        .collect();
    let set = RuleSet::new(rules).unwrap();
    assert_eq!(set.tuple_count(), 1);
    assert_eq!(hit(&set, &key("1.1.1.1", "10.7.207.9", 1, 1)), Some("r1999"));
    assert_eq!(hit(&set, &key("1.1.1.1", "10.7.208.9", 1, 1)), None);
}

#[test]
fn small_tuples_are_searched_key_by_key_and_large_ones_hashed_alike() {
    // One tuple (/32 destinations) of n keys, n on both sides of the linear-search limit:
    // every key hits its own rule, its neighbours miss, as the naive scan says.
    for n in [1u32, 2, 8, 9, 40] {
        let rules: Vec<Rule> = (0..n)
            .map(|i| {
                rule(
                    &format!("h{i}"),
                    i + 1,
                    Match { dst_ip: net(&format!("10.0.0.{}/32", 2 * i)), ..Match::default() },
                )
            })
            .collect();
        let set = RuleSet::new(rules.clone()).unwrap();
        assert_eq!(set.tuple_count(), 1);
        for i in 0..n {
            let k = key("1.1.1.1", &format!("10.0.0.{}", 2 * i), 1, 1);
            assert_eq!(hit(&set, &k), Some(format!("h{i}").as_str()), "{n} keys");
            assert_eq!(set.classify(&k), naive::classify(&rules, &k));
            let miss = key("1.1.1.1", &format!("10.0.0.{}", 2 * i + 1), 1, 1);
            assert_eq!(hit(&set, &miss), None, "{n} keys");
        }
    }
}

// ---- property tests: the compiled classifier agrees with the naive scan ----

/// Small value domains so that rules and keys collide often.
const V4: [[u8; 4]; 6] =
    [[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 1, 128], [10, 1, 255, 255], [192, 168, 0, 1], [0, 0, 0, 0]];
const V6: [[u16; 8]; 5] = [
    [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1],
    [0x2001, 0xdb8, 0, 0, 0, 0, 0, 2],
    [0x2001, 0xdb8, 0, 1, 0x8000, 0, 0, 1],
    [0x2001, 0xdb9, 0, 0, 0, 0, 0, 1],
    [0xfe80, 0, 0, 0, 0, 0, 0, 1],
];
const PORTS: [u16; 10] = [0, 1, 79, 80, 81, 443, 1023, 1024, 65534, 65535];

fn any_port() -> impl Strategy<Value = u16> {
    prop_oneof![prop::sample::select(&PORTS[..]), any::<u16>()]
}

fn port_range() -> impl Strategy<Value = PortRange> {
    (any_port(), any_port()).prop_map(|(a, b)| PortRange { lo: a.min(b), hi: a.max(b) })
}

fn addr(v6: bool) -> BoxedStrategy<IpAddr> {
    if v6 {
        prop::sample::select(&V6[..]).prop_map(IpAddr::from).boxed()
    } else {
        prop::sample::select(&V4[..]).prop_map(IpAddr::from).boxed()
    }
}

fn ip_net(v6: bool) -> impl Strategy<Value = IpNet> {
    let max: u8 = if v6 { 128 } else { 32 };
    (addr(v6), 0..=max).prop_map(|(a, p)| IpNet::new(a, p).unwrap())
}

fn small_mac() -> impl Strategy<Value = MacAddr> {
    (0u8..3).prop_map(|b| MacAddr([2, 0, 0, 0, 0, b]))
}

fn opt<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    prop::option::weighted(0.4, s)
}

fn a_match() -> impl Strategy<Value = Match> {
    let l2 = (
        opt(0u16..3),
        opt(small_mac()),
        opt(small_mac()),
        opt(prop::sample::select(vec![1u16, 2, NO_VLAN])),
        opt(prop::sample::select(vec![1u16, NO_VLAN])),
        opt(prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806])),
    );
    let l34 = any::<bool>().prop_flat_map(|v6| {
        (
            opt(ip_net(v6)),
            opt(ip_net(v6)),
            opt(prop::sample::select(vec![6u8, 17, 1])),
            opt(port_range()),
            opt(port_range()),
            opt(prop::sample::select(&VNIS[..])),
        )
    });
    (l2, l34).prop_map(
        |(
            (in_port, src_mac, dst_mac, vlan, inner_vlan, ethertype),
            (src_ip, dst_ip, proto, src_port, dst_port, vni),
        )| {
            Match {
                in_port,
                src_mac,
                dst_mac,
                vlan,
                inner_vlan,
                ethertype,
                src_ip,
                dst_ip,
                proto,
                src_port,
                dst_port,
                vni,
            }
        },
    )
}

/// VNIs rules and keys draw from: two tenants, and the extremes of 24 bits.
const VNIS: [u32; 4] = [100, 101, 0, (1 << 24) - 1];

/// `(vni, tunnel)` of a key: not tunnelled, or VXLAN/Geneve with a VNI from [`VNIS`].
fn an_overlay() -> impl Strategy<Value = (u32, u8)> {
    prop_oneof![
        Just((NO_VNI, tunnel::NONE)),
        (prop::sample::select(&VNIS[..]), prop::sample::select(vec![tunnel::VXLAN, tunnel::GENEVE])),
    ]
}

fn a_key() -> impl Strategy<Value = FlowKey> {
    let l2 = (
        0u16..3,
        small_mac(),
        small_mac(),
        prop::sample::select(vec![1u16, 2, NO_VLAN]),
        prop::sample::select(vec![1u16, NO_VLAN]),
        prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806]),
        an_overlay(),
    );
    let l34 = (
        prop::sample::select(vec![0u8, 4, 6, 6]),
        any::<bool>(),
        any::<u128>(),
        any::<u128>(),
        prop::sample::select(vec![6u8, 17, 1]),
        any_port(),
        any_port(),
    );
    (l2, l34).prop_flat_map(
        |(
            (in_port, src_mac, dst_mac, outer_vlan, inner_vlan, ethertype, (vni, tunnel)),
            (ip_version, random_ip, r1, r2, proto, src_port, dst_port),
        )| {
            let v6 = ip_version == 6;
            let k = FlowKey {
                in_port,
                src_mac,
                dst_mac,
                outer_vlan,
                inner_vlan,
                ethertype,
                proto,
                src_port,
                dst_port,
                ip_version,
                vni,
                tunnel,
                ..FlowKey::default()
            };
            (Just(k), addr(v6), addr(v6)).prop_map(move |(mut k, s, d)| {
                // Either addresses from the rules' domain or random bits (within the family).
                (k.src_ip, k.dst_ip) = if random_ip {
                    let fam = |r: u128| {
                        if v6 {
                            r.to_be_bytes()
                        } else {
                            ip_to_key_bytes(IpAddr::from((r as u32).to_be_bytes()))
                        }
                    };
                    (fam(r1), fam(r2))
                } else {
                    (ip_to_key_bytes(s), ip_to_key_bytes(d))
                };
                if ip_version == 0 {
                    (k.src_ip, k.dst_ip) = ([0; 16], [0; 16]);
                }
                k
            })
        },
    )
}

/// A key inside `m` (when `m` can match anything), varied by `base`.
fn witness(m: &Match, base: &FlowKey) -> FlowKey {
    let mut k = *base;
    k.in_port = m.in_port.unwrap_or(k.in_port);
    k.src_mac = m.src_mac.unwrap_or(k.src_mac);
    k.dst_mac = m.dst_mac.unwrap_or(k.dst_mac);
    k.outer_vlan = m.vlan.unwrap_or(k.outer_vlan);
    k.inner_vlan = m.inner_vlan.unwrap_or(k.inner_vlan);
    k.ethertype = m.ethertype.unwrap_or(k.ethertype);
    k.proto = m.proto.unwrap_or(k.proto);
    if let Some(v) = m.vni {
        k.vni = v;
        k.tunnel = k.tunnel.max(tunnel::VXLAN);
    }
    // Keep host bits from the base where the prefix allows.
    let place = |n: &IpNet, have: [u8; 16]| -> [u8; 16] {
        let (net, host) = match n {
            IpNet::V4(n) => (
                u128::from(n.network().to_ipv6_mapped()),
                u128::from(u32::from(n.hostmask())) & u128::from_be_bytes(have),
            ),
            IpNet::V6(n) => (u128::from(n.network()), u128::from(n.hostmask()) & u128::from_be_bytes(have)),
        };
        (net | host).to_be_bytes()
    };
    for n in [m.src_ip, m.dst_ip].iter().flatten() {
        k.ip_version = if matches!(n, IpNet::V4(_)) { 4 } else { 6 };
    }
    if let Some(n) = &m.src_ip {
        k.src_ip = place(n, k.src_ip);
    }
    if let Some(n) = &m.dst_ip {
        k.dst_ip = place(n, k.dst_ip);
    }
    let in_range = |r: Option<PortRange>, p: u16| {
        r.map_or(p, |r| {
            if r.contains(p) {
                p
            } else if p & 1 == 0 {
                r.lo
            } else {
                r.hi
            }
        })
    };
    k.src_port = in_range(m.src_port, k.src_port);
    k.dst_port = in_range(m.dst_port, k.dst_port);
    k
}

fn rules_with_unique_priorities() -> impl Strategy<Value = Vec<Rule>> {
    prop::collection::vec((a_match(), prop::bool::weighted(0.3), prop::bool::weighted(0.2)), 0..40).prop_flat_map(
        |ms| {
            let n = ms.len() as u32;
            (Just(ms), Just((0..n).collect::<Vec<u32>>()).prop_shuffle()).prop_map(|(ms, prios)| {
                ms.into_iter()
                    .zip(prios)
                    .enumerate()
                    .map(|(i, ((matches, symmetric, drop), priority))| Rule {
                        name: format!("r{i}"),
                        priority,
                        matches,
                        symmetric,
                        action: if drop { Action::Drop } else { Action::Chain(i as ChainId) },
                    })
                    .collect()
            })
        },
    )
}

/// Whether the parser can produce `k`: the EtherType agrees with the IP
/// version, and only IP packets have a protocol (the overlap check relies on it).
fn realistic(k: &FlowKey) -> bool {
    match k.ip_version {
        4 => k.ethertype == 0x0800,
        6 => k.ethertype == 0x86dd,
        _ => k.proto == 0 && k.ethertype != 0x0800 && k.ethertype != 0x86dd,
    }
}

fn agree(set: &RuleSet, k: &FlowKey) -> Result<(), TestCaseError> {
    prop_assert_eq!(set.classify(k), naive::classify(set.rules(), k), "key {:?}", k);
    Ok(())
}

/// `classify_burst` gives the naive verdict for every key, in bursts of up
/// to 32 keys as the worker passes them.
fn agree_in_bursts(set: &RuleSet, keys: &[FlowKey]) -> Result<(), TestCaseError> {
    for burst in keys.chunks(crate::BURST) {
        let mut out = [Some(Verdict { rule: u32::MAX, action: Action::Drop }); crate::BURST];
        let hits = set.classify_burst(burst, &mut out);
        let mut expected = 0;
        for (k, v) in burst.iter().zip(out) {
            prop_assert_eq!(v, naive::classify(set.rules(), k), "key {:?} in a burst of {}", k, burst.len());
            expected += usize::from(v.is_some());
        }
        prop_assert_eq!(hits, expected, "keys matched in a burst of {}", burst.len());
    }
    Ok(())
}

/// Rule sets of one shape (the same fields, the same prefix lengths: one
/// tuple, or two when the rules are symmetric: the cases `classify_burst`
/// has loops of their own for), 1 to 12 rules (above 8 a tuple is hashed),
/// distinct priorities.
fn one_shape_rules() -> impl Strategy<Value = Vec<Rule>> {
    let shape = (any::<bool>(), 0usize..7, 0u8..=32, 0u8..=32, prop::bool::weighted(0.4));
    shape.prop_flat_map(|(v6, shape, src_len, dst_len, symmetric)| {
        let scale = move |l: u8| if v6 { l * 4 } else { l };
        let one = (addr(v6), addr(v6), prop::sample::select(vec![6u8, 17]), any_port(), any_port(), small_mac());
        prop::collection::vec(one, 1..=12).prop_map(move |vals| {
            vals.into_iter()
                .enumerate()
                .map(|(i, (src, dst, proto, sport, dport, mac))| {
                    let src = Some(IpNet::new(src, scale(src_len)).unwrap());
                    let dst = Some(IpNet::new(dst, scale(dst_len)).unwrap());
                    let l4 = (Some(proto), Some(PortRange::single(sport)), Some(PortRange::single(dport)));
                    let m = Match::default();
                    let m = match shape {
                        0 => Match { dst_ip: dst, ..m },
                        1 => Match { src_ip: src, ..m },
                        2 => Match { src_ip: src, dst_ip: dst, ..m },
                        3 => Match { proto: l4.0, src_port: l4.1, dst_port: l4.2, ..m },
                        4 => Match { dst_ip: dst, proto: l4.0, dst_port: l4.2, ..m },
                        5 => Match { src_ip: src, dst_ip: dst, proto: l4.0, src_port: l4.1, dst_port: l4.2, ..m },
                        // Any other shape: the loop that packs every word.
                        _ => Match { dst_mac: Some(mac), vlan: Some(1), proto: l4.0, ..m },
                    };
                    // Priorities distinct (5 and 13 are coprime) and not in insertion order.
                    // Symmetric: the mirror is a second tuple (two, when its shape differs).
                    Rule { symmetric, ..rule(&format!("r{i}"), (i as u32 * 5 + 3) % 13, m) }
                })
                .collect()
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn compiled_agrees_with_naive(rules in rules_with_unique_priorities(), keys in prop::collection::vec(a_key(), 1..48)) {
        let set = RuleSet::new(rules).unwrap();
        let mut matched = 0;
        for k in &keys {
            agree(&set, k)?;
            agree(&set, &k.reversed())?;
        }
        for (i, r) in set.rules().iter().enumerate() {
            let Some(base) = keys.get(i % keys.len()) else { continue };
            let w = witness(&r.matches, base);
            prop_assert!(r.matches.matches(&w), "witness {:?} misses {:?}", w, r.matches);
            matched += usize::from(set.classify(&w).is_some());
            agree(&set, &w)?;
            agree(&set, &w.reversed())?;
        }
        prop_assert_eq!(matched, set.len());
        let witnesses = set.rules().iter().enumerate().map(|(i, r)| witness(&r.matches, &keys[i % keys.len()]));
        let all: Vec<FlowKey> = keys.iter().flat_map(|k| [*k, k.reversed()]).chain(witnesses).collect();
        agree_in_bursts(&set, &all)?;
    }

    /// Sets of one shape, where `classify_burst` runs a loop of its own:
    /// every key, its reverse and a witness of every rule get the naive verdict.
    #[test]
    fn one_shape_sets_classify_bursts_like_naive(rules in one_shape_rules(), keys in prop::collection::vec(a_key(), 1..48)) {
        let set = match RuleSet::new(rules) {
            Ok(set) => set,
            Err(e) => return Err(TestCaseError::reject(format!("{e}"))),
        };
        let witnesses = set.rules().iter().enumerate().map(|(i, r)| witness(&r.matches, &keys[i % keys.len()]));
        let all: Vec<FlowKey> = keys.iter().flat_map(|k| [*k, k.reversed()]).chain(witnesses).collect();
        for k in &all {
            agree(&set, k)?;
        }
        agree_in_bursts(&set, &all)?;
    }

    /// With few priorities many sets are rejected; the accepted ones must have
    /// no packet matched by two rules of one priority, so the result is still
    /// the naive one.
    #[test]
    fn accepted_sets_with_shared_priorities_agree(ms in prop::collection::vec((a_match(), any::<bool>(), 0u32..4), 0..12), keys in prop::collection::vec(a_key(), 1..32)) {
        let rules: Vec<Rule> = ms.into_iter().enumerate().map(|(i, (m, s, p))| Rule { symmetric: s, ..rule(&format!("r{i}"), p, m) }).collect();
        if let Ok(set) = RuleSet::new(rules) {
            for k in &keys {
                agree(&set, k)?;
            }
            for (i, r) in set.rules().iter().enumerate() {
                let Some(base) = keys.get(i % keys.len()) else { continue };
                let w = witness(&r.matches, base);
                agree(&set, &w)?;
                agree(&set, &w.reversed())?;
            }
        }
    }

    /// `overlaps` is exact: disjoint matches share no key, overlapping ones
    /// share the witness built from both.
    #[test]
    fn overlaps_is_sound(a in a_match(), b in a_match(), keys in prop::collection::vec(a_key(), 1..32)) {
        let o = a.overlaps(&b);
        prop_assert_eq!(o, b.overlaps(&a));
        for k in &keys {
            for k in [*k, witness(&a, k), witness(&b, k), witness(&b, &witness(&a, k))] {
                if realistic(&k) && a.matches(&k) && b.matches(&k) {
                    prop_assert!(o, "both match {:?}", k);
                }
            }
        }
    }
}

#[test]
fn matches_of_different_layer3_protocols_do_not_overlap() {
    let net = |s: &str| Some(s.parse::<IpNet>().unwrap());
    let m = |f: &dyn Fn(&mut Match)| {
        let mut x = Match::default();
        f(&mut x);
        x
    };
    let v6 = m(&|x| x.ethertype = Some(0x86dd));
    let arp = m(&|x| x.ethertype = Some(0x0806));
    let v4net = m(&|x| x.src_ip = net("10.0.0.0/8"));
    let tcp = m(&|x| x.proto = Some(6));
    let icmpv6 = m(&|x| x.proto = Some(58));
    assert!(!v6.overlaps(&v4net));
    assert!(!arp.overlaps(&tcp));
    assert!(icmpv6.overlaps(&v4net), "protocol 58 inside IPv4 can be sent");
    assert!(tcp.overlaps(&v4net), "TCP over IPv4 is both");
    assert!(arp.overlaps(&Match::default()));
}
