//! Capture files as ports: a pcap or pcapng file as input, a capture file as
//! output.
//!
//! A [`PcapPort`] lets the whole dataplane run without a NIC: tests, demos and
//! replays of production captures feed a file in, and whatever the dataplane
//! transmits on the port is written to another file that Wireshark/tshark
//! reads as it is. The input is read lazily, one burst at a time, into buffers
//! from the port's [`Pool`], exactly as a NIC would fill them; nothing is
//! allocated per packet on either path (the `pcap-file` reader parses out of
//! one read buffer it allocates at open).
//!
//! Input rules, chosen so a replay never silently invents or loses traffic:
//! * the format is detected by the magic number (pcap in either byte order,
//!   micro- or nanosecond; pcapng), never by the file name;
//! * only Ethernet captures are accepted (`LINKTYPE_ETHERNET`); anything else
//!   is refused at open, because every later stage parses Ethernet;
//! * timestamps keep their full resolution (pcap nanosecond magic, pcapng
//!   `if_tsresol` and `if_tsoffset`);
//! * when the pool is empty the burst stops and the next record stays in the
//!   file for the next poll: back-pressure, not loss;
//! * a frame larger than a pool buffer is dropped and counted (`rx_dropped`),
//!   never truncated into something that looks like a valid frame;
//! * a damaged or truncated tail ends the input with one warning and is
//!   counted ([`PcapPort::rx_corrupt`] and `rx_dropped`).

use super::{Burst, Port, PortStats};
use crate::packet::{Packet, Pool, PortId};
use pcap_file::pcap::{PcapHeader, PcapReader};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::{Block, PcapNgParser, PcapNgReader, PcapNgWriter};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};
use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// First four bytes of a pcapng file (the Section Header Block type; the same
/// in both byte orders).
const PCAPNG_MAGIC: u32 = 0x0A0D_0D0A;
/// Classic pcap magic numbers as read big-endian: micro/nanosecond, both byte orders.
const PCAP_MAGICS: [u32; 4] = [0xA1B2_C3D4, 0xD4C3_B2A1, 0xA1B2_3C4D, 0x4D3C_B2A1];
/// How much of a pcapng file is examined at open for interface link types.
/// Interface blocks precede the packets that use them, so a small prefix holds them.
const PEEK_BYTES: u64 = 64 * 1024;
/// Snap length written into classic pcap output: tcpdump's maximum, so jumbo
/// frames are never flagged as larger than the snap length.
const PCAP_SNAPLEN: u32 = 262_144;
/// Output buffer: large enough that a burst rarely reaches the file system.
const WRITE_BUFFER: usize = 256 * 1024;
const NS_PER_SEC: u64 = 1_000_000_000;

/// Why a capture port could not be opened. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PcapPortError {
    /// The input file does not exist.
    #[error("{}: capture file not found", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The input file exists but cannot be read.
    #[error("{}: cannot open capture file: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The input does not start with a pcap or pcapng magic number.
    #[error("{}: not a capture file (no pcap or pcapng magic number)", path.display())]
    NotCapture {
        /// The file.
        path: PathBuf,
    },
    /// The magic number is right but the file header is damaged.
    #[error("{}: damaged capture file header: {reason}", path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What the capture library said.
        reason: String,
    },
    /// The capture holds something other than Ethernet frames.
    #[error("{}: unsupported link type {linktype} (only Ethernet, LINKTYPE_ETHERNET = 1, is accepted)", path.display())]
    LinkType {
        /// The file.
        path: PathBuf,
        /// The link type found.
        linktype: u32,
    },
    /// The output file cannot be created or its header written.
    #[error("{}: cannot create capture file: {source}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// A capture file read as a port's input and/or a capture file written with
/// everything the port transmits.
///
/// Counters: `rx_packets`/`rx_bytes` (captured bytes), `rx_dropped` (frames
/// larger than a pool buffer, packets on an unknown or non-Ethernet pcapng
/// interface, a damaged tail), `tx_packets`/`tx_bytes`, `tx_dropped` (no
/// output file, write errors). Every call does bounded work: at most one
/// burst of records, plus the non-packet blocks between them.
pub struct PcapPort {
    name: String,
    id: PortId,
    pool: Arc<Pool>,
    input: Option<Input>,
    input_path: Option<PathBuf>,
    output: Option<Output>,
    output_path: Option<PathBuf>,
    stats: PortStats,
    corrupt: u64,
    warned_rx_drop: bool,
    tx_failed: bool,
}

