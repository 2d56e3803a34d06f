//! Steering rules and their compiled, immutable form.
//!
//! A [`Rule`] says which packets ([`Match`]) get which [`Action`]; a
//! [`RuleSet`] is a validated, compiled set of rules that classifies a
//! [`FlowKey`] into a [`Verdict`]. Highest priority wins; two rules of equal
//! priority that can match the same packet are rejected when the set is built.
//!
//! Classification is tuple-space search (module `tss`): rules
//! are grouped by which fields and prefix lengths they use, one hash table per
//! group, so a lookup costs one hash probe per distinct mask instead of one
//! comparison per rule. The per-worker [`crate::cache::FlowCache`] sits in
//! front of it, so the search runs once per flow and rule-set generation.

use crate::flow::{FlowKey, MacAddr};
use crate::packet::PortId;
use hashbrown::HashMap;
/// Re-exported: [`Match`] holds networks of this type, and users of the
/// classifier should not need to depend on `ipnet` themselves to build one.
pub use ipnet::IpNet;
use std::net::{Ipv4Addr, Ipv6Addr};

#[cfg(any(test, feature = "testutil"))]
pub mod naive;
#[cfg(test)]
mod tests;
mod tss;

use tss::{Ternary, TupleSpace};

/// Index of a rule in its [`RuleSet`].
pub type RuleId = u32;
/// Index of a chain in the chain table the rules were compiled against.
pub type ChainId = u16;

/// What happens to a packet a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Run the chain (copies go to monitoring), then forward the original.
    Chain(ChainId),
    /// Drop the packet (counted under the rule).
    Drop,
}

/// The result of classifying one packet that a rule matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Verdict {
    /// The rule that matched.
    pub rule: RuleId,
    /// Its action.
    pub action: Action,
}

/// An inclusive range of L4 ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port in the range.
    pub lo: u16,
    /// Last port in the range (inclusive).
    pub hi: u16,
}

impl PortRange {
    /// A range holding one port.
    pub fn single(port: u16) -> PortRange {
        PortRange { lo: port, hi: port }
    }

    /// True when `port` lies in the range.
    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

/// The fields a rule matches on; `None` is a wildcard.
///
/// `ethertype`, `vlan` and `inner_vlan` compare with the key's fields of the
/// same name (`vlan` is the outer tag). An IPv4 network matches only IPv4
/// packets, an IPv6 network only IPv6 packets. Port ranges compare with the
/// key's L4 ports (ICMP type/code for ICMP; the config layer only allows port
/// matches together with a TCP, UDP or SCTP protocol).
///
/// On a VXLAN or Geneve packet every field but `in_port` and `vni` compares
/// with the *inner* frame (see [`crate::parser`]); `vni: Some(v)` matches
/// only packets of overlay network `v`, so it implies a tunnelled packet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Match {
    /// Ingress port.
    pub in_port: Option<PortId>,
    /// Source MAC address.
    pub src_mac: Option<MacAddr>,
    /// Destination MAC address.
    pub dst_mac: Option<MacAddr>,
    /// Outer VLAN id.
    pub vlan: Option<u16>,
    /// Inner VLAN id (QinQ).
    pub inner_vlan: Option<u16>,
    /// EtherType after VLAN tags.
    pub ethertype: Option<u16>,
    /// Source network.
    pub src_ip: Option<IpNet>,
    /// Destination network.
    pub dst_ip: Option<IpNet>,
    /// IP protocol number.
    pub proto: Option<u8>,
    /// Source L4 port range.
    pub src_port: Option<PortRange>,
    /// Destination L4 port range.
    pub dst_port: Option<PortRange>,
    /// Overlay network id (VXLAN/Geneve VNI); compares with [`FlowKey::vni`].
    pub vni: Option<u32>,
}

/// One steering rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Unique name: shown in counters and in every copy's annotation.
    pub name: String,
    /// Higher wins.
    pub priority: u32,
    /// Which packets.
    pub matches: Match,
    /// Also match the reverse direction (source and destination swapped).
    pub symmetric: bool,
    /// What to do with them.
    pub action: Action,
}

