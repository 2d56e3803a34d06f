//! Linux interfaces as ports: a packet socket with a PACKET_MMAP ring, busy
//! polled.
//!
//! An [`AfPacketPort`] owns one `AF_PACKET` socket bound to one interface (a
//! VM's tap, a container's veth). It is how the dataplane sits between VMs on
//! a host without DPDK.
//!
//! **Receive** reads a TPACKET_V3 ring mapped into the process. A poll looks
//! at the status word of the current block: while the kernel still owns it,
//! `rx_burst` returns 0 at once, without a syscall and without `poll(2)`.
//! When the block is ours, its frames are copied one by one into buffers from
//! the port's [`Pool`] (with the ring's timestamp in `meta.ts_ns`), and the
//! block goes back to the kernel as soon as its last frame is taken.
//!
//! **Transmit** is one `sendmmsg(2)` per burst, non-blocking. A TPACKET TX
//! ring would need the same one syscall per burst (the `send()` kick) and a
//! copy into the ring instead of the kernel's copy from our buffers, plus a
//! second socket (a TPACKET_V3 receive socket cannot carry a TPACKET_V2
//! transmit ring); `sendmmsg` is the simpler of two equal costs.
//!
//! Configuration ([`AfPacketConfig`]):
//! * `interface` — the Linux interface name;
//! * `fanout_group` — join `PACKET_FANOUT` group N with `PACKET_FANOUT_HASH`
//!   and `PACKET_FANOUT_FLAG_DEFRAG`, so several workers, each with its own
//!   port on the same interface, share its traffic. The kernel's fanout hash
//!   is the symmetric flow hash (`__skb_get_hash_symmetric`), so both
//!   directions of a conversation go to the same member — provided every
//!   interface the flow crosses has a group of the same size;
//! * `promiscuous` (default on) — `PACKET_MR_PROMISC` membership, dropped by
//!   the kernel when the socket closes;
//! * `qdisc_bypass` (default on) — `PACKET_QDISC_BYPASS`: transmit straight
//!   to the driver, as a NIC queue would, without the qdisc layer;
//! * `block_size`, `block_count`, `frame_size` — receive ring geometry
//!   (defaults 128 KiB x 128, 2 KiB). TPACKET_V3 packs frames by their size,
//!   so `frame_size` is not a slot but this port's receive MTU: a frame
//!   longer than `frame_size - 96` (the ring's header room), longer than a
//!   pool buffer, or cut short by the kernel (`tp_snaplen < tp_len`) is
//!   dropped.
//!
//! Counters: the [`PortStats`] fields, where `rx_dropped` adds up oversize
//! frames ([`AfPacketPort::rx_oversize`]) and the kernel's ring-full drops
//! (`PACKET_STATISTICS`, read when stats are read), and `tx_dropped` counts
//! every packet `sendmmsg` did not take (socket buffer full, link down,
//! interface gone, frame over the MTU).
//!
//! Behaviour at the edges:
//! * frames leaving through the interface (sent by this port, another
//!   worker's port or the host) are not received
//!   (`PACKET_IGNORE_OUTGOING`, and `sll_pkttype` is checked as well), so a
//!   bump in the wire cannot loop: a port sees only what the VM sends;
//! * latency: the kernel hands a block over when it is full or after 1 ms
//!   (`tp_retire_blk_tov`, whose unit is the millisecond), so at low packet
//!   rates receive adds up to 1 ms; at high rates blocks fill sooner. At
//!   low rates a block holds as little as one frame, so the ring buffers
//!   `block_count` ms of a stalled poller's traffic: 128 blocks cover the
//!   worker watchdog's default 100 ms detection time (16 MiB either way);
//! * an empty pool stops the burst and leaves the frame in the ring:
//!   back-pressure, then the kernel's ring-full drops, never a lost buffer;
//! * link down: receive sees nothing and transmit errors are counted, the
//!   socket stays bound, and traffic flows again when the link is back;
//!   [`AfPacketPort::link_up`] reports the state;
//! * a deleted interface: every transmit fails and is counted, a warning is
//!   logged once per failure streak, nothing panics.
//!
//! Not done: zero-copy receive (frames are copied into pool buffers), a
//! mapped transmit ring, `PACKET_VNET_HDR` (so GSO/TSO super-frames from a
//! veth whose peer offloads segmentation are oversize, and checksums left
//! for offload are forwarded unfinished: turn off `tso`, `gso` and `tx`
//! checksum offload on the VM side of veths), and re-binding when a deleted
//! interface is created again under the same name (reopen the port).

