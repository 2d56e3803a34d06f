//! The only place the AF_PACKET port touches the kernel: the packet socket,
//! its socket options, the mapped TPACKET_V3 receive ring, batched sends and
//! the interface-flags ioctl.
//!
//! Everything here is a thin, safe wrapper: callers pass plain values and get
//! `io::Result`s; every `unsafe` block says why it is sound. The ring hands
//! out frames as bounds-checked byte slices, so a confused kernel header can
//! at worst produce a dropped frame, never a read outside the mapping.
#![allow(unsafe_code)]

use crate::port::Burst;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Offset of the `sockaddr_ll` that follows each `tpacket3_hdr` in the ring.
const SLL_OFFSET: usize =
    (size_of::<libc::tpacket3_hdr>() + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1);

/// The interface index of `name`, or `None` when there is no such interface.
pub(super) fn if_nametoindex(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    (idx != 0).then_some(idx)
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A raw packet socket (`AF_PACKET`, `SOCK_RAW`), closed on drop.
pub(super) struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// A packet socket that receives nothing until [`Socket::bind`]: opening
    /// it with protocol 0 keeps other interfaces' traffic out of the ring
    /// between creation and bind.
    pub(super) fn new() -> io::Result<Socket> {
        // SAFETY: plain syscall with constant arguments; no memory is passed.
        let fd = cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        Ok(Socket { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Sets a `SOL_PACKET` option to the bytes of `value`.
    pub(super) fn set_packet_opt<T: Copy>(&self, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` points to `size_of::<T>()` readable bytes for the
        // duration of the call; the kernel only reads them.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                name,
                (value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    /// Binds the socket to `ifindex`, receiving every protocol (`ETH_P_ALL`).
    pub(super) fn bind(&self, ifindex: u32) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and the length passed is its size.
        cvt(unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    /// Packets the kernel dropped because the ring was full since the last
    /// call (reading `PACKET_STATISTICS` resets it).
    pub(super) fn take_ring_drops(&self) -> io::Result<u64> {
        let mut st = MaybeUninit::<libc::tpacket_stats_v3>::zeroed();
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid for writes of the sizes given; the
        // kernel writes at most `len` bytes.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                st.as_mut_ptr().cast(),
                &mut len,
            )
        })?;
        // SAFETY: zero-initialised plain integers, possibly overwritten by the kernel.
        Ok(u64::from(unsafe { st.assume_init() }.tp_drops))
    }

    /// The interface flags (`IFF_UP`, `IFF_RUNNING`, ...) of `name`.
    pub(super) fn if_flags(&self, name: &str) -> io::Result<libc::c_int> {
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        let bytes = name.as_bytes();
        if bytes.len() >= ifr.ifr_name.len() {
            return Err(io::Error::from_raw_os_error(libc::ENODEV));
        }
        for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes the
        // flags into `ifr`, which is valid for writes.
        cvt(unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) })?;
        // SAFETY: after SIOCGIFFLAGS succeeded the union holds the flags.
        Ok(libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags }))
    }

    /// Sends every packet of `burst` with one `sendmmsg(2)` to the bound
    /// interface, without blocking. Returns how many the kernel took (the
    /// first ones, in order); the error when it took none.
    pub(super) fn send_burst(&self, burst: &Burst) -> io::Result<usize> {
        if burst.is_empty() {
            return Ok(0);
        }
        // SAFETY: iovec and mmsghdr are plain data; all-zero is a valid value
        // (null pointers with zero lengths).
        let mut iov: [libc::iovec; crate::BURST] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; crate::BURST] = unsafe { std::mem::zeroed() };
        for ((pkt, v), m) in burst.iter().zip(iov.iter_mut()).zip(msgs.iter_mut()) {
            v.iov_base = pkt.data().as_ptr() as *mut libc::c_void;
            v.iov_len = pkt.len();
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `burst.len()` headers point at iovecs in `iov`,
        // which point at packet bytes borrowed from `burst`; all outlive the
        // call and the kernel only reads the packet bytes.
        let sent = cvt(unsafe {
            libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), burst.len() as libc::c_uint, libc::MSG_DONTWAIT)
        })?;
        Ok(sent as usize)
    }
}

/// One frame in a block of the receive ring, as the kernel described it.
pub(super) struct RxFrame<'a> {
    /// Offset of the next frame from this one's start; 0 for the last.
    pub next_offset: u32,
    /// Receive time, seconds and nanoseconds.
    pub sec: u32,
    pub nsec: u32,
    /// Length on the wire.
    pub len: u32,
    /// `sll_pkttype` (`PACKET_HOST`, `PACKET_OUTGOING`, ...).
    pub pkttype: u8,
    /// The 802.1Q/802.1ad tag the kernel took out of the frame (VLAN
    /// acceleration), as (TPID, TCI): it must be put back.
    pub vlan: Option<(u16, u16)>,
    /// The captured bytes (`tp_snaplen` of them).
    pub data: &'a [u8],
}

/// The mapped TPACKET_V3 receive ring: `block_count` blocks of `block_size`
/// bytes, each either the kernel's or ours according to its status word.
pub(super) struct RxRing {
    base: NonNull<u8>,
    block_size: usize,
    block_count: usize,
}

// SAFETY: the mapping is owned by this value alone (no aliases are handed out
// beyond borrows of `&self`), so moving it to another thread is sound.
unsafe impl Send for RxRing {}

impl RxRing {
    /// Asks for a TPACKET_V3 ring on `sock` and maps it. The socket must
    /// already be set to `TPACKET_V3`.
    pub(super) fn new(
        sock: &Socket,
        block_size: usize,
        block_count: usize,
        frame_size: usize,
        retire_ms: u32,
    ) -> io::Result<RxRing> {
        let req = libc::tpacket_req3 {
            tp_block_size: block_size as u32,
            tp_block_nr: block_count as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: (block_size / frame_size * block_count) as u32,
            tp_retire_blk_tov: retire_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        sock.set_packet_opt(libc::PACKET_RX_RING, &req)?;
        let len = block_size * block_count;
        // SAFETY: a fresh shared mapping of the socket's ring; the kernel
        // checks that `len` matches the ring it just set up.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                sock.fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        Ok(RxRing { base, block_size, block_count })
    }

    fn block(&self, blk: usize) -> *mut libc::tpacket_block_desc {
        debug_assert!(blk < self.block_count);
        // SAFETY: `blk < block_count`, so the offset stays inside the mapping.
        unsafe { self.base.as_ptr().add(blk * self.block_size).cast() }
    }

    fn status(&self, blk: usize) -> &AtomicU32 {
        // SAFETY: the block header is 8-byte aligned (blocks are page
        // aligned) and lives as long as `self`; the kernel and we hand the
        // block over through this word, so it is accessed atomically.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*self.block(blk)).hdr.bh1.block_status)) }
    }

    /// When block `blk` belongs to userspace: its packet count and the
    /// offset of its first frame. `None` while the kernel still fills it.
    #[inline]
    pub(super) fn ready(&self, blk: usize) -> Option<(u32, u32)> {
        // Acquire: the frames the kernel wrote before handing the block over
        // are visible once we see TP_STATUS_USER.
        if self.status(blk).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: the block is ours (status USER), so the kernel does not
        // write its header until we release it.
        let h = unsafe { std::ptr::addr_of!((*self.block(blk)).hdr.bh1).read() };
        Some((h.num_pkts, h.offset_to_first_pkt))
    }

    /// The frame at byte `off` of block `blk`, which must be ours. `None`
    /// when the kernel's header would put it outside the block.
    #[inline]
    pub(super) fn frame(&self, blk: usize, off: u32) -> Option<RxFrame<'_>> {
        let off = off as usize;
        if off + SLL_OFFSET + size_of::<libc::sockaddr_ll>() > self.block_size {
            return None;
        }
        // SAFETY: bounds checked above; the block is ours until released,
        // and tpacket3_hdr is 16-byte aligned in the ring (TPACKET_ALIGN).
        let h = unsafe { self.block(blk).cast::<u8>().add(off).cast::<libc::tpacket3_hdr>().read_unaligned() };
        // SAFETY: as above; the sockaddr_ll follows the aligned header.
        let sll =
            unsafe { self.block(blk).cast::<u8>().add(off + SLL_OFFSET).cast::<libc::sockaddr_ll>().read_unaligned() };
        let start = off + usize::from(h.tp_mac);
        let end = start.checked_add(h.tp_snaplen as usize)?;
        if end > self.block_size {
            return None;
        }
        // SAFETY: `start..end` lies inside block `blk` (checked), which the
        // kernel does not write while it is ours; the borrow of `self` ends
        // before `release` can be called.
        let data = unsafe { std::slice::from_raw_parts(self.block(blk).cast::<u8>().add(start), end - start) };
        Some(RxFrame {
            next_offset: h.tp_next_offset,
            sec: h.tp_sec,
            nsec: h.tp_nsec,
            len: h.tp_len,
            pkttype: sll.sll_pkttype,
            vlan: (h.tp_status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
                let tpid = if h.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 { h.hv1.tp_vlan_tpid } else { 0x8100 };
                (tpid, h.hv1.tp_vlan_tci as u16)
            }),
            data,
        })
    }

    /// Gives block `blk` back to the kernel.
    #[inline]
    pub(super) fn release(&mut self, blk: usize) {
        // Release: our reads of the block happen before the kernel reuses it.
        self.status(blk).store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `new`; no borrows of it
        // can outlive `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.block_size * self.block_count) };
    }
}