/// Why a set of rules could not be compiled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    /// Two rules have the same name.
    #[error("rule `{name}` is defined twice (rules {first} and {second})")]
    DuplicateName {
        /// The name.
        name: String,
        /// Index of the first rule.
        first: RuleId,
        /// Index of the second rule.
        second: RuleId,
    },
    /// Two rules of equal priority can match the same packet.
    #[error("rules `{first_name}` and `{second_name}` have the same priority {priority} and can match the same packet; give one a higher priority")]
    Overlap {
        /// Index of the earlier rule.
        first: RuleId,
        /// Its name.
        first_name: String,
        /// Index of the later rule.
        second: RuleId,
        /// Its name.
        second_name: String,
        /// The shared priority.
        priority: u32,
    },
    /// A rule that no packet can match, which is always a mistake in the
    /// config (a reversed port range, IPv4 source with IPv6 destination).
    #[error("rule `{name}` can never match: {reason}")]
    Unmatchable {
        /// Index of the rule.
        rule: RuleId,
        /// Its name.
        name: String,
        /// What is contradictory.
        reason: &'static str,
    },
}

/// Whether a network matches a key address. IPv4 compares the low 32 bits,
/// where an IPv4-mapped address keeps the IPv4 address.
fn net_matches(net: &IpNet, version: u8, addr: &[u8; 16]) -> bool {
    match net {
        IpNet::V4(n) => {
            let [.., a, b, c, d] = *addr;
            version == 4 && n.contains(&Ipv4Addr::new(a, b, c, d))
        }
        IpNet::V6(n) => version == 6 && n.contains(&Ipv6Addr::from(*addr)),
    }
}

/// A port range as `(lo, hi)`, the whole space for a wildcard.
fn bounds(r: Option<PortRange>) -> (u16, u16) {
    r.map_or((0, u16::MAX), |r| (r.lo, r.hi))
}

/// A match compiled for intersection tests: mask-comparable fields as a
/// ternary pattern, ports as ranges (their exact intersection is cheaper
/// than comparing prefix expansions).
#[derive(Clone, Copy)]
struct Shape {
    fields: Ternary,
    src: (u16, u16),
    dst: (u16, u16),
}

impl Shape {
    /// `None` when no packet can match `m`.
    fn of(m: &Match) -> Option<Shape> {
        Some(Shape { fields: Ternary::of(m)?, src: bounds(m.src_port), dst: bounds(m.dst_port) })
    }

    fn meets(&self, other: &Shape) -> bool {
        let meet = |a: (u16, u16), b: (u16, u16)| a.0.max(b.0) <= a.1.min(b.1);
        meet(self.src, other.src) && meet(self.dst, other.dst) && self.fields.intersects(&other.fields)
    }
}

impl Match {
    /// True when `key` satisfies every field that is not a wildcard.
    ///
    /// This is the definition of a match; the compiled [`RuleSet`] must agree
    /// with it (the proptests check it against the linear-scan reference, `naive::classify`).
    pub fn matches(&self, key: &FlowKey) -> bool {
        // A wildcard (`None`) satisfies any test.
        fn all<T>(want: Option<T>, test: impl FnOnce(T) -> bool) -> bool {
            match want {
                Some(w) => test(w),
                None => true,
            }
        }
        fn eq<T: PartialEq>(want: Option<T>, have: T) -> bool {
            all(want, |w| w == have)
        }
        eq(self.in_port, key.in_port)
            && eq(self.src_mac, key.src_mac)
            && eq(self.dst_mac, key.dst_mac)
            && eq(self.vlan, key.outer_vlan)
            && eq(self.inner_vlan, key.inner_vlan)
            && eq(self.ethertype, key.ethertype)
            && eq(self.proto, key.proto)
            && eq(self.vni, key.vni)
            && all(self.src_ip.as_ref(), |n| net_matches(n, key.ip_version, &key.src_ip))
            && all(self.dst_ip.as_ref(), |n| net_matches(n, key.ip_version, &key.dst_ip))
            && all(self.src_port, |r| r.contains(key.src_port))
            && all(self.dst_port, |r| r.contains(key.dst_port))
    }

