//! Per-worker counters, written by one worker and read by control.
//!
//! Each worker owns one [`WorkerStats`]; only that worker writes it, so a
//! counter update is a relaxed load and store (a plain `mov` on x86), never a
//! locked read-modify-write. Control aggregates across workers. Counter
//! groups are cache-line aligned so two workers never share a line.

use crate::parser::Malformed;
use std::sync::atomic::{AtomicU64, Ordering};

/// A counter with a single writer.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Sets the value. Only the owning worker may call this.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Reads the value (any thread).
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why the worker dropped an original packet. Every drop has a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// A rule with `action: drop` matched.
    RuleDrop,
    /// The headers did not parse and the policy is `malformed: drop`.
    Malformed,
    /// The packet's port has no egress (not in a link).
    NoEgress,
    /// The egress port's transmit ring was full.
    TxFull,
    /// A fail-closed chain could not monitor the packet.
    ChainClosed,
    /// A bridge knows the destination MAC on the ingress port itself: a
    /// bridge never sends a frame back out of the port it came in on.
    Hairpin,
    /// A frame on a bridge port too short to hold an Ethernet header, so
    /// the bridge cannot tell where it goes.
    Runt,
    /// Received outside the hand-over window of `flowsteer guard`: the
    /// kernel bypass delivered it (or the dataplane was stopped past its
    /// lease), so forwarding it too would deliver it twice.
    Standby,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 8;
    /// All reasons, in index order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::RuleDrop,
        DropReason::Malformed,
        DropReason::NoEgress,
        DropReason::TxFull,
        DropReason::ChainClosed,
        DropReason::Hairpin,
        DropReason::Runt,
        DropReason::Standby,
    ];

    /// Counter label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::RuleDrop => "rule_drop",
            DropReason::Malformed => "malformed",
            DropReason::NoEgress => "no_egress",
            DropReason::TxFull => "tx_full",
            DropReason::ChainClosed => "chain_closed",
            DropReason::Hairpin => "hairpin",
            DropReason::Runt => "runt",
            DropReason::Standby => "standby",
        }
    }
}

/// A port's own counters, mirrored by the worker that polls it during
/// housekeeping (every 1024 polls) and when it stops.
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct PortCounters {
    /// Packets received.
    pub rx_packets: Counter,
    /// Bytes received.
    pub rx_bytes: Counter,
    /// Packets the port could not receive.
    pub rx_dropped: Counter,
    /// Packets transmitted.
    pub tx_packets: Counter,
    /// Bytes transmitted.
    pub tx_bytes: Counter,
    /// Packets the port could not transmit.
    pub tx_dropped: Counter,
    /// Link state: 0 not applicable, 1 up, 2 down.
    pub link: Counter,
}

/// [`PortCounters::link`] value of a port whose link is up.
pub const LINK_UP: u64 = 1;
/// [`PortCounters::link`] value of a port whose link is down.
pub const LINK_DOWN: u64 = 2;

impl PortCounters {
    /// Copies a port's own counters.
    pub fn mirror(&self, s: &crate::port::PortStats) {
        self.rx_packets.set(s.rx_packets);
        self.rx_bytes.set(s.rx_bytes);
        self.rx_dropped.set(s.rx_dropped);
        self.tx_packets.set(s.tx_packets);
        self.tx_bytes.set(s.tx_bytes);
        self.tx_dropped.set(s.tx_dropped);
    }

    /// Reads the counters back as a snapshot.
    pub fn snapshot(&self) -> crate::port::PortStats {
        crate::port::PortStats {
            rx_packets: self.rx_packets.get(),
            rx_bytes: self.rx_bytes.get(),
            rx_dropped: self.rx_dropped.get(),
            tx_packets: self.tx_packets.get(),
            tx_bytes: self.tx_bytes.get(),
            tx_dropped: self.tx_dropped.get(),
        }
    }
}

/// Counters of one rule in one worker.
///
/// Not cache-line aligned, unlike the other groups: a worker's rule counters
/// are one array only that worker writes, sized for every counter slot
/// control may hand out, so padding would only multiply its size by four.
#[derive(Default, Debug)]
pub struct RuleCounters {
    /// Packets the rule matched.
    pub packets: Counter,
    /// Bytes the rule matched.
    pub bytes: Counter,
}

