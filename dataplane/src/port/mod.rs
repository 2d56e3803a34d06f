//! Ports: where packets enter and leave the dataplane.
//!
//! Every backend implements [`Port`]: burst receive, burst transmit, and its
//! own counters. Backends live side by side in this module:
//! [`mem`] (in-process rings for tests and the benchmark harness),
//! [`pcap`] (a capture file as input, a capture file as output) and
//! [`af_packet`] (Linux interfaces through PACKET_MMAP rings, busy polled)
//! and, with the `dpdk` feature, [`dpdk`] (every DPDK ethdev).

pub mod af_packet;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod mem;
pub mod pcap;

use crate::packet::PortId;
use crate::BURST;
use arrayvec::ArrayVec;

/// Up to [`BURST`] packets, stored inline: a burst never allocates.
pub type Burst = ArrayVec<crate::packet::Packet, BURST>;

/// Counters a port keeps about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets the port could not receive (ring overflow, no buffer, too big).
    pub rx_dropped: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Packets the port could not transmit (ring full, write error).
    pub tx_dropped: u64,
}

/// A source and sink of packets, polled by exactly one worker.
///
/// Neither call blocks: an empty receive returns 0 at once, and a transmit
/// that finds no room drops what does not fit (and says how much it sent).
pub trait Port: Send {
    /// The port's name from the configuration.
    fn name(&self) -> &str;

    /// The port's id (its index in the dataplane's port table).
    fn id(&self) -> PortId;

    /// Appends up to `burst.remaining_capacity()` received packets to `burst`,
    /// each with `meta.port == self.id()`. Returns how many were appended.
    fn rx_burst(&mut self, burst: &mut Burst) -> usize;

    /// Transmits the packets of `burst`, leaving it empty. Packets that could
    /// not be sent are dropped and counted in the port's `tx_dropped`.
    /// Returns how many were sent.
    fn tx_burst(&mut self, burst: &mut Burst) -> usize;

    /// The port's counters.
    fn stats(&self) -> PortStats;

    /// Pushes out anything buffered (a capture file's writer). Called when
    /// the worker is idle and at shutdown, never per packet.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    /// Whether the link is up: `Some(up)` for ports with a link (Linux
    /// interfaces), `None` for those without (rings, capture files). Called
    /// at housekeeping, never per packet; may cost a system call.
    fn link_state(&self) -> Option<bool> {
        None
    }

    /// True when the port will never receive again (a capture file read to
    /// its end). Live ports always return false.
    fn rx_exhausted(&self) -> bool {
        false
    }
}