/// Per-interface facts a pcapng packet needs to be read correctly.
struct Iface {
    ethernet: bool,
    /// Timestamp units to nanoseconds: `((raw * mul) >> shift) / div`.
    mul: u128,
    shift: u32,
    div: u128,
    /// `if_tsoffset`: seconds added to every timestamp (signed in the spec).
    offset_s: i64,
}

impl Iface {
    fn new(idb: &InterfaceDescriptionBlock<'_>) -> Iface {
        let mut tsresol = 6u8; // the pcapng default: microseconds
        let mut offset_s = 0i64;
        for opt in &idb.options {
            match opt {
                InterfaceDescriptionOption::IfTsResol(r) => tsresol = *r,
                InterfaceDescriptionOption::IfTsOffset(o) => offset_s = *o as i64,
                _ => {}
            }
        }
        let exp = u32::from(tsresol & 0x7f);
        let (mul, shift, div) = if tsresol & 0x80 != 0 {
            // Units of 2^-exp seconds.
            (u128::from(NS_PER_SEC), exp, 1)
        } else if exp <= 9 {
            (10u128.pow(9 - exp), 0, 1)
        } else {
            // 10^38 is the largest power of ten a u128 holds; any finer unit
            // makes every u64 timestamp round to 0 ns anyway.
            (1, 0, 10u128.pow((exp - 9).min(38)))
        };
        Iface { ethernet: idb.linktype == DataLink::ETHERNET, mul, shift, div, offset_s }
    }

    fn to_ns(&self, raw: u64) -> u64 {
        let mut ns = (u128::from(raw) * self.mul) >> self.shift;
        if self.div != 1 {
            ns /= self.div;
        }
        let ns = ns as i128 + i128::from(self.offset_s) * i128::from(NS_PER_SEC);
        ns.clamp(0, i128::from(u64::MAX)) as u64
    }
}

enum Input {
    Pcap { reader: PcapReader<File>, nanos: bool },
    Pcapng { reader: PcapNgReader<File>, ifaces: Vec<Iface> },
}

