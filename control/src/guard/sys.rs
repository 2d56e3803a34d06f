//! The only place the guard touches the kernel directly: one `NETLINK_ROUTE`
//! socket (open, bind, send, receive). Messages are built and parsed as
//! plain bytes in [`super::netlink`]; here they only cross the boundary.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A bound `AF_NETLINK`/`NETLINK_ROUTE` socket, closed on drop.
pub(super) struct RouteSocket {
    fd: OwnedFd,
}

impl RouteSocket {
    /// Opens and binds a routing socket (the kernel picks the port id);
    /// receives time out after `timeout`, so a lost reply cannot hang the guard.
    pub(super) fn open(timeout: Duration) -> io::Result<RouteSocket> {
        // SAFETY: plain syscall with constant arguments; no memory is passed.
        let fd =
            cvt(unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) })?;
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let sock = RouteSocket { fd: unsafe { OwnedFd::from_raw_fd(fd) } };
        // SAFETY: an all-zero sockaddr_nl is valid (pid 0: the kernel assigns one, no groups).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a valid sockaddr_nl of the size passed; the kernel only reads it.
        cvt(unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        let tv = libc::timeval { tv_sec: timeout.as_secs() as libc::time_t, tv_usec: timeout.subsec_micros() as _ };
        // SAFETY: `tv` is a valid timeval of the size passed; the kernel only reads it.
        cvt(unsafe {
            libc::setsockopt(
                sock.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        })?;
        let one: libc::c_int = 1;
        // Extended acknowledgements carry the kernel's own error text (best effort: older kernels lack it).
        // SAFETY: `one` is a valid c_int of the size passed; the kernel only reads it.
        let _ = unsafe {
            libc::setsockopt(
                sock.fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_EXT_ACK,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(sock)
    }

    /// Sends one buffer of netlink messages to the kernel (one system call for the whole batch).
    pub(super) fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: `buf` is valid for `buf.len()` bytes for the duration of the call; the kernel
        // only reads it. A netlink socket's default destination is the kernel.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != buf.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "netlink: short send"));
        }
        Ok(())
    }

    /// Receives one datagram of replies into `buf`; returns its length.
    pub(super) fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid and writable for `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}
