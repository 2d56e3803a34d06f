//! Steering rules and their compiled, immutable form.
//!
//! A [`Rule`] says which packets ([`Match`]) get which [`Action`]; a
//! [`RuleSet`] is a validated, compiled set of rules that classifies a
//! [`FlowKey`] into a [`Verdict`]. Highest priority wins; two rules of equal
//! priority that can match the same packet are rejected when the set is built.

use crate::flow::{FlowKey, MacAddr};
use crate::packet::PortId;
use ipnet::IpNet;

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
}
