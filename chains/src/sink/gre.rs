//! The L2 GRE sink: each copy, as an Ethernet frame, in GRE with protocol
//! type 0x6558 (transparent Ethernet bridging, RFC 1701/2784), the format of
//! Linux `gretap` and Open vSwitch GRE ports; Wireshark decodes the inner
//! frame as it is.
//!
//! On the wire: outer IP (v4 or v6, protocol 47; the kernel writes it), the
//! 4-byte GRE header (no checksum, key or sequence number; version 0;
//! protocol 0x6558), then the copy's bytes.

use super::remote::{RemoteCfg, RemoteSocket, Transport};
use super::{CopyRecord, Names, Sink, SinkError};
use std::io::IoSlice;
use std::net::IpAddr;

/// GRE header: no flags, version 0, transparent Ethernet bridging.
const HEADER: [u8; 4] = [0x00, 0x00, 0x65, 0x58];

/// Copies sent as GRE/TEB over a raw IP socket to a remote address.
///
/// Config: `name` (logs, counters) and [`RemoteCfg`] (destination, optional
/// source). Needs `CAP_NET_RAW` (raw socket), checked when the sink is made.
///
/// Counters: the sink thread counts each copy written or lost to an error.
///
/// Failures: a send error (no route, a full socket buffer for longer than
/// [`SEND_TIMEOUT`](super::remote::SEND_TIMEOUT), an ICMP "host/network
/// unreachable" about an earlier copy) is returned as [`SinkError::Io`]; the
/// sink thread marks the sink down and retries after its backoff. "Protocol
/// or port unreachable" answers are not failures: they come from receivers
/// that capture GRE without terminating it (see [`super::remote`]). A copy
/// longer than one IP packet can carry is truncated to fit; a packet over the
/// path MTU is fragmented by the kernel. Nothing is buffered:
/// [`Sink::flush`] does nothing.
pub struct GreSink {
    name: String,
    socket: RemoteSocket,
}

impl GreSink {
    /// Opens the raw GRE socket to `remote.destination`.
    pub fn new(name: &str, remote: RemoteCfg) -> Result<GreSink, SinkError> {
        let socket = RemoteSocket::open(name, remote, Transport::Gre)?;
        Ok(GreSink { name: name.to_string(), socket })
    }

    /// The address copies leave from (configured or chosen by the route).
    pub fn source(&self) -> IpAddr {
        self.socket.source()
    }
}

impl Sink for GreSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, rec: &CopyRecord, _names: &Names) -> Result<(), SinkError> {
        let frame = rec.pkt.data();
        let frame = &frame[..frame.len().min(self.socket.max_send() - HEADER.len())];
        self.socket.send(&[IoSlice::new(&HEADER), IoSlice::new(frame)])
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
