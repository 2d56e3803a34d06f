//! The tool-port sink: copies transmitted out of a dataplane port, e.g. the
//! interface of an IDS VM, as vSwitch port mirroring delivers them.

use super::{CopyRecord, Names, Sink, SinkError};
use dataplane::packet::{Packet, Pool};
use dataplane::port::{Burst, Port};
use dataplane::stats::PortCounters;
use std::io;
use std::sync::Arc;

/// The 802.1Q tag protocol identifier.
const TPID_8021Q: u16 = 0x8100;
/// Destination and source MAC: the tag goes right after them.
const MACS: usize = 12;
/// Bytes an 802.1Q tag adds.
const TAG: usize = 4;

/// Copies sent out of a port to a monitoring tool, optionally tagged.
///
/// Configuration ([`PortSink::new`]): the tool port (any [`Port`] backend),
/// an optional VLAN id pushed on every copy as an 802.1Q tag (TPID 0x8100,
/// priority 0) right after the MAC addresses — the "encapsulation VLAN" of
/// vSwitch mirroring, so the tool can tell mirrored traffic apart — and the
/// pool the transmitted frames' buffers come from.
///
/// Copies are gathered into a burst and transmitted when 32 are waiting and
/// at each flush (the sink thread flushes when its queue runs empty), so a
/// busy tool port costs one `tx_burst` per 32 copies. Frames are otherwise
/// byte-identical to the copies; their metadata (timestamp, original length,
/// plus 4 when tagged) goes with them, so a capture-file tool port keeps it.
///
/// Counters: the tool port's own (`tx_packets`, `tx_dropped`, ...), and the
/// sink queue's written / errors / lost while down.
///
/// Failures, each a [`SinkError::Io`] that makes the sink thread mark the
/// sink down and retry with backoff: a transmit that sends fewer frames than
/// given (TX ring full: the tool is not keeping up, or the port is down; the
/// error says how many were dropped); an empty pool (that copy is dropped); a
/// copy too short to carry MAC addresses, or too big for a pool buffer once
/// tagged; a port flush error (a capture-file port). Nothing is kept for a
/// retry: each copy is tried once, and the next copy tries the port again.
pub struct PortSink {
    name: String,
    port: Box<dyn Port>,
    /// Where the tool port's own counters are published (no worker polls it).
    counters: Option<Arc<PortCounters>>,
    /// Copies dropped since the last [`Sink::take_lost`] (ring full, too big, no buffer).
    lost: u64,
    /// The 802.1Q tag pushed on every copy, when configured.
    tag: Option<[u8; TAG]>,
    pool: Arc<Pool>,
    /// Copies waiting to be transmitted.
    burst: Burst,
}

impl PortSink {
    /// A sink transmitting copies out of `port`, tagged with VLAN `vlan`
    /// when given. Buffers for the transmitted frames come from `pool`, so
    /// size it for a burst per tool port plus what the port's TX ring holds.
    ///
    /// # Panics
    /// When `vlan` is above 4095 (configuration validation rejects that first).
    pub fn new(name: &str, port: Box<dyn Port>, vlan: Option<u16>, pool: Arc<Pool>) -> PortSink {
        let tag = vlan.map(|vid| {
            assert!(vid <= 0x0fff, "sink {name}: VLAN id {vid} is not in 0..=4095");
            let [t0, t1] = TPID_8021Q.to_be_bytes();
            let [v0, v1] = vid.to_be_bytes();
            [t0, t1, v0, v1]
        });
        PortSink { counters: None, lost: 0, name: name.to_string(), port, tag, pool, burst: Burst::new() }
    }

    /// Publishes the tool port's own counters (rx/tx/drops) into `counters`
    /// at every flush, since no worker polls the port to do it.
    pub fn with_counters(mut self, counters: Arc<PortCounters>) -> PortSink {
        self.counters = Some(counters);
        self
    }

    fn error(&self, message: String) -> SinkError {
        SinkError::Io { sink: self.name.clone(), source: io::Error::other(message) }
    }

    /// The copy as it leaves the tool port, in a pool buffer.
    fn frame(&self, rec: &CopyRecord) -> Result<Packet, SinkError> {
        let data = rec.pkt.data();
        let extra = if self.tag.is_some() { TAG } else { 0 };
        if data.len() < MACS {
            return Err(self.error(format!("copy of {} bytes has no Ethernet header; dropped", data.len())));
        }
        if data.len() + extra > self.pool.buf_size() {
            return Err(self.error(format!(
                "copy of {} bytes does not fit a {}-byte buffer{}; dropped",
                data.len(),
                self.pool.buf_size(),
                if extra > 0 { " once tagged" } else { "" }
            )));
        }
        let Some(mut pkt) = self.pool.alloc() else {
            return Err(self.error(format!("no buffer for a copy to tool port {}; dropped", self.port.name())));
        };
        pkt.meta = rec.pkt.meta;
        match self.tag {
            None => {
                pkt.fill_from(data);
            }
            Some(tag) => {
                // The whole copy plus room for the tag, then the payload
                // moves up by one tag and the tag goes after the MACs.
                let len = pkt.fill_from2(data, &tag);
                let buf = pkt.data_mut();
                buf.copy_within(MACS..len - TAG, MACS + TAG);
                buf[MACS..MACS + TAG].copy_from_slice(&tag);
                if pkt.meta.orig_len != 0 {
                    pkt.meta.orig_len = pkt.meta.orig_len.saturating_add(TAG as u32);
                }
            }
        }
        Ok(pkt)
    }

    /// Transmits the waiting copies; an error says how many were dropped.
    fn transmit(&mut self) -> Result<(), SinkError> {
        let given = self.burst.len();
        if given == 0 {
            return Ok(());
        }
        let sent = self.port.tx_burst(&mut self.burst);
        // A port leaves the burst empty, but never let a stale copy go twice.
        self.burst.clear();
        if sent < given {
            if self.port.link_state() == Some(false) {
                // The tool's link is down: the sink is down (fail-closed chains stop) until it returns.
                self.lost += (given - sent) as u64;
                return Err(self.error(format!(
                    "tool port {}: link down, {} copies dropped",
                    self.port.name(),
                    given - sent
                )));
            }
            // A momentarily full TX ring: those copies are lost and counted, the sink stays up.
            self.lost += (given - sent) as u64;
        }
        Ok(())
    }
}

impl Sink for PortSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, rec: &CopyRecord, _names: &Names) -> Result<(), SinkError> {
        // An untagged copy in an mbuf goes out as another reference to it:
        // on a DPDK tool port without any copy. (The queue held this copy
        // within the copy budget; the port's ring it now goes to is sized apart.)
        let shared = if self.tag.is_none() { rec.pkt.share(None) } else { None };
        let pkt = match shared.map_or_else(|| self.frame(rec), Ok) {
            Ok(pkt) => pkt,
            Err(e) => {
                // One copy that cannot go (too big once tagged, no buffer): lost, the port is fine.
                log::debug!("{e}");
                self.lost += 1;
                return Ok(());
            }
        };
        self.burst.push(pkt);
        if self.burst.is_full() {
            self.transmit()?;
        }
        Ok(())
    }

    fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        let sent = self.transmit();
        if let Some(c) = &self.counters {
            c.mirror(&self.port.stats());
        }
        sent?;
        self.port.flush().map_err(|source| SinkError::Io { sink: self.name.clone(), source })
    }
}

impl Drop for PortSink {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            log::error!("{e}: copies still waiting at shutdown are lost");
        }
    }
}
