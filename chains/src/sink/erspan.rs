//! The ERSPAN sink: copies in Cisco's Encapsulated Remote SPAN format over
//! GRE (draft-foschiano-erspan-03), type II or type III, which analysers,
//! packet brokers, Linux `erspan` devices and Wireshark take as they are.
//!
//! On the wire: outer IP (v4 or v6, protocol 47; the kernel writes it), an
//! 8-byte GRE header (S bit set, version 0, protocol 0x88BE for type II or
//! 0x22EB for type III, then a 32-bit sequence number counting this sink's
//! copies from 0, wrapping), the ERSPAN header, then the copy's bytes.
//!
//! Type II header (8 bytes):
//! * `Ver` = 1 (4 bits), `VLAN` = the copy's outer VLAN id or 0 (12);
//! * `COS` (3): the outer tag's priority, else the IP precedence of an
//!   untagged IPv4/IPv6 frame, else 0; `En` (2): 3 "VLAN tag preserved in
//!   frame" for a tagged copy, 0 "untagged" otherwise; `T` (1): the copy is
//!   shorter than the packet (a `slice` stage cut it, or it was cut to fit a
//!   datagram); `Session ID` (10);
//! * reserved (12) = 0, `Index` (20) = the copy's ingress port id.
//!
//! Type III header (12 bytes):
//! * `Ver` = 2, `VLAN`, `COS`, `BSO` (2) = 0 (good frame), `T`, `Session ID`
//!   as above;
//! * `Timestamp` (32): the copy's receive time (`meta.ts_ns`, or the time of
//!   sending when the port gave none) in units of 100 ns since the Unix
//!   epoch, modulo 2^32 (wraps every 429.5 s): granularity `Gra` = 1
//!   (100 ns). 100 µs (`Gra` = 0, the Linux default) cannot order VM-to-VM
//!   packets microseconds apart; IEEE 1588 needs the optional platform
//!   sub-header for its seconds, which this sink does not send (`O` = 0);
//! * `SGT` (16) = 0, `P` (1) = 1 (an Ethernet frame follows), `FT` (5) = 0
//!   (Ethernet), `HW ID` (6) = 0, `D` (1) = 0 (ingress: copies are taken
//!   on the way in), `Gra` (2) = 1, `O` (1) = 0.

use super::remote::{RemoteCfg, RemoteSocket, Transport};
use super::{CopyRecord, Names, Sink, SinkError};
use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// GRE flags and version: the sequence number is present.
const GRE_FLAGS_S: u16 = 0x1000;
/// GRE protocol type of ERSPAN type II (and I).
const PROTO_TYPE_II: u16 = 0x88be;
/// GRE protocol type of ERSPAN type III.
const PROTO_TYPE_III: u16 = 0x22eb;
/// GRE header with sequence number.
const GRE_LEN: usize = 8;
/// Largest session id (10 bits).
const MAX_SESSION: u16 = 1023;
/// `En` of type II: the VLAN tag is still in the frame.
const EN_TAG_IN_FRAME: u16 = 3;
/// Type III `P` bit: an Ethernet frame follows.
const III_P: u16 = 1 << 15;
/// Type III timestamp granularity 100 ns, in place (`Gra` = 0b01).
const III_GRA_100NS: u16 = 1 << 1;
/// Nanoseconds per type III timestamp unit.
const TS_UNIT_NS: u64 = 100;

/// Which ERSPAN header the sink writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErspanVersion {
    /// Type II: 8-byte header, session and port index, no timestamp.
    II,
    /// Type III: 12-byte header with a 100 ns timestamp.
    III,
}

impl ErspanVersion {
    /// The `Ver` field: 1 for type II, 2 for type III.
    fn ver(self) -> u16 {
        match self {
            ErspanVersion::II => 1,
            ErspanVersion::III => 2,
        }
    }

    fn header_len(self) -> usize {
        match self {
            ErspanVersion::II => 8,
            ErspanVersion::III => 12,
        }
    }
}

/// Copies sent as ERSPAN type II or III over a raw GRE socket.
///
/// Config: `name` (logs, counters), [`RemoteCfg`] (destination, optional
/// source), the [`ErspanVersion`] and the session id (0..=1023, what the
/// analyser filters on). Needs `CAP_NET_RAW` (raw socket), checked when the
/// sink is made.
///
/// Counters: the sink thread counts each copy written or lost to an error;
/// the GRE sequence number lets the analyser count copies lost on the way.
///
/// Failures: as [`GreSink`](super::gre::GreSink): send errors and ICMP
/// "host/network unreachable" are [`SinkError::Io`] (the sink thread marks
/// the sink down and retries after its backoff); "protocol/port unreachable"
/// from a capturing receiver is not a failure. A copy longer than one IP
/// packet can carry is truncated to fit, with the `T` bit set; a packet over
/// the path MTU is fragmented by the kernel. Nothing is buffered:
/// [`Sink::flush`] does nothing.
pub struct ErspanSink {
    name: String,
    socket: RemoteSocket,
    version: ErspanVersion,
    session: u16,
    seq: u32,
    /// GRE and ERSPAN headers of the copy being sent, rewritten per copy.
    header: [u8; GRE_LEN + 12],
}