/// What reading one record did to the packet it was offered.
enum Step {
    /// The packet holds a frame.
    Filled,
    /// The record carried no frame (an interface block, statistics, ...).
    NoFrame,
    /// The record carried a frame that cannot be received; counted.
    Dropped(&'static str),
    /// End of the file.
    End,
    /// The file is damaged from here on.
    Corrupt(PcapError),
}

/// Copies a frame into `pkt` unless it does not fit.
fn fill(pkt: &mut Packet, data: &[u8], orig_len: u32, ts_ns: u64) -> Step {
    if data.len() > pkt.capacity() {
        return Step::Dropped("frame larger than a pool buffer");
    }
    pkt.fill_from(data);
    pkt.meta.ts_ns = ts_ns;
    pkt.meta.orig_len = if orig_len as usize > data.len() { orig_len } else { 0 };
    Step::Filled
}

impl Input {
    fn read_into(&mut self, pkt: &mut Packet) -> Step {
        match self {
            Input::Pcap { reader, nanos } => match reader.next_raw_packet() {
                None => Step::End,
                Some(Err(e)) => Step::Corrupt(e),
                Some(Ok(raw)) => {
                    // The raw record, not `next_packet`: pcap-file 2.0 rejects records
                    // whose original length exceeds the snap length, which is
                    // exactly what a capture taken with a snap length contains.
                    let frac_ns = if *nanos { u64::from(raw.ts_frac) } else { u64::from(raw.ts_frac) * 1000 };
                    let ts_ns = u64::from(raw.ts_sec) * NS_PER_SEC + frac_ns;
                    fill(pkt, &raw.data, raw.orig_len, ts_ns)
                }
            },
            Input::Pcapng { reader, ifaces } => {
                // Read before the block borrows the reader; a new section header
                // only affects the blocks after it.
                let little = reader.section().endianness == Endianness::Little;
                match reader.next_block() {
                    None => Step::End,
                    Some(Err(e)) => Step::Corrupt(e),
                    Some(Ok(block)) => read_block(block, ifaces, little, pkt),
                }
            }
        }
    }
}

fn read_block(block: Block<'_>, ifaces: &mut Vec<Iface>, little: bool, pkt: &mut Packet) -> Step {
    match block {
        Block::SectionHeader(_) => {
            // Interface ids restart in every section.
            ifaces.clear();
            Step::NoFrame
        }
        Block::InterfaceDescription(idb) => {
            ifaces.push(Iface::new(&idb));
            Step::NoFrame
        }
        Block::EnhancedPacket(epb) => {
            // pcap-file stores the raw timestamp units as if they were nanoseconds.
            let raw = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
            frame_on(ifaces, epb.interface_id as usize, raw, &epb.data, epb.original_len, pkt)
        }
        Block::Packet(pb) => {
            // pcap-file reads the two 32-bit timestamp halves as one u64,
            // which swaps them in a little-endian section.
            let raw = if little { pb.timestamp.rotate_left(32) } else { pb.timestamp };
            frame_on(ifaces, usize::from(pb.interface_id), raw, &pb.data, pb.original_len, pkt)
        }
        Block::SimplePacket(spb) => {
            // A simple packet block has no timestamp; its body includes the padding.
            let data = &spb.data[..spb.data.len().min(spb.original_len as usize)];
            match ifaces.first() {
                Some(iface) if iface.ethernet => fill(pkt, data, spb.original_len, 0),
                Some(_) => Step::Dropped("packet on a non-Ethernet interface"),
                None => Step::Dropped("packet before any interface description block"),
            }
        }
        _ => Step::NoFrame,
    }
}

fn frame_on(ifaces: &[Iface], iface: usize, raw_ts: u64, data: &[u8], orig_len: u32, pkt: &mut Packet) -> Step {
    match ifaces.get(iface) {
        Some(i) if i.ethernet => fill(pkt, data, orig_len, i.to_ns(raw_ts)),
        Some(_) => Step::Dropped("packet on a non-Ethernet interface"),
        None => Step::Dropped("packet on an interface with no description block"),
    }
}

enum Output {
    /// Classic pcap: the header is written by `pcap-file`; records are four
    /// native-endian words and the bytes (`PcapWriter` offers no way to flush
    /// the writer it owns without giving it up).
    Pcap(BufWriter<File>),
    Pcapng(PcapNgWriter<BufWriter<File>>),
}

impl Output {
    fn write(&mut self, pkt: &Packet, ts_ns: u64) -> Result<(), PcapError> {
        let data = pkt.data();
        let orig_len = u32::try_from(pkt.wire_len().max(data.len())).unwrap_or(u32::MAX);
        match self {
            Output::Pcap(w) => {
                let ts_sec = u32::try_from(ts_ns / NS_PER_SEC).unwrap_or(u32::MAX);
                let mut head = [0u8; 16];
                let words = [ts_sec, (ts_ns % NS_PER_SEC) as u32, data.len() as u32, orig_len];
                for (chunk, word) in head.chunks_exact_mut(4).zip(words) {
                    chunk.copy_from_slice(&word.to_ne_bytes());
                }
                w.write_all(&head).and_then(|()| w.write_all(data)).map_err(PcapError::IoError)
            }
            Output::Pcapng(w) => {
                let epb = EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: Duration::from_nanos(ts_ns),
                    original_len: orig_len,
                    data: Cow::Borrowed(data),
                    options: Vec::new(),
                };
                w.write_pcapng_block(epb).map(drop)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Pcap(w) => w.flush(),
            Output::Pcapng(w) => w.get_mut().flush(),
        }
    }
}

fn io_error(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn open_input(path: &Path) -> Result<Input, PcapPortError> {
    let p = || path.to_path_buf();
    let mut file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => PcapPortError::NotFound { path: p() },
        _ => PcapPortError::Open { path: p(), source: e },
    })?;
    let mut magic = [0u8; 4];
    match file.read_exact(&mut magic) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(PcapPortError::NotCapture { path: p() }),
        Err(e) => return Err(PcapPortError::Open { path: p(), source: e }),
    }
    let magic = u32::from_be_bytes(magic);
    let bad_header = |e: PcapError| PcapPortError::BadHeader { path: p(), reason: io_error(e).to_string() };
    if magic == PCAPNG_MAGIC {
        let mut head = Vec::new();
        file.seek(SeekFrom::Start(0))
            .and_then(|_| (&mut file).take(PEEK_BYTES).read_to_end(&mut head))
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .map_err(|e| PcapPortError::Open { path: p(), source: e })?;
        if let Some(linktype) = first_foreign_link_type(&head).map_err(bad_header)? {
            return Err(PcapPortError::LinkType { path: p(), linktype });
        }
        let reader = PcapNgReader::new(file).map_err(bad_header)?;
        Ok(Input::Pcapng { reader, ifaces: Vec::new() })
    } else if PCAP_MAGICS.contains(&magic) {
        file.seek(SeekFrom::Start(0)).map_err(|e| PcapPortError::Open { path: p(), source: e })?;
        let reader = PcapReader::new(file).map_err(bad_header)?;
        let header = reader.header();
        if header.datalink != DataLink::ETHERNET {
            return Err(PcapPortError::LinkType { path: p(), linktype: header.datalink.into() });
        }
        Ok(Input::Pcap { reader, nanos: header.ts_resolution == TsResolution::NanoSecond })
    } else {
        Err(PcapPortError::NotCapture { path: p() })
    }
}

