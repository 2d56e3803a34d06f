//! A MAC-learning bridge over several ports of one worker.
//!
//! Learning: every forwarded frame's unicast source MAC is recorded against
//! its ingress port with the burst's time; a MAC seen on another port moves.
//! Forwarding: a known unicast destination goes to its port only (never back
//! out of the ingress port: that is a `hairpin` drop); unknown unicast,
//! broadcast and multicast are flooded to every other port of the bridge.
//! Ageing: entries not refreshed within `ageing` are ignored and reclaimed
//! when next touched, so there is no sweep to schedule.
//!
//! The table is a flat array allocated when the worker is built and never
//! grown. A MAC may live in a small window of slots after its hash; when a
//! new MAC finds its window full of live entries, the oldest is evicted
//! (`table_full`), so a MAC flood from one VM degrades to flooding, never to
//! allocation. All VLANs share one learning domain.
//!
//! Frames dropped by a rule or a fail-closed chain never reach forwarding, so
//! they teach the bridge nothing.

use crate::packet::{Pool, PortId};
use crate::stats::{BridgeCounters, DropReason};
use std::sync::Arc;
use std::time::Duration;

/// Entries are reclaimed after this long without traffic from their MAC, by default.
pub const DEFAULT_AGEING: Duration = Duration::from_secs(300);
/// MAC table entries per bridge, by default.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// One bridge's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The bridge's ports (at least two, all owned by one worker).
    pub ports: Vec<PortId>,
    /// How long a learned MAC stays valid without being seen again.
    pub ageing: Duration,
    /// MAC table entries, allocated when the worker starts.
    pub table_size: usize,
}

impl BridgeConfig {
    /// A bridge over `ports` with the default ageing and table size.
    pub fn new(ports: Vec<PortId>) -> BridgeConfig {
        BridgeConfig { ports, ageing: DEFAULT_AGEING, table_size: DEFAULT_TABLE_SIZE }
    }
}

/// Slots a MAC may occupy after its hash slot. Eight 24-byte entries span
/// three or four cache lines: a bounded scan, and room enough that a
/// table well below capacity rarely evicts.
const WINDOW: usize = 8;

/// Shortest frame the bridge can read both addresses and the type from.
const ETH_HEADER: usize = 14;

#[derive(Clone, Copy, Default)]
struct Entry {
    /// The MAC in the low 48 bits; 0 marks a free slot (never a valid source).
    mac: u64,
    /// Last time the MAC was seen, in the worker's clock (ns).
    seen: u64,
    /// Local index of the port it was seen on.
    port: usize,
}

/// The fixed-size MAC table.
struct MacTable {
    slots: Box<[Entry]>,
    window: usize,
    ageing_ns: u64,
}

