//! `filter`: copy only the packets that also match a further set of fields,
//! so one rule can feed stages (or chains) that want different subsets.
//!
//! Arguments: `matches`, the same fields as a rule's match (a field left out
//! matches anything). It tests the packet's parsed [`FlowKey`](dataplane::flow::FlowKey)
//! — the outer headers, as the rule did, not those of a stripped overlay.
//! Counters: `input`, `output` (matched), `shed` (did not match). O(1) per
//! packet: a fixed number of field comparisons.

use super::{CopyPlan, StageCounters, StageIn};
use dataplane::classifier::Match;

/// The runtime form of a `filter` stage.
pub struct Filter {
    m: Match,
}

impl Filter {
    /// A stage keeping copies of packets whose key `m` matches.
    pub fn new(m: Match) -> Filter {
        Filter { m }
    }

    /// Keeps or sheds the copy.
    #[inline]
    pub fn process(&mut self, s: &StageIn<'_>, plan: &mut CopyPlan, c: &StageCounters) {
        c.input.add(1);
        if self.m.matches(s.key) {
            c.output.add(1);
        } else {
            plan.keep = false;
            c.shed.add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::classifier::PortRange;
    use dataplane::flow::{proto, MacAddr};
    use dataplane::packet::{Meta, Packet};
    use dataplane::parser::parse;
    use dataplane::wire::build::PacketBuilder;

    #[test]
    fn keeps_only_matching_packets() {
        let m = Match {
            proto: Some(proto::TCP),
            dst_port: Some(PortRange::single(443)),
            dst_ip: Some("10.0.1.0/24".parse().unwrap()),
            ..Match::default()
        };
        let mut f = Filter::new(m);
        let c = StageCounters::default();
        let build = |dst: &str, dport| {
            PacketBuilder::ethernet(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]))
                .ipv4("10.0.0.1".parse().unwrap(), dst.parse().unwrap())
                .tcp(40000, dport)
                .build()
        };
        for (dst, dport, want) in [("10.0.1.7", 443, true), ("10.0.1.7", 80, false), ("10.0.2.7", 443, false)] {
            let frame = build(dst, dport);
            let pkt = Packet::from_slice(&frame, Meta::default());
            let (key, bad) = parse(&frame, 0);
            assert!(bad.is_none());
            let mut plan = CopyPlan::default();
            f.process(&StageIn { pkt: &pkt, key: &key, rule: 0, chain: 0, now_ns: 0 }, &mut plan, &c);
            assert_eq!(plan.keep, want, "{dst}:{dport}");
        }
        assert_eq!((c.input.get(), c.output.get(), c.shed.get()), (3, 1, 2));
    }
}