/// The first non-Ethernet link type among the interface blocks before the
/// first packet in `head` (the start of a pcapng file). Interfaces described
/// later are checked as their packets arrive.
fn first_foreign_link_type(head: &[u8]) -> Result<Option<u32>, PcapError> {
    let (mut rest, mut parser) = PcapNgParser::new(head)?;
    // Anything the prefix cannot answer (a block cut by the prefix, damage
    // the reader will report in order) ends the look-ahead.
    while let Ok((next, block)) = parser.next_block(rest) {
        match block {
            Block::InterfaceDescription(idb) if idb.linktype != DataLink::ETHERNET => {
                return Ok(Some(idb.linktype.into()));
            }
            Block::EnhancedPacket(_) | Block::Packet(_) | Block::SimplePacket(_) => break,
            _ => {}
        }
        rest = next;
    }
    Ok(None)
}

fn create_output(name: &str, path: &Path) -> Result<Output, PcapPortError> {
    let create_err = |e: io::Error| PcapPortError::Create { path: path.to_path_buf(), source: e };
    let file = File::create(path).map_err(create_err)?;
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, file);
    let pcapng = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("pcapng"));
    if pcapng {
        let shb = SectionHeaderBlock {
            endianness: Endianness::native(),
            options: vec![SectionHeaderOption::UserApplication("flowsteer".into())],
            ..Default::default()
        };
        let mut w = PcapNgWriter::with_section_header(writer, shb).map_err(|e| create_err(io_error(e)))?;
        let idb = InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![
                InterfaceDescriptionOption::IfName(name.to_string().into()),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        w.write_pcapng_block(idb).map_err(|e| create_err(io_error(e)))?;
        Ok(Output::Pcapng(w))
    } else {
        let header = PcapHeader {
            snaplen: PCAP_SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::native(),
            ..Default::default()
        };

        header.write_to(&mut writer).map_err(|e| create_err(io_error(e)))?;
        Ok(Output::Pcap(writer))
    }
}

impl PcapPort {
    /// Opens the port's files.
    ///
    /// `rx`: a capture read as this port's input (pcap or pcapng, detected by
    /// its magic number; Ethernet only). Without it the port never receives
    /// and is exhausted from the start.
    ///
    /// `tx`: a file created (truncated) and written with everything the port
    /// transmits: pcapng with one interface named after the port when the
    /// name ends in `.pcapng`, otherwise classic pcap with nanosecond
    /// timestamps. Without it, transmitted packets are dropped and counted.
    ///
    /// Buffers for received frames come from `pool`.
    pub fn open(
        name: &str,
        id: PortId,
        rx: Option<&Path>,
        tx: Option<&Path>,
        pool: Arc<Pool>,
    ) -> Result<PcapPort, PcapPortError> {
        let input = rx.map(open_input).transpose()?;
        let output = tx.map(|path| create_output(name, path)).transpose()?;
        Ok(PcapPort {
            name: name.to_string(),
            id,
            pool,
            input,
            input_path: rx.map(Path::to_path_buf),
            output,
            output_path: tx.map(Path::to_path_buf),
            stats: PortStats::default(),
            corrupt: 0,
            warned_rx_drop: false,
            tx_failed: false,
        })
    }

