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
//! [`DpdkPort::copied_in`]; without a free mbuf, or when it is larger than
//! an mbuf's room, it is dropped and counted in `tx_dropped`.
//!
//! The thread that first bursts on an instance registers itself with the
//! EAL (`rte_thread_register`, once per thread, undone when it exits), so
//! workers keep flowsteer's thread model and still get a per-lcore mempool
//! cache.

use super::{Burst, Port, PortStats};
use crate::packet::{Meta, Packet, PortId};
use dpdk::{EthDev, Mbuf, Mempool, RxBurst, RxQueue, TxBurst, TxQueue};
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

    /// A heap packet (from another backend, a copy) copied into a fresh
    /// mbuf to be sent; `None`, added to `unsent` (the port's `tx_dropped`),
    /// when the pool is empty or the packet is larger than an mbuf's room.
    #[cold]
    fn copy_in(pool: &Mempool, copied_in: &AtomicU64, unsent: &mut u64, heap: Packet) -> Option<(Mbuf, u32)> {
        // A jumbo frame from another backend does not fit a pool of standard
        // mbufs: dropped and counted rather than sent cut short.
        let data = heap.data();
        let seg = pool.alloc().filter(|seg| data.len() <= seg.room() as usize).and_then(|mut seg| {
            let n = seg.fill(data)?;
            Some((seg.into_mbuf(), n as u32))
        });
        match seg {
            Some(sent) => {
                copied_in.fetch_add(1, Ordering::Relaxed);
                Some(sent)
            }
            None => {
                *unsent += 1;
                None
            }
        }
    }
}

/// Sends what is in `scratch` on `tx`, counted in `stats`. Returns how many were sent.
#[inline]
fn flush(tx: &mut TxQueue, scratch: &mut TxBurst, stats: &mut PortStats) -> usize {
    let n = scratch.len();
    let sent = tx.tx_burst(scratch);
    stats.tx_packets += sent.packets as u64;
    stats.tx_bytes += sent.bytes;
    stats.tx_dropped += (n - sent.packets) as u64;
    sent.packets
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
            let got = q.rx_burst(&mut self.rx_scratch, room);
            if got == 0 {
                continue;
            }
            let (port, mut bytes) = (self.id, 0u64);
            for seg in self.rx_scratch.drain() {
                bytes += u64::from(seg.len());
                // Cannot fail: at most `room` mbufs were received.
                let _ = burst.try_push(Packet::from_mbuf(seg, Meta { port, ts_ns: 0, orig_len: 0 }));
            }
            self.stats.rx_bytes += bytes;
            n += got;
        }
        self.stats.rx_packets += n as u64;
        n
    }

    #[inline]
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        if !self.registered {
            self.register();
        }
        let (pool, copied_in, mut unsent) = (&self.pool, &self.copied_in, 0u64);
        let mut mbufs = burst.drain(..).filter_map(|pkt| match pkt.into_mbuf() {
            Ok(m) => Some(m),
            Err(heap) => Self::copy_in(pool, copied_in, &mut unsent, heap),
        });
        let mut sent = 0;
        loop {
            let ran_out = self.tx_scratch.fill(&mut mbufs);
            sent += flush(&mut self.tx, &mut self.tx_scratch, &mut self.stats);
            if ran_out {
                break;
            }
        }
        drop(mbufs);
        self.stats.tx_dropped += unsent;
        sent
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
