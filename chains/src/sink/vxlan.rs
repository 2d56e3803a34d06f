//! The VXLAN sink: each copy, as an Ethernet frame, in a VXLAN packet (RFC
//! 7348) to a remote analyser or VTEP, which Wireshark, Zeek, Suricata and
//! cloud traffic-mirroring targets decode as they are.
//!
//! On the wire: outer IP (v4 or v6, from [`RemoteCfg`]), UDP to the
//! configured port (4789, [`VXLAN_PORT`], unless configured otherwise), the
//! 8-byte VXLAN header (flags `0x08`: VNI valid; 24 reserved bits; the 24-bit
//! VNI; 8 reserved bits), then the copy's bytes. The UDP source port is the
//! one the kernel gave the sink's socket, fixed for the sink's life: copies
//! keep their order on one ECMP path, and one socket serves the sink (per-flow
//! source ports would spread a single analyser's stream over paths and
//! reorder it, for entropy the receiver does not need).

use super::remote::{RemoteCfg, RemoteSocket, Transport};
use super::{CopyRecord, Names, Sink, SinkError};
use std::io::{self, IoSlice};
use std::net::IpAddr;

/// The IANA-assigned VXLAN UDP port, the usual configuration default.
pub const VXLAN_PORT: u16 = 4789;
/// VXLAN header length.
const HEADER_LEN: usize = 8;
/// Flags byte: the VNI field is valid.
const FLAG_VNI: u8 = 0x08;
/// Largest VNI (24 bits).
const MAX_VNI: u32 = 0xff_ffff;

/// Copies sent as VXLAN over UDP to a remote address.
///
/// Config: `name` (logs, counters), [`RemoteCfg`] (destination, optional
/// source), `vni` (0..=16777215) and the destination UDP port.
///
/// Counters: the sink thread counts each copy written or lost to an error.
///
/// Failures: a send error (no route, a full socket buffer for longer than
/// [`SEND_TIMEOUT`](super::remote::SEND_TIMEOUT), or an ICMP error about an
/// earlier copy, e.g. "port unreachable" when nothing listens at the
/// destination) is returned as [`SinkError::Io`]; the sink thread marks the
/// sink down and retries after its backoff. A receiver that only captures
/// (no socket on the port) answers with port unreachable: it must listen on
/// the port or drop those ICMP errors. A copy longer than one datagram can
/// carry (65535 bytes of IP packet minus headers; only super-frames from
/// receive offloads get there) is truncated to fit rather than refused, as a
/// `slice` stage would; a datagram over the path MTU is fragmented by the
/// kernel. Nothing is buffered: [`Sink::flush`] does nothing.
pub struct VxlanSink {
    name: String,
    socket: RemoteSocket,
    header: [u8; HEADER_LEN],
}

impl VxlanSink {
    /// Opens the socket to `remote.destination`:`dst_port` for VNI `vni`.
    pub fn new(name: &str, remote: RemoteCfg, vni: u32, dst_port: u16) -> Result<VxlanSink, SinkError> {
        let invalid = |msg: String| SinkError::Io {
            sink: name.to_string(),
            source: io::Error::new(io::ErrorKind::InvalidInput, msg),
        };
        if vni > MAX_VNI {
            return Err(invalid(format!("VNI {vni} does not fit in 24 bits")));
        }
        if dst_port == 0 {
            return Err(invalid("UDP port 0 is not a destination port".into()));
        }
        let socket = RemoteSocket::open(name, remote, Transport::Udp(dst_port))?;
        let mut header = [0u8; HEADER_LEN];
        header[0] = FLAG_VNI;
        header[4..8].copy_from_slice(&(vni << 8).to_be_bytes());
        Ok(VxlanSink { name: name.to_string(), socket, header })
    }

    /// The address copies leave from (configured or chosen by the route).
    pub fn source(&self) -> IpAddr {
        self.socket.source()
    }
}

impl Sink for VxlanSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, rec: &CopyRecord, _names: &Names) -> Result<(), SinkError> {
        let frame = rec.pkt.data();
        let frame = &frame[..frame.len().min(self.socket.max_send() - HEADER_LEN)];
        self.socket.send(&[IoSlice::new(&self.header), IoSlice::new(frame)])
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