    /// The match for the reverse direction of a conversation: source and
    /// destination MAC, network and port swapped; the VNI, like the ingress
    /// port and VLANs, stays (both directions share the overlay network). A symmetric rule matches a
    /// key when either this or the original matches it.
    pub fn mirrored(&self) -> Match {
        Match {
            src_mac: self.dst_mac,
            dst_mac: self.src_mac,
            src_ip: self.dst_ip,
            dst_ip: self.src_ip,
            src_port: self.dst_port,
            dst_port: self.src_port,
            ..self.clone()
        }
    }

    /// True when at least one key matches both `self` and `other`: the test
    /// behind the equal-priority check, exact (not a heuristic) under the
    /// field semantics of [`Match::matches`].
    pub fn overlaps(&self, other: &Match) -> bool {
        if !self.layer3().compatible(other.layer3()) {
            return false;
        }
        match (Shape::of(self), Shape::of(other)) {
            (Some(a), Some(b)) => a.meets(&b),
            _ => false,
        }
    }

    /// What the match says about the EtherType of the packets it can match:
    /// the field itself, or what its IP fields imply (an IPv4 network only in
    /// IPv4, an IPv6 network only in IPv6, any protocol only in IP). Keys
    /// carry the EtherType after VLAN tags, so these agree. (A protocol number
    /// alone says nothing about the version: ICMP inside IPv6 can be sent.)
    fn layer3(&self) -> Layer3 {
        if let Some(e) = self.ethertype {
            return Layer3::Exact(e);
        }
        let net = self.src_ip.or(self.dst_ip);
        match (net, self.proto) {
            (Some(IpNet::V4(_)), _) => Layer3::Exact(0x0800),
            (Some(IpNet::V6(_)), _) => Layer3::Exact(0x86dd),
            (None, Some(_)) => Layer3::AnyIp,
            (None, None) => Layer3::Any,
        }
    }

    /// Why no packet can match, if so.
    fn contradiction(&self) -> Option<&'static str> {
        let empty = |r: Option<PortRange>| r.is_some_and(|r| r.lo > r.hi);
        if Ternary::of(self).is_none() {
            Some("its source and destination networks are of different IP families")
        } else if empty(self.src_port) {
            Some("its source port range is empty (lo > hi)")
        } else if empty(self.dst_port) {
            Some("its destination port range is empty (lo > hi)")
        } else {
            None
        }
    }
}

/// The EtherTypes a match can see (for the overlap check).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer3 {
    Any,
    AnyIp,
    Exact(u16),
}

impl Layer3 {
    fn compatible(self, other: Layer3) -> bool {
        let ip = |e: u16| e == 0x0800 || e == 0x86dd;
        match (self, other) {
            (Layer3::Exact(a), Layer3::Exact(b)) => a == b,
            (Layer3::Exact(e), Layer3::AnyIp) | (Layer3::AnyIp, Layer3::Exact(e)) => ip(e),
            _ => true,
        }
    }
}

/// A validated, compiled, immutable set of rules.
///
/// Control builds one per configuration change and publishes it to the
/// workers behind an `Arc`; it is never mutated afterwards, so workers read it
/// without locks. Rule ids are indexes into [`RuleSet::rules`]; they change
/// from one set to the next. A rule's counter slot ([`RuleSet::slot`]) does
/// not: control keeps it for as long as a rule of that name exists, so the
/// rule's counters survive rule-set updates.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    names: HashMap<String, RuleId>,
    /// Counter slot of each rule, by rule id.
    slots: Vec<u32>,
    tss: TupleSpace,
}