impl ErspanSink {
    /// Opens the raw GRE socket to `remote.destination` for ERSPAN session `session`.
    pub fn new(name: &str, remote: RemoteCfg, version: ErspanVersion, session: u16) -> Result<ErspanSink, SinkError> {
        if session > MAX_SESSION {
            return Err(SinkError::Io {
                sink: name.to_string(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("ERSPAN session id {session} is over {MAX_SESSION}"),
                ),
            });
        }
        let socket = RemoteSocket::open(name, remote, Transport::Gre)?;
        let mut header = [0u8; GRE_LEN + 12];
        let proto = match version {
            ErspanVersion::II => PROTO_TYPE_II,
            ErspanVersion::III => PROTO_TYPE_III,
        };
        header[0..2].copy_from_slice(&GRE_FLAGS_S.to_be_bytes());
        header[2..4].copy_from_slice(&proto.to_be_bytes());
        Ok(ErspanSink { name: name.to_string(), socket, version, session, seq: 0, header })
    }

    /// The address copies leave from (configured or chosen by the route).
    pub fn source(&self) -> IpAddr {
        self.socket.source()
    }
}

/// The outer VLAN tag of an Ethernet frame: (priority, VLAN id).
fn outer_tag(frame: &[u8]) -> Option<(u16, u16)> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if ethertype != 0x8100 && ethertype != 0x88a8 {
        return None;
    }
    let tci = u16::from_be_bytes([*frame.get(14)?, *frame.get(15)?]);
    Some((tci >> 13, tci & 0x0fff))
}

/// The IP precedence (top 3 bits of TOS / traffic class) of an untagged IP frame.
fn ip_precedence(frame: &[u8]) -> Option<u16> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..16)?;
    match ethertype {
        0x0800 => Some(u16::from(ip[1] >> 5)),
        0x86dd => Some(u16::from(ip[0] & 0x0f) >> 1),
        _ => None,
    }
}

/// The type III timestamp of a copy received at `ts_ns` (0: unknown, use now).
fn timestamp_100ns(ts_ns: u64) -> u32 {
    let ns = match ts_ns {
        0 => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
        ts => ts,
    };
    (ns / TS_UNIT_NS) as u32
}

impl Sink for ErspanSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, rec: &CopyRecord, _names: &Names) -> Result<(), SinkError> {
        let pkt = &rec.pkt;
        let hlen = GRE_LEN + self.version.header_len();
        let data = pkt.data();
        let frame = &data[..data.len().min(self.socket.max_send() - hlen)];
        let truncated = u16::from(frame.len() < pkt.wire_len());
        let tag = outer_tag(frame);
        let (cos, vlan) = match tag {
            Some(t) => t,
            None => (ip_precedence(frame).unwrap_or(0), 0),
        };
        let h = &mut self.header;
        h[4..8].copy_from_slice(&self.seq.to_be_bytes());
        h[8..10].copy_from_slice(&((self.version.ver() << 12) | vlan).to_be_bytes());
        let (word, rest) = match self.version {
            ErspanVersion::II => {
                let en = if tag.is_some() { EN_TAG_IN_FRAME } else { 0 };
                let index = u32::from(pkt.meta.port) & 0x000f_ffff;
                ((cos << 13) | (en << 11) | (truncated << 10) | self.session, [index, 0])
            }
            ErspanVersion::III => {
                // BSO = 0; SGT = 0; P, FT = 0, HW ID = 0, D = 0, Gra, O = 0.
                let flags = u32::from(III_P | III_GRA_100NS);
                ((cos << 13) | (truncated << 10) | self.session, [timestamp_100ns(pkt.meta.ts_ns), flags])
            }
        };
        h[10..12].copy_from_slice(&word.to_be_bytes());
        h[12..16].copy_from_slice(&rest[0].to_be_bytes());
        h[16..20].copy_from_slice(&rest[1].to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        self.socket.send(&[IoSlice::new(&self.header[..hlen]), IoSlice::new(frame)])
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
