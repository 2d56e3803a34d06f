//! What the remote sinks ([VXLAN](super::vxlan), [GRE](super::gre),
//! [ERSPAN](super::erspan)) share: where copies go, the address they leave
//! from, and one socket that sends each copy as one datagram.
//!
//! * The source address is the configured one, or the one the kernel's route
//!   to the destination chooses: the socket is connected (no packet is sent
//!   by connecting) and its local address read back. Either way the socket is
//!   bound to it, so the `source()` a sink reports is what the analyser sees.
//! * Sockets are connected, so the kernel reports ICMP errors about earlier
//!   copies on a later send. Such an error is returned as [`SinkError::Io`]:
//!   the sink thread marks the sink down and retries after its backoff (the
//!   failed send cleared the pending error, so no reconnect is needed).
//!   Exceptions, each retried once at once instead:
//!   - `EMSGSIZE`: an ICMP "fragmentation needed" lowered the path MTU; the
//!     kernel now knows it and fragments the retry (default PMTU discovery
//!     mode: fragment when needed), so one smaller hop does not cost a
//!     backoff period of copies.
//!   - `ECONNREFUSED` on GRE only: a host that receives GRE without
//!     terminating it (an analyser capturing on its interface, the common
//!     ERSPAN set-up) answers "protocol unreachable" or "port unreachable"
//!     while it takes the copies; treating that as a failure would mark a
//!     working sink down every second. For UDP (VXLAN) "port unreachable"
//!     means nothing listens there and is a failure.
//! * A send blocks at most [`SEND_TIMEOUT`] (a full socket buffer is
//!   back-pressure on the sink thread, whose queue then sheds copies, counted);
//!   longer is an error, so a wedged interface cannot hang the sink thread.
//! * The sockets never read: their receive buffers are kept minimal.

use super::SinkError;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// IP protocol number of GRE.
const IPPROTO_GRE: i32 = 47;
/// Longest a send may block on a full socket buffer.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Receive buffer size asked for (the kernel rounds it up to its minimum).
const RECV_BUFFER: usize = 1;
/// IPv4 header length (the sockets never set options).
const IPV4_HEADER: usize = 20;
/// UDP header length.
const UDP_HEADER: usize = 8;

/// Where a remote sink sends copies, and from which address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteCfg {
    /// The analyser (or tunnel end) receiving the copies, IPv4 or IPv6.
    pub destination: IpAddr,
    /// The address copies leave from; `None` takes the one the route to
    /// `destination` uses. Must be of the destination's family.
    pub source: Option<IpAddr>,
}

/// How copies travel: the part of the packet below the sink's own header.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Transport {
    /// UDP to this destination port (VXLAN).
    Udp(u16),
    /// A raw IP socket with protocol 47: the kernel adds the IP header, the
    /// sink writes the GRE header.
    Gre,
}

/// A connected socket sending one copy per datagram.
pub(crate) struct RemoteSocket {
    sink: String,
    socket: Socket,
    transport: Transport,
    source: IpAddr,
    /// Bytes one send may carry: what fits in an IP packet of 65535 bytes
    /// (IPv4 counts its header in that, IPv6 does not), minus UDP's header.
    max_send: usize,
}

impl RemoteSocket {
    /// Opens, binds and connects the socket for sink `sink`.
    pub(crate) fn open(sink: &str, cfg: RemoteCfg, transport: Transport) -> Result<RemoteSocket, SinkError> {
        let io = |source| SinkError::Io { sink: sink.to_string(), source };
        let invalid = |msg: String| io(io::Error::new(io::ErrorKind::InvalidInput, msg));
        let dest = cfg.destination;
        if dest.is_unspecified() {
            return Err(invalid(format!("destination {dest} is not an address to send to")));
        }
        if let Some(src) = cfg.source {
            if src.is_ipv4() != dest.is_ipv4() {
                return Err(invalid(format!("source {src} and destination {dest} are of different IP versions")));
            }
        }
        let domain = if dest.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
        let (ty, proto, port) = match transport {
            Transport::Udp(port) => (Type::DGRAM, Protocol::UDP, port),
            Transport::Gre => (Type::RAW, Protocol::from(IPPROTO_GRE), 0),
        };
        let socket = Socket::new(domain, ty, Some(proto)).map_err(io)?;
        socket.set_write_timeout(Some(SEND_TIMEOUT)).map_err(io)?;
        socket.set_recv_buffer_size(RECV_BUFFER).map_err(io)?;
        if let Some(src) = cfg.source {
            socket.bind(&SockAddr::from(SocketAddr::new(src, 0))).map_err(io)?;
        }
        socket.connect(&SockAddr::from(SocketAddr::new(dest, port))).map_err(io)?;
        let local = socket.local_addr().map_err(io)?;
        let source = local
            .as_socket()
            .map(|a| a.ip())
            .ok_or_else(|| io(io::Error::other("the socket's local address is not an IP address")))?;
        let ip_payload = if dest.is_ipv4() { usize::from(u16::MAX) - IPV4_HEADER } else { usize::from(u16::MAX) };
        let max_send = match transport {
            Transport::Udp(_) => ip_payload - UDP_HEADER,
            Transport::Gre => ip_payload,
        };
        Ok(RemoteSocket { sink: sink.to_string(), socket, transport, source, max_send })
    }

    /// The address copies leave from.
    pub(crate) fn source(&self) -> IpAddr {
        self.source
    }

    /// Bytes one datagram may carry (the sink's header and the frame).
    pub(crate) fn max_send(&self) -> usize {
        self.max_send
    }

    /// Sends `parts` as one datagram.
    pub(crate) fn send(&self, parts: &[IoSlice<'_>]) -> Result<(), SinkError> {
        let first = match self.socket.send_vectored(parts) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let retry = first.raw_os_error() == Some(libc::EMSGSIZE)
            || (matches!(self.transport, Transport::Gre) && first.kind() == io::ErrorKind::ConnectionRefused);
        let res = if retry { self.socket.send_vectored(parts).map(drop) } else { Err(first) };
        res.map_err(|source| SinkError::Io { sink: self.sink.clone(), source })
    }
}
