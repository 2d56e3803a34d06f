//! In-process ring ports, for tests and the benchmark harness.
//!
//! A [`MemPort`] is the dataplane's side of two bounded lock-free rings; the
//! [`MemPeer`] is the other side (a test, a traffic generator). Rings can also
//! be wired port to port with [`MemPort::with_rings`], so a harness can run a
//! worker over packets that circulate without a second thread.

use super::{Burst, Port, PortStats};
use crate::packet::{Packet, PortId};
use crossbeam_queue::ArrayQueue;
use std::sync::Arc;

/// A bounded ring of packets shared between two sides.
pub type Ring = Arc<ArrayQueue<Packet>>;

/// Makes a ring holding up to `capacity` packets.
pub fn ring(capacity: usize) -> Ring {
    Arc::new(ArrayQueue::new(capacity.max(1)))
}

/// The dataplane's side of a pair of rings.
pub struct MemPort {
    name: String,
    id: PortId,
    rx: Ring,
    tx: Ring,
    stats: PortStats,
}

/// The outside of a [`MemPort`]: what a test sends in and receives out.
#[derive(Clone)]
pub struct MemPeer {
    /// Packets pushed here are received by the port.
    pub to_port: Ring,
    /// Packets the port transmits arrive here.
    pub from_port: Ring,
}

impl MemPeer {
    /// Sends a packet into the port; gives it back when the ring is full.
    pub fn send(&self, pkt: Packet) -> Result<(), Packet> {
        self.to_port.push(pkt)
    }

    /// Takes the next packet the port transmitted.
    pub fn recv(&self) -> Option<Packet> {
        self.from_port.pop()
    }
}

impl MemPort {
    /// A port with fresh rings of `capacity` packets each, and its peer.
    pub fn new(name: &str, id: PortId, capacity: usize) -> (MemPort, MemPeer) {
        let (rx, tx) = (ring(capacity), ring(capacity));
        let peer = MemPeer { to_port: Arc::clone(&rx), from_port: Arc::clone(&tx) };
        (MemPort::with_rings(name, id, rx, tx), peer)
    }

    /// A port over existing rings: it receives from `rx` and transmits to `tx`.
    pub fn with_rings(name: &str, id: PortId, rx: Ring, tx: Ring) -> MemPort {
        MemPort { name: name.to_string(), id, rx, tx, stats: PortStats::default() }
    }
}

impl Port for MemPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn id(&self) -> PortId {
        self.id
    }

    #[inline]
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let mut n = 0;
        while !burst.is_full() {
            let Some(mut pkt) = self.rx.pop() else { break };
            pkt.meta.port = self.id;
            self.stats.rx_bytes += pkt.len() as u64;
            burst.push(pkt);
            n += 1;
        }
        self.stats.rx_packets += n as u64;
        n
    }

    #[inline]
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let mut sent = 0;
        for pkt in burst.drain(..) {
            let len = pkt.len() as u64;
            match self.tx.push(pkt) {
                Ok(()) => {
                    sent += 1;
                    self.stats.tx_bytes += len;
                }
                // Ring full: the packet is dropped here, as a NIC drops on a full TX ring.
                Err(_dropped) => self.stats.tx_dropped += 1,
            }
        }
        self.stats.tx_packets += sent as u64;
        sent
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Meta;

    #[test]
    fn packets_go_in_and_out() {
        let (mut port, peer) = MemPort::new("a", 3, 4);
        for i in 0..3u8 {
            peer.send(Packet::from_slice(&[i; 60], Meta::default())).unwrap();
        }
        let mut burst = Burst::new();
        assert_eq!(port.rx_burst(&mut burst), 3);
        assert!(burst.iter().all(|p| p.meta.port == 3));
        assert_eq!(port.tx_burst(&mut burst), 3);
        assert!(burst.is_empty());
        assert_eq!(peer.recv().unwrap().data()[0], 0);
        let s = port.stats();
        assert_eq!((s.rx_packets, s.tx_packets, s.rx_bytes), (3, 3, 180));
    }

    #[test]
    fn full_tx_ring_drops_and_counts() {
        let (mut port, _peer) = MemPort::new("a", 0, 2);
        let mut burst = Burst::new();
        for _ in 0..5 {
            burst.push(Packet::from_slice(&[0; 60], Meta::default()));
        }
        assert_eq!(port.tx_burst(&mut burst), 2);
        assert_eq!(port.stats().tx_dropped, 3);
    }
}