/// What the bridges of one worker did (all its bridges together).
///
/// Flood copies are extra packets: with bridges, conservation reads
/// `rx + flood_copies == tx + dropped`. A copy that could not be made is not
/// a drop of an original (the original still leaves by another port), so it
/// is counted here, not under a [`DropReason`].
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct BridgeCounters {
    /// MACs entered in a table (new, or back after ageing out).
    pub learned: Counter,
    /// Learned MACs seen on another port than before (a VM migrated or a loop).
    pub moved: Counter,
    /// Entries found older than the ageing time and reclaimed.
    pub aged: Counter,
    /// Live entries evicted because a new MAC found its table window full.
    pub table_full: Counter,
    /// Frames flooded (unknown unicast, broadcast, multicast).
    pub flooded: Counter,
    /// Copies made for floods (all egress ports but one get a copy).
    pub flood_copies: Counter,
    /// Flood copies not made because the flood pool was empty.
    pub flood_no_buffer: Counter,
    /// Flood copies not made because the frame is larger than a flood buffer.
    pub flood_too_big: Counter,
}

/// Everything one worker counts.
#[derive(Debug)]
#[repr(align(64))]
pub struct WorkerStats {
    /// Packets received on all the worker's ports.
    pub rx: Counter,
    /// Packets transmitted.
    pub tx: Counter,
    /// Packets a rule matched.
    pub matched: Counter,
    /// Packets no rule matched (fast path).
    pub unmatched: Counter,
    /// Packets forwarded unclassified because the bypass switch was on.
    pub bypassed: Counter,
    /// Nanoseconds spent running chains (the monitoring share's numerator).
    pub monitor_ns: Counter,
    /// Matched packets forwarded without their chain: the monitoring budget was spent.
    pub shed_monitor_budget: Counter,
    /// Matched packets forwarded without their chain: their port had a backlog.
    pub shed_overload: Counter,
    /// Packets whose headers did not fully parse, by reason.
    pub malformed: [Counter; Malformed::COUNT],
    /// Originals dropped, by reason.
    pub drops: [Counter; DropReason::COUNT],
    /// Flow cache hits.
    pub cache_hits: Counter,
    /// Flow cache misses (a rule-set lookup).
    pub cache_misses: Counter,
    /// Polls that received at least one packet.
    pub busy_polls: Counter,
    /// Polls that received nothing.
    pub idle_polls: Counter,
    /// The rule-set generation the worker currently runs.
    pub generation: Counter,
    /// The worker's bridges.
    pub bridge: BridgeCounters,
    /// Per port, indexed by port id (all ports, even those of other workers).
    pub ports: Box<[PortCounters]>,
    /// Per rule, indexed by the rule's counter slot ([`crate::classifier::RuleSet::slot`]).
    pub rules: Box<[RuleCounters]>,
}

impl WorkerStats {
    /// Counters for a dataplane with `ports` ports and `rules` rule counter slots.
    pub fn new(ports: usize, rules: usize) -> WorkerStats {
        WorkerStats {
            rx: Counter::default(),
            tx: Counter::default(),
            matched: Counter::default(),
            unmatched: Counter::default(),
            bypassed: Counter::default(),
            monitor_ns: Counter::default(),
            shed_monitor_budget: Counter::default(),
            shed_overload: Counter::default(),
            malformed: Default::default(),
            drops: Default::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            busy_polls: Counter::default(),
            idle_polls: Counter::default(),
            generation: Counter::default(),
            bridge: BridgeCounters::default(),
            ports: (0..ports).map(|_| PortCounters::default()).collect(),
            rules: (0..rules).map(|_| RuleCounters::default()).collect(),
        }
    }

    /// Originals dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }

    /// Malformed packets of any kind.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().map(Counter::get).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_and_sum() {
        let s = WorkerStats::new(2, 3);
        s.drops[DropReason::TxFull as usize].add(2);
        s.drops[DropReason::RuleDrop as usize].add(1);
        s.rules[2].packets.add(5);
        assert_eq!(s.dropped(), 3);
        assert_eq!(s.rules[2].packets.get(), 5);
        assert_eq!(DropReason::ALL.iter().map(|r| r.name()).collect::<Vec<_>>().len(), DropReason::COUNT);
        assert_eq!(std::mem::align_of::<PortCounters>(), 64);
    }
}