impl RuleSet {
    /// Validates and compiles `rules`.
    ///
    /// Rejects duplicate names, rules that can never match, and two rules of
    /// equal priority that can match the same packet (counting the mirrored
    /// direction of symmetric rules): with those, which rule wins would
    /// depend on the order of the config file. The overlap test is pairwise
    /// only among rules of one priority.
    pub fn new(rules: Vec<Rule>) -> Result<RuleSet, RuleError> {
        let mut names = HashMap::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            if let Some(&first) = names.get(r.name.as_str()) {
                return Err(RuleError::DuplicateName { name: r.name.clone(), first, second: i as RuleId });
            }
            names.insert(r.name.clone(), i as RuleId);
        }
        for (i, r) in rules.iter().enumerate() {
            if let Some(reason) = r.matches.contradiction() {
                return Err(RuleError::Unmatchable { rule: i as RuleId, name: r.name.clone(), reason });
            }
        }
        check_overlaps(&rules)?;
        let mirrors: Vec<Option<Match>> = rules.iter().map(|r| r.symmetric.then(|| r.matches.mirrored())).collect();
        let tss = TupleSpace::build(rules.iter().zip(&mirrors).enumerate().flat_map(|(i, (r, mirror))| {
            let verdict = Verdict { rule: i as RuleId, action: r.action };
            std::iter::once(&r.matches).chain(mirror.as_ref()).map(move |m| (m, r.priority, verdict))
        }));
        let slots = (0..rules.len() as u32).collect();
        Ok(RuleSet { rules, names, slots, tss })
    }

    /// The same set with each rule's counter slot given by `slot` (by
    /// default a rule's slot is its id). Workers count a rule's packets in
    /// its slot and label its copies with it, so a slot that stays with a
    /// rule name across sets keeps that rule's counters and copy labels.
    pub fn with_slots(mut self, mut slot: impl FnMut(&Rule) -> u32) -> RuleSet {
        self.slots = self.rules.iter().map(&mut slot).collect();
        self
    }

    /// The counter slot of rule `id` (the id itself when it is out of range).
    #[inline]
    pub fn slot(&self, id: RuleId) -> u32 {
        self.slots.get(id as usize).copied().unwrap_or(id)
    }

    /// The set with no rules: every packet takes the unmatched fast path.
    pub fn empty() -> RuleSet {
        RuleSet { rules: Vec::new(), names: HashMap::new(), slots: Vec::new(), tss: TupleSpace::default() }
    }

    /// The verdict of the highest-priority rule matching `key`, `None` when
    /// no rule does. Bounded work: one hash probe per tuple at most.
    #[inline]
    pub fn classify(&self, key: &FlowKey) -> Option<Verdict> {
        self.tss.classify(key)
    }

    /// [`RuleSet::classify`] for every key of a burst: `out[j]` is the
    /// verdict for `keys[j]` (`out` must be at least as long as `keys`).
    /// Cheaper per packet than one call each. Returns how many keys matched.
    #[inline]
    pub fn classify_burst(&self, keys: &[FlowKey], out: &mut [Option<Verdict>]) -> usize {
        self.tss.classify_burst(keys, out)
    }

    /// The rules, indexed by [`RuleId`].
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The id of the rule called `name`, for counters and the control API.
    pub fn rule_id(&self, name: &str) -> Option<RuleId> {
        self.names.get(name).copied()
    }

    /// Number of distinct masks (tuples): what a classification miss costs,
    /// in hash probes. Worth exporting: it, not the rule count, drives the
    /// miss cost.
    pub fn tuple_count(&self) -> usize {
        self.tss.tuple_count()
    }
}

/// Rejects two rules of equal priority that can match one packet.
fn check_overlaps(rules: &[Rule]) -> Result<(), RuleError> {
    struct Compiled {
        index: usize,
        forward: Shape,
        mirror: Option<Shape>,
    }
    let mut order: Vec<(u32, usize)> = rules.iter().enumerate().map(|(i, r)| (r.priority, i)).collect();
    order.sort_unstable();
    for bucket in order.chunk_by(|a, b| a.0 == b.0) {
        if bucket.len() < 2 {
            continue;
        }
        let compiled: Vec<Compiled> = bucket
            .iter()
            .filter_map(|&(_, index)| {
                let r = &rules[index];
                Some(Compiled {
                    index,
                    forward: Shape::of(&r.matches)?,
                    mirror: if r.symmetric { Shape::of(&r.matches.mirrored()) } else { None },
                })
            })
            .collect();
        for (j, b) in compiled.iter().enumerate() {
            for a in compiled.iter().take(j) {
                let hit = a.forward.meets(&b.forward)
                    || a.mirror.is_some_and(|m| m.meets(&b.forward))
                    || b.mirror.is_some_and(|m| a.forward.meets(&m));
                if hit {
                    let (ra, rb) = (&rules[a.index], &rules[b.index]);
                    return Err(RuleError::Overlap {
                        first: a.index as RuleId,
                        first_name: ra.name.clone(),
                        second: b.index as RuleId,
                        second_name: rb.name.clone(),
                        priority: ra.priority,
                    });
                }
            }
        }
    }
    Ok(())
}