    /// How many times the input ended on a damaged or truncated record
    /// (0 or 1 per file): a replay that stopped early must be visible.
    pub fn rx_corrupt(&self) -> u64 {
        self.corrupt
    }

    fn input_name(&self) -> std::path::Display<'_> {
        self.input_path.as_deref().unwrap_or(Path::new("")).display()
    }

    fn output_name(&self) -> std::path::Display<'_> {
        self.output_path.as_deref().unwrap_or(Path::new("")).display()
    }

    /// Marks the output broken after its first error: a capture with a hole
    /// inside a record is unreadable past it, so nothing more is written.
    fn fail_output(&mut self, e: &io::Error) {
        if !self.tx_failed {
            self.tx_failed = true;
            log::error!(
                "port {}: writing {} failed: {e}; dropping everything transmitted from now on (already buffered packets may be lost)",
                self.name,
                self.output_name()
            );
        }
    }
}

impl Port for PcapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn id(&self) -> PortId {
        self.id
    }

    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let Some(input) = self.input.as_mut() else { return 0 };
        let mut received = 0;
        let mut bytes = 0;
        let mut dropped = 0;
        let mut first_drop = None;
        let mut ended = None;
        // A buffer taken from the pool but not filled yet (the record it was
        // offered carried no frame); reused for the next record.
        let mut spare: Option<Packet> = None;
        while !burst.is_full() {
            let mut pkt = match spare.take().or_else(|| self.pool.alloc()) {
                Some(pkt) => pkt,
                // Pool empty: the next record stays in the file for the next poll.
                None => break,
            };
            match input.read_into(&mut pkt) {
                Step::Filled => {
                    pkt.meta.port = self.id;
                    bytes += pkt.len() as u64;
                    received += 1;
                    burst.push(pkt);
                }
                Step::NoFrame => spare = Some(pkt),
                Step::Dropped(why) => {
                    dropped += 1;
                    first_drop = first_drop.or(Some(why));
                    spare = Some(pkt);
                }
                Step::End => {
                    ended = Some(None);
                    break;
                }
                Step::Corrupt(e) => {
                    ended = Some(Some(e));
                    break;
                }
            }
        }
        self.stats.rx_packets += received as u64;
        self.stats.rx_bytes += bytes;
        self.stats.rx_dropped += dropped;
        if let Some(why) = first_drop {
            if !self.warned_rx_drop {
                self.warned_rx_drop = true;
                log::warn!(
                    "port {}: {}: dropping {why} (counted in rx_dropped; logged once)",
                    self.name,
                    self.input_name()
                );
            }
        }
        if let Some(end) = ended {
            if let Some(e) = end {
                self.corrupt += 1;
                self.stats.rx_dropped += 1;
                log::warn!(
                    "port {}: {}: damaged or truncated capture after {} packets ({}); treating it as the end of input",
                    self.name,
                    self.input_name(),
                    self.stats.rx_packets,
                    io_error(e)
                );
            }
            // Frees the reader's buffer at once.
            self.input = None;
        }
        received
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let count = burst.len() as u64;
        let Some(output) = self.output.as_mut().filter(|_| !self.tx_failed) else {
            self.stats.tx_dropped += count;
            burst.clear();
            return 0;
        };
        // One clock read per burst, only when some packet has no timestamp.
        let mut now = None;
        let mut sent = 0;
        let mut bytes = 0;
        let mut error = None;
        for pkt in burst.drain(..) {
            if error.is_some() {
                break;
            }
            let ts = if pkt.meta.ts_ns != 0 { pkt.meta.ts_ns } else { *now.get_or_insert_with(now_ns) };
            match output.write(&pkt, ts) {
                Ok(()) => {
                    sent += 1;
                    bytes += pkt.len() as u64;
                }
                Err(e) => error = Some(io_error(e)),
            }
        }
        self.stats.tx_packets += sent;
        self.stats.tx_bytes += bytes;
        self.stats.tx_dropped += count - sent;
        if let Some(e) = error {
            self.fail_output(&e);
        }
        sent as usize
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    fn flush(&mut self) -> io::Result<()> {
        let Some(output) = self.output.as_mut() else { return Ok(()) };
        if self.tx_failed {
            // Not retried (see `fail_output`), but never reported as written either.
            return Err(io::Error::other(format!("{}: output stopped after a write error", self.output_name())));
        }
        let res = output.flush();
        if let Err(e) = &res {
            self.fail_output(e);
        }
        res
    }

    fn rx_exhausted(&self) -> bool {
        self.input.is_none()
    }
}