mod sys;

use super::{Burst, Port, PortStats};
use crate::packet::{Pool, PortId};
use std::cell::Cell;
use std::io;
use std::sync::Arc;

/// Room the kernel keeps in front of a frame's data in a TPACKET_V3 ring
/// (aligned `tpacket3_hdr` plus `sockaddr_ll`, then the MAC offset), rounded up.
const FRAME_HEADROOM: usize = 96;
/// How long the kernel keeps a block open before handing it over partly
/// filled; bounds the latency a quiet link adds.
const BLOCK_RETIRE_MS: u32 = 1;
const NS_PER_SEC: u64 = 1_000_000_000;

/// Settings of one AF_PACKET port. See the module documentation for what
/// each knob changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// The Linux interface (at most 15 bytes).
    pub interface: String,
    /// `PACKET_FANOUT` group id to join, to share the interface among workers.
    pub fanout_group: Option<u16>,
    /// Receive frames addressed to other MACs (a VM port must).
    pub promiscuous: bool,
    /// Transmit without the qdisc layer.
    pub qdisc_bypass: bool,
    /// Bytes per ring block: a multiple of the page size.
    pub block_size: usize,
    /// Blocks in the ring.
    pub block_count: usize,
    /// Largest frame plus ring header room: a multiple of 16, at most `block_size`.
    pub frame_size: usize,
}

impl AfPacketConfig {
    /// Defaults for `interface`: promiscuous, qdisc bypass, no fanout, a
    /// 16 MiB ring of 1 MiB blocks and 2 KiB frames (a 1500-byte MTU with VLAN tags).
    pub fn new(interface: &str) -> AfPacketConfig {
        AfPacketConfig {
            interface: interface.to_string(),
            fanout_group: None,
            promiscuous: true,
            qdisc_bypass: true,
            block_size: 128 << 10,
            block_count: 128,
            frame_size: 2048,
        }
    }
}