impl MacTable {
    fn new(size: usize, ageing: Duration) -> MacTable {
        let size = size.max(1);
        MacTable {
            slots: vec![Entry::default(); size].into_boxed_slice(),
            window: WINDOW.min(size),
            ageing_ns: u64::try_from(ageing.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// First slot of `mac`'s window. Multiply-shift maps the hash onto any
    /// table size, so `table_size` is exactly the number of entries.
    #[inline]
    fn home(&self, mac: u64) -> usize {
        let h = mac.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((u128::from(h) * self.slots.len() as u128) >> 64) as usize
    }

    #[inline]
    fn live(&self, e: &Entry, now: u64) -> bool {
        now.saturating_sub(e.seen) < self.ageing_ns
    }

    /// Records that `mac` was seen on local port `port` at `now`.
    #[inline]
    fn learn(&mut self, mac: u64, port: usize, now: u64, c: &BridgeCounters) {
        let (len, home) = (self.slots.len(), self.home(mac));
        let mut free = None;
        let mut oldest = home;
        for k in 0..self.window {
            let i = (home + k) % len;
            let e = self.slots[i];
            if e.mac == mac {
                if self.live(&e, now) {
                    if e.port != port {
                        c.moved.add(1);
                    }
                } else {
                    c.aged.add(1);
                    c.learned.add(1);
                }
                self.slots[i] = Entry { mac, seen: now, port };
                return;
            }
            if e.mac == 0 {
                free.get_or_insert(i);
            } else if !self.live(&e, now) {
                c.aged.add(1);
                self.slots[i].mac = 0;
                free.get_or_insert(i);
            } else if e.seen < self.slots[oldest].seen || self.slots[oldest].mac == 0 {
                oldest = i;
            }
        }
        let i = free.unwrap_or_else(|| {
            c.table_full.add(1);
            oldest
        });
        c.learned.add(1);
        self.slots[i] = Entry { mac, seen: now, port };
    }

    /// The local port `mac` was last seen on, unless it has aged out.
    #[inline]
    fn lookup(&mut self, mac: u64, now: u64, c: &BridgeCounters) -> Option<usize> {
        let (len, home) = (self.slots.len(), self.home(mac));
        for k in 0..self.window {
            let i = (home + k) % len;
            let e = self.slots[i];
            if e.mac == mac {
                if self.live(&e, now) {
                    return Some(e.port);
                }
                c.aged.add(1);
                self.slots[i].mac = 0;
                return None;
            }
        }
        None
    }
}

/// Where the bridge sends one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// To this local port only.
    Unicast(usize),
    /// To every bridge port but the ingress one.
    Flood,
    /// Nowhere.
    Drop(DropReason),
}

/// A bridge's state inside the worker that owns all its ports.
pub(crate) struct Bridge {
    /// Local indices of the bridge's ports, in configuration order.
    ports: Box<[usize]>,
    table: MacTable,
    /// Where flood copies come from (one pool per worker, shared by its bridges).
    pool: Arc<Pool>,
}

#[inline]
fn mac48(b: &[u8]) -> u64 {
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

impl Bridge {
    /// A bridge over the worker's local ports `ports`.
    pub(crate) fn new(ports: Box<[usize]>, cfg: &BridgeConfig, pool: Arc<Pool>) -> Bridge {
        Bridge { ports, table: MacTable::new(cfg.table_size, cfg.ageing), pool }
    }

    /// Local indices of the bridge's ports.
    #[inline]
    pub(crate) fn ports(&self) -> &[usize] {
        &self.ports
    }

    /// The pool flood copies come from.
    #[inline]
    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Learns from `frame`, received on local port `ingress` at `now` (ns,
    /// the worker's per-burst clock), and decides where it goes.
    #[inline]
    pub(crate) fn decide(&mut self, frame: &[u8], ingress: usize, now: u64, c: &BridgeCounters) -> Decision {
        if frame.len() < ETH_HEADER {
            return Decision::Drop(DropReason::Runt);
        }
        let src = mac48(&frame[6..12]);
        // Group (multicast/broadcast) sources are invalid; zero is our free-slot marker.
        if frame[6] & 1 == 0 && src != 0 {
            self.table.learn(src, ingress, now, c);
        }
        if frame[0] & 1 != 0 {
            return Decision::Flood;
        }
        match self.table.lookup(mac48(&frame[0..6]), now, c) {
            Some(p) if p == ingress => Decision::Drop(DropReason::Hairpin),
            Some(p) => Decision::Unicast(p),
            None => Decision::Flood,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: u8, src: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, dst]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
        f
    }

    fn bridge(table: usize, ageing: Duration) -> Bridge {
        let cfg = BridgeConfig { ports: vec![0, 1, 2], ageing, table_size: table };
        Bridge::new(vec![0, 1, 2].into(), &cfg, Pool::new(1, 64))
    }

    #[test]
    fn learns_forwards_and_refuses_hairpins() {
        let c = BridgeCounters::default();
        let mut b = bridge(16, DEFAULT_AGEING);
        assert_eq!(b.decide(&frame(2, 1), 0, 1, &c), Decision::Flood);
        assert_eq!(b.decide(&frame(1, 2), 1, 2, &c), Decision::Unicast(0));
        assert_eq!(b.decide(&frame(2, 1), 0, 3, &c), Decision::Unicast(1));
        assert_eq!(b.decide(&frame(2, 3), 1, 4, &c), Decision::Drop(DropReason::Hairpin));
        assert_eq!(b.decide(&frame(2, 1)[..13], 0, 5, &c), Decision::Drop(DropReason::Runt));
        assert_eq!(c.learned.get(), 3);
    }

    #[test]
    fn entries_age_and_move() {
        let c = BridgeCounters::default();
        let mut b = bridge(16, Duration::from_nanos(100));
        b.decide(&frame(9, 1), 0, 0, &c);
        assert_eq!(b.decide(&frame(1, 2), 1, 50, &c), Decision::Unicast(0));
        b.decide(&frame(9, 1), 2, 60, &c);
        assert_eq!(c.moved.get(), 1);
        assert_eq!(b.decide(&frame(1, 2), 1, 70, &c), Decision::Unicast(2));
        assert_eq!(b.decide(&frame(1, 2), 1, 200, &c), Decision::Flood);
        assert_eq!(c.aged.get(), 2, "MAC 2 (the source) and MAC 1 (the destination) both aged");
    }

    #[test]
    fn a_full_window_evicts_its_oldest_entry() {
        let c = BridgeCounters::default();
        let mut b = bridge(2, DEFAULT_AGEING);
        for (t, src) in [1u8, 2, 3].into_iter().enumerate() {
            b.decide(&frame(0xff, src), 0, t as u64, &c);
        }
        assert_eq!(c.table_full.get(), 1);
        assert_eq!(c.learned.get(), 3);
        assert_eq!(b.decide(&frame(1, 9), 1, 10, &c), Decision::Flood, "the oldest, MAC 1, was evicted");
        assert_eq!(b.decide(&frame(3, 9), 1, 11, &c), Decision::Unicast(0));
    }
}