impl Drop for PcapPort {
    fn drop(&mut self) {
        // `flush` logs the first failure itself.
        if !self.tx_failed {
            let _ = self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idb(
        linktype: DataLink,
        options: Vec<InterfaceDescriptionOption<'static>>,
    ) -> InterfaceDescriptionBlock<'static> {
        InterfaceDescriptionBlock { linktype, snaplen: 0, options }
    }

    #[test]
    fn pcapng_timestamp_resolutions() {
        let micro = Iface::new(&idb(DataLink::ETHERNET, vec![]));
        assert_eq!(micro.to_ns(1_500_000), 1_500_000_000);
        let nano = Iface::new(&idb(DataLink::ETHERNET, vec![InterfaceDescriptionOption::IfTsResol(9)]));
        assert_eq!(nano.to_ns(123_456_789), 123_456_789);
        let pico = Iface::new(&idb(DataLink::ETHERNET, vec![InterfaceDescriptionOption::IfTsResol(12)]));
        assert_eq!(pico.to_ns(5_000), 5);
        let binary = Iface::new(&idb(DataLink::ETHERNET, vec![InterfaceDescriptionOption::IfTsResol(0x80 | 10)]));
        assert_eq!(binary.to_ns(1024), 1_000_000_000);
        let offset = Iface::new(&idb(
            DataLink::ETHERNET,
            vec![InterfaceDescriptionOption::IfTsResol(9), InterfaceDescriptionOption::IfTsOffset(10)],
        ));
        assert_eq!(offset.to_ns(7), 10_000_000_007);
        // Absurd resolutions saturate instead of panicking.
        let absurd = Iface::new(&idb(DataLink::ETHERNET, vec![InterfaceDescriptionOption::IfTsResol(0x7f)]));
        assert_eq!(absurd.to_ns(u64::MAX), 0);
        let coarse = Iface::new(&idb(DataLink::ETHERNET, vec![InterfaceDescriptionOption::IfTsResol(0)]));
        assert_eq!(coarse.to_ns(u64::MAX), u64::MAX);
        assert!(!Iface::new(&idb(DataLink::RAW, vec![])).ethernet);
    }

    #[test]
    fn fill_refuses_frames_larger_than_the_buffer() {
        let pool = Pool::new(1, 8);
        let mut pkt = pool.alloc().unwrap();
        assert!(matches!(fill(&mut pkt, &[1; 9], 9, 1), Step::Dropped(_)));
        assert!(matches!(fill(&mut pkt, &[1; 8], 100, 7), Step::Filled));
        assert_eq!((pkt.len(), pkt.meta.orig_len, pkt.meta.ts_ns), (8, 100, 7));
        assert!(matches!(fill(&mut pkt, &[1; 4], 4, 7), Step::Filled));
        assert_eq!(pkt.meta.orig_len, 0);
    }

    #[test]
    fn link_type_look_ahead_stops_at_the_first_packet() {
        let mut buf = Vec::new();
        let mut w = PcapNgWriter::new(&mut buf).unwrap();
        w.write_pcapng_block(idb(DataLink::ETHERNET, vec![])).unwrap();
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::ZERO,
            original_len: 1,
            data: Cow::Borrowed(&[0]),
            options: vec![],
        })
        .unwrap();
        w.write_pcapng_block(idb(DataLink::RAW, vec![])).unwrap();
        assert_eq!(first_foreign_link_type(&buf).unwrap(), None);

        let mut buf = Vec::new();
        let mut w = PcapNgWriter::new(&mut buf).unwrap();
        w.write_pcapng_block(idb(DataLink::ETHERNET, vec![])).unwrap();
        w.write_pcapng_block(idb(DataLink::RAW, vec![])).unwrap();
        assert_eq!(first_foreign_link_type(&buf).unwrap(), Some(u32::from(DataLink::RAW)));
    }
}