/// Why an AF_PACKET port could not be opened. Every variant names the
/// interface; system-call failures also name the step.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    /// No interface has that name.
    #[error("{interface}: no such interface")]
    NoSuchInterface {
        /// The interface.
        interface: String,
    },
    /// Packet sockets need CAP_NET_RAW.
    #[error("{interface}: {step}: not permitted (AF_PACKET needs root or CAP_NET_RAW)")]
    NotPermitted {
        /// The interface.
        interface: String,
        /// The step that was refused.
        step: &'static str,
    },
    /// The ring geometry is one the kernel would refuse.
    #[error("{interface}: bad ring geometry: {reason}")]
    Geometry {
        /// The interface.
        interface: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A system call failed.
    #[error("{interface}: {step}: {source}")]
    Sys {
        /// The interface.
        interface: String,
        /// The failing step (`socket`, `setsockopt PACKET_RX_RING`, `mmap`, `bind`, ...).
        step: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A Linux interface as a poll-mode port. See the module documentation.
pub struct AfPacketPort {
    name: String,
    id: PortId,
    interface: String,
    // Field order matters for Drop: the ring is unmapped before the socket closes.
    ring: sys::RxRing,
    sock: sys::Socket,
    pool: Arc<Pool>,
    block_count: usize,
    /// Longest frame accepted.
    max_len: usize,
    /// Block being read, frames left in it and the offset of the next one;
    /// `left == 0` means the block is not ours yet.
    blk: usize,
    left: u32,
    off: u32,
    stats: PortStats,
    oversize: u64,
    /// Kernel ring-full drops, accumulated as `PACKET_STATISTICS` is read
    /// (reading resets the kernel's count, so `stats(&self)` needs a cell).
    ring_drops: Cell<u64>,
    /// True while transmits fail, so a failure streak logs once.
    tx_failing: bool,
}

impl AfPacketPort {
    /// Opens a port on `cfg.interface`: socket, ring, bind, promiscuous
    /// mode and fanout, in the order the kernel needs. Received packets are
    /// copied into buffers from `pool`, whose buffer size should hold the
    /// largest frame.
    pub fn open(name: &str, id: PortId, cfg: &AfPacketConfig, pool: Arc<Pool>) -> Result<AfPacketPort, AfPacketError> {
        let interface = cfg.interface.clone();
        let geometry = |reason| Err(AfPacketError::Geometry { interface: interface.clone(), reason });
        if cfg.block_size == 0 || !cfg.block_size.is_multiple_of(4096) {
            return geometry("block_size must be a non-zero multiple of 4096");
        }
        if cfg.frame_size <= FRAME_HEADROOM || !cfg.frame_size.is_multiple_of(16) || cfg.frame_size > cfg.block_size {
            return geometry("frame_size must be a multiple of 16, above 96 and at most block_size");
        }
        if cfg.block_count == 0 || cfg.block_size.checked_mul(cfg.block_count).is_none_or(|n| n > u32::MAX as usize) {
            return geometry("block_count must be at least 1 and the ring under 4 GiB");
        }
        let err = |step: &'static str| {
            let interface = interface.clone();
            move |source: io::Error| match source.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => AfPacketError::NotPermitted { interface, step },
                Some(libc::ENODEV | libc::ENXIO) => AfPacketError::NoSuchInterface { interface },
                _ => AfPacketError::Sys { interface, step, source },
            }
        };
        let ifindex = sys::if_nametoindex(&cfg.interface)
            .ok_or_else(|| AfPacketError::NoSuchInterface { interface: interface.clone() })?;

        let sock = sys::Socket::new().map_err(err("socket"))?;
        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        let one: libc::c_int = 1;
        sock.set_packet_opt(libc::PACKET_VERSION, &version).map_err(err("setsockopt PACKET_VERSION"))?;
        // Since Linux 4.20; older kernels fall back to the sll_pkttype check in rx_burst.
        match sock.set_packet_opt(libc::PACKET_IGNORE_OUTGOING, &one) {
            Err(e) if e.raw_os_error() != Some(libc::ENOPROTOOPT) => {
                return Err(err("setsockopt PACKET_IGNORE_OUTGOING")(e));
            }
            _ => {}
        }
        if cfg.qdisc_bypass {
            sock.set_packet_opt(libc::PACKET_QDISC_BYPASS, &one).map_err(err("setsockopt PACKET_QDISC_BYPASS"))?;
        }
        let ring = sys::RxRing::new(&sock, cfg.block_size, cfg.block_count, cfg.frame_size, BLOCK_RETIRE_MS)
            .map_err(err("setsockopt PACKET_RX_RING / mmap"))?;
        sock.bind(ifindex).map_err(err("bind"))?;
        if cfg.promiscuous {
            let mreq = libc::packet_mreq {
                mr_ifindex: ifindex as libc::c_int,
                mr_type: libc::PACKET_MR_PROMISC as u16,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            sock.set_packet_opt(libc::PACKET_ADD_MEMBERSHIP, &mreq).map_err(err("setsockopt PACKET_ADD_MEMBERSHIP"))?;
        }
        if let Some(group) = cfg.fanout_group {
            let arg = u32::from(group) | ((libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG) << 16);
            sock.set_packet_opt(libc::PACKET_FANOUT, &arg).map_err(err("setsockopt PACKET_FANOUT"))?;
        }
        let max_len = (cfg.frame_size - FRAME_HEADROOM).min(pool.buf_size());
        Ok(AfPacketPort {
            name: name.to_string(),
            id,
            interface,
            ring,
            sock,
            pool,
            block_count: cfg.block_count,
            max_len,
            blk: 0,
            left: 0,
            off: 0,
            stats: PortStats::default(),
            oversize: 0,
            ring_drops: Cell::new(0),
            tx_failing: false,
        })
    }

    /// Whether the interface is up with carrier (`IFF_UP` and `IFF_RUNNING`).
    /// One ioctl: for housekeeping and the control plane, not per packet.
    /// False, with a debug log, when the interface is gone.
    pub fn link_up(&self) -> bool {
        match self.sock.if_flags(&self.interface) {
            Ok(flags) => flags & (libc::IFF_UP | libc::IFF_RUNNING) == (libc::IFF_UP | libc::IFF_RUNNING),
            Err(e) => {
                log::debug!("{}: link state unknown: {e}", self.interface);
                false
            }
        }
    }

    /// Frames dropped on receive because they were longer than the ring
    /// frame or a pool buffer (also counted in `rx_dropped`).
    pub fn rx_oversize(&self) -> u64 {
        self.oversize
    }

    /// Returns the current block to the kernel and moves to the next.
    #[inline]
    fn next_block(&mut self) {
        self.ring.release(self.blk);
        self.blk = if self.blk + 1 == self.block_count { 0 } else { self.blk + 1 };
    }
}

impl Port for AfPacketPort {
    fn link_state(&self) -> Option<bool> {
        Some(self.link_up())
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn id(&self) -> PortId {
        self.id
    }

    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let mut n = 0;
        while !burst.is_full() {
            if self.left == 0 {
                let Some((count, first)) = self.ring.ready(self.blk) else { break };
                if count == 0 {
                    self.next_block();
                    continue;
                }
                (self.left, self.off) = (count, first);
            }
            let Some(frame) = self.ring.frame(self.blk, self.off) else {
                // A header pointing outside its block: give up on the block.
                self.stats.rx_dropped += u64::from(self.left);
                self.left = 0;
                self.next_block();
                continue;
            };
            let (len, next) = (frame.len as usize, frame.next_offset);
            // The kernel strips the VLAN tag into the header: it goes back in on receive.
            let tag_len = if frame.vlan.is_some() { 4 } else { 0 };
            if frame.pkttype != libc::PACKET_OUTGOING {
                if frame.data.len() < len || len + tag_len > self.max_len || frame.data.len() < 12 {
                    self.oversize += 1;
                    self.stats.rx_dropped += 1;
                } else {
                    // Pool empty: leave the frame in the ring for the next poll.
                    let Some(mut pkt) = self.pool.alloc() else { break };
                    match frame.vlan {
                        None => {
                            pkt.fill_from(frame.data);
                        }
                        Some((tpid, tci)) => {
                            let [t0, t1] = tpid.to_be_bytes();
                            let [c0, c1] = tci.to_be_bytes();
                            let (macs, rest) = frame.data.split_at(12);
                            pkt.fill_from2(macs, &[t0, t1, c0, c1]);
                            pkt.extend_from(rest);
                        }
                    }
                    pkt.meta.port = self.id;
                    pkt.meta.ts_ns = u64::from(frame.sec) * NS_PER_SEC + u64::from(frame.nsec);
                    self.stats.rx_bytes += (len + tag_len) as u64;
                    burst.push(pkt);
                    n += 1;
                }
            }
            self.left -= 1;
            if self.left == 0 {
                self.next_block();
            } else if let Some(off) = self.off.checked_add(next).filter(|_| next != 0) {
                self.off = off;
            } else {
                // A corrupt header (no next frame although more are announced): drop the rest.
                self.stats.rx_dropped += u64::from(self.left);
                self.left = 0;
                self.next_block();
            }
        }
        self.stats.rx_packets += n as u64;
        n
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        if burst.is_empty() {
            return 0;
        }
        let sent = match self.sock.send_burst(burst) {
            Ok(sent) => {
                self.tx_failing = false;
                sent
            }
            Err(e) => {
                // ENETDOWN while the link is down, ENXIO once the interface is
                // gone, EAGAIN when the socket buffer is full: drop and count.
                if !self.tx_failing && e.raw_os_error() != Some(libc::EAGAIN) {
                    log::warn!("{}: transmit failing: {e}", self.interface);
                    self.tx_failing = true;
                }
                0
            }
        };
        self.stats.tx_bytes += burst[..sent].iter().map(|p| p.len() as u64).sum::<u64>();
        self.stats.tx_packets += sent as u64;
        self.stats.tx_dropped += (burst.len() - sent) as u64;
        burst.clear();
        sent
    }

    fn stats(&self) -> PortStats {
        if let Ok(d) = self.sock.take_ring_drops() {
            self.ring_drops.set(self.ring_drops.get() + d);
        }
        PortStats { rx_dropped: self.stats.rx_dropped + self.ring_drops.get(), ..self.stats }
    }
}
