//! DPDK ports: any ethdev (a PCI NIC or a vdev such as net_memif,
//! net_vhost, net_virtio_user, net_af_xdp, net_af_packet, net_tap,
//! net_ring, net_null, net_pcap), through the `dpdk` crate.
//!
//! One [`DpdkPort`] per (device, worker): it polls the receive queues the
//! configuration gives that worker and transmits on a transmit queue of its
//! own, so no queue is touched by two threads and every instance of a device
//! carries the same [`PortId`] (as af_packet fanout instances do). Received
//! packets are the mbufs themselves ([`Packet::from_mbuf`]): nothing is
//! copied on the way from receive to transmit. A packet that is not
//! mbuf-backed (a flood copy, a copy from a capture-file or af_packet port)
//! is copied into a fresh mbuf on transmit and counted in
//! [`DpdkPort::copied_in`]; without a free mbuf it is dropped and counted.
//!
//! The thread that first bursts on an instance registers itself with the
//! EAL (`rte_thread_register`, once per thread, undone when it exits), so
//! workers keep flowsteer's thread model and still get a per-lcore mempool
//! cache.

use super::{Burst, Port, PortStats};
use crate::packet::{Meta, Packet, PortId};
use dpdk::{EthDev, Mempool, RxBurst, RxQueue, TxBurst, TxQueue};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use dpdk;

/// One worker's share of a DPDK device.
pub struct DpdkPort {
    name: String,
    id: PortId,
    rx: Vec<RxQueue>,
    tx: TxQueue,
    pool: Arc<Mempool>,
    rx_scratch: RxBurst,
    tx_scratch: TxBurst,
    stats: PortStats,
    /// Heap packets copied into mbufs to be transmitted.
    copied_in: Arc<AtomicU64>,
    /// This instance reports the device's own drop counters (exactly one instance per device does).
    device_counters: bool,
    /// The polling thread is registered with the EAL (done at the first burst, in that thread).
    registered: bool,
}

impl DpdkPort {
    /// An instance of device `dev` named `name` (port `id`), polling
    /// `rx_queues` and transmitting on `tx_queue`; heap packets are copied
    /// into mbufs from `pool`. With `device_counters`, the device's own drop
    /// counters (missed, no buffer, errors) are added to this instance's.
    pub fn new(
        name: &str,
        id: PortId,
        dev: &Arc<EthDev>,
        rx_queues: &[u16],
        tx_queue: u16,
        pool: Arc<Mempool>,
        device_counters: bool,
    ) -> Result<DpdkPort, dpdk::Error> {
        let rx = rx_queues.iter().map(|&q| dev.rx_queue(q)).collect::<Result<Vec<_>, _>>()?;
        let tx = dev.tx_queue(tx_queue)?;
        Ok(DpdkPort {
            name: name.to_string(),
            id,
            rx,
            tx,
            pool,
            rx_scratch: RxBurst::default(),
            tx_scratch: TxBurst::default(),
            stats: PortStats::default(),
            copied_in: Arc::new(AtomicU64::new(0)),
            device_counters,
            registered: false,
        })
    }

    /// Makes the calling thread an EAL thread (an lcore id, so a mempool
    /// cache) the first time this instance is used: that is the thread
    /// that polls it from now on.
    #[cold]
    fn register(&mut self) {
        self.tx.device().eal().ensure_registered();
        self.registered = true;
    }

    /// Heap packets this instance copied into mbufs to transmit them.
    pub fn copied_in(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.copied_in)
    }

    /// Sends what is in the transmit scratch burst.
    #[inline]
    fn flush_tx(&mut self) -> usize {
        let n = self.tx_scratch.len();
        let sent = self.tx.tx_burst(&mut self.tx_scratch);
        self.stats.tx_packets += sent as u64;
        self.stats.tx_dropped += (n - sent) as u64;
        sent
    }
}

impl Drop for DpdkPort {
    fn drop(&mut self) {
        let n = self.copied_in.load(Ordering::Relaxed);
        if n > 0 {
            log::info!("port {}: {n} packets not in mbufs (from other backends, VLAN-tagged copies) were copied into mbufs to be sent", self.name);
        }
    }
}

impl Port for DpdkPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn id(&self) -> PortId {
        self.id
    }

    #[inline]
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        if !self.registered {
            self.register();
        }
        let mut n = 0;
        for q in &mut self.rx {
            let room = burst.remaining_capacity();
            if room == 0 {
                break;
            }
            if q.rx_burst(&mut self.rx_scratch, room) == 0 {
                continue;
            }
            for seg in self.rx_scratch.by_ref() {
                self.stats.rx_bytes += seg.len() as u64;
                // Cannot fail: at most `room` mbufs were received.
                let _ = burst.try_push(Packet::from_mbuf(seg, Meta { port: self.id, ts_ns: 0, orig_len: 0 }));
                n += 1;
            }
        }
        self.stats.rx_packets += n as u64;
        n
    }

    #[inline]
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        if !self.registered {
            self.register();
        }
        let mut sent = 0;
        for pkt in burst.drain(..) {
            let len = pkt.len() as u64;
            let (mbuf, n) = match pkt.into_mbuf() {
                Ok(m) => m,
                Err(heap) => match self.pool.alloc() {
                    Some(mut seg) => {
                        let n = seg.fill(heap.data()).unwrap_or(0) as u32;
                        self.copied_in.fetch_add(1, Ordering::Relaxed);
                        (seg.into_mbuf(), n)
                    }
                    None => {
                        self.stats.tx_dropped += 1;
                        continue;
                    }
                },
            };
            self.stats.tx_bytes += len;
            if let Err(mbuf) = self.tx_scratch.push(mbuf, n) {
                sent += self.flush_tx();
                // Cannot fail: the scratch burst was just emptied.
                let _ = self.tx_scratch.push(mbuf, n);
            }
        }
        sent + self.flush_tx()
    }

    fn stats(&self) -> PortStats {
        let mut s = self.stats;
        s.rx_dropped += self.rx.iter().map(RxQueue::dropped).sum::<u64>();
        if self.device_counters {
            if let Ok(d) = self.tx.device().stats() {
                s.rx_dropped += d.imissed + d.rx_nombuf + d.ierrors;
                s.tx_dropped += d.oerrors;
            }
        }
        s
    }

    fn link_state(&self) -> Option<bool> {
        self.tx.device().link_up()
    }
}
