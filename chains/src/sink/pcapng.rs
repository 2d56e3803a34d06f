//! The pcapng sink: copies written to a capture file Wireshark, tshark, Zeek
//! and Arkime open as it is.
//!
//! The file says where each copy came from and why it was taken, without a
//! side channel:
//! * one Interface Description Block per ingress port, named after the port
//!   (`if_name`, shown by tshark as `frame.interface_name`), written when the
//!   port's first copy arrives; nanosecond timestamps (`if_tsresol = 9`);
//! * one Enhanced Packet Block per copy: the copied bytes as captured data,
//!   the packet's length on the wire as original length (a sliced copy keeps
//!   it), and a comment `flowsteer rule=<rule name> chain=<chain name>` (shown
//!   as `frame.comment`).
//!
//! Counters and failures: an I/O error is returned as [`SinkError::Io`]
//! naming the sink; the caller's sink-health logic counts it and decides.
//! Bounded work per call: one block (two for a port's first copy); no
//! allocation in steady state (the block and its comment are reused; only a
//! new port's interface block allocates).

use super::{CopyRecord, Names, Sink, SinkError};
use dataplane::packet::PortId;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::{Block, PcapNgWriter};
use pcap_file::{DataLink, Endianness, PcapError};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Output buffer: copies reach the file system in large writes.
const WRITE_BUFFER: usize = 256 * 1024;
/// Marks a port with no interface block yet.
const NO_IFACE: u32 = u32::MAX;

/// A pcapng file receiving copies, one interface per ingress port.
pub struct PcapngSink {
    name: String,
    writer: PcapNgWriter<BufWriter<File>>,
    /// Interface id (IDB index) of each port, indexed by port id.
    ifaces: Vec<u32>,
    /// The packet block, reused for every copy: its data and comment keep
    /// their capacity, so steady-state writes allocate nothing.
    epb: EnhancedPacketBlock<'static>,
    /// Set by the first I/O error. A block may have been cut in half, and
    /// anything appended after it would be unreadable, so the sink refuses
    /// further copies instead of writing garbage.
    broken: bool,
}

impl PcapngSink {
    /// Creates (truncates) `path` and writes the section header
    /// (`shb_userappl = "flowsteer"`). `name` labels the sink in errors and logs.
    pub fn create(name: &str, path: &Path) -> Result<PcapngSink, SinkError> {
        let io = |source| SinkError::Io { sink: name.to_string(), source };
        let file = File::create(path).map_err(io)?;
        let shb = SectionHeaderBlock {
            endianness: Endianness::native(),
            options: vec![SectionHeaderOption::UserApplication("flowsteer".into())],
            ..Default::default()
        };
        let writer = PcapNgWriter::with_section_header(BufWriter::with_capacity(WRITE_BUFFER, file), shb)
            .map_err(|e| sink_error(name, e))?;
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::ZERO,
            original_len: 0,
            data: Cow::Owned(Vec::new()),
            options: vec![EnhancedPacketOption::Comment(Cow::Owned(String::new()))],
        };
        Ok(PcapngSink { name: name.to_string(), writer, ifaces: Vec::new(), epb, broken: false })
    }

    /// The interface id of `port`, writing its description block on first use.
    fn iface(&mut self, port: PortId, names: &Names) -> Result<u32, SinkError> {
        let slot = usize::from(port);
        match self.ifaces.get(slot) {
            Some(&id) if id != NO_IFACE => return Ok(id),
            Some(_) => {}
            None => self.ifaces.resize(slot + 1, NO_IFACE),
        }
        let id = self.writer.interfaces().len() as u32;
        let idb = InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![
                InterfaceDescriptionOption::IfName(names.port(port).into_owned().into()),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        self.writer.write_pcapng_block(idb).map_err(|e| sink_error(&self.name, e))?;
        self.ifaces[slot] = id;
        Ok(id)
    }
}

impl PcapngSink {
    fn check_usable(&self) -> Result<(), SinkError> {
        match self.broken {
            false => Ok(()),
            true => Err(SinkError::Io {
                sink: self.name.clone(),
                source: std::io::Error::other("stopped after an earlier write error"),
            }),
        }
    }

    fn note(&mut self, e: &SinkError) {
        if matches!(e, SinkError::Io { .. }) {
            self.broken = true;
        }
    }
}

fn sink_error(sink: &str, e: PcapError) -> SinkError {
    match e {
        PcapError::IoError(source) => SinkError::Io { sink: sink.to_string(), source },
        other => SinkError::Format { sink: sink.to_string(), message: other.to_string() },
    }
}

impl Sink for PcapngSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, rec: &CopyRecord, names: &Names) -> Result<(), SinkError> {
        self.check_usable()?;
        let pkt = &rec.pkt;
        let interface_id = self.iface(pkt.meta.port, names).inspect_err(|e| self.note(e))?;
        let ts_ns = match pkt.meta.ts_ns {
            // Unstamped copies get the time they are written: close enough,
            // and better than 1970.
            0 => SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
            ts => Duration::from_nanos(ts),
        };
        let epb = &mut self.epb;
        epb.interface_id = interface_id;
        epb.timestamp = ts_ns;
        epb.original_len = u32::try_from(pkt.wire_len().max(pkt.len())).unwrap_or(u32::MAX);
        let data = epb.data.to_mut();
        data.clear();
        data.extend_from_slice(pkt.data());
        if let Some(EnhancedPacketOption::Comment(comment)) = epb.options.first_mut() {
            let comment = comment.to_mut();
            comment.clear();
            // Writing into a String cannot fail.
            let _ = write!(comment, "flowsteer rule={} chain={}", names.rule(rec.rule), names.chain(rec.chain));
        }
        // `write_block` takes a `Block`; move the reused block in and back out.
        let block = Block::EnhancedPacket(std::mem::replace(&mut self.epb, empty_epb()));
        let res = self.writer.write_block(&block);
        if let Block::EnhancedPacket(epb) = block {
            self.epb = epb;
        }
        res.map(drop).map_err(|e| sink_error(&self.name, e)).inspect_err(|e| self.note(e))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.check_usable()?;
        self.writer
            .get_mut()
            .flush()
            .map_err(|source| SinkError::Io { sink: self.name.clone(), source })
            .inspect_err(|e| self.note(e))
    }
}

/// A placeholder block that owns no memory.
fn empty_epb() -> EnhancedPacketBlock<'static> {
    EnhancedPacketBlock {
        interface_id: 0,
        timestamp: Duration::ZERO,
        original_len: 0,
        data: Cow::Borrowed(&[]),
        options: Vec::new(),
    }
}

impl Drop for PcapngSink {
    fn drop(&mut self) {
        if self.broken {
            // Already reported to the caller.
            return;
        }
        if let Err(e) = self.flush() {
            log::error!("{e}: copies still buffered at shutdown are lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::packet::{Meta, Packet};
    use pcap_file::pcapng::PcapNgReader;

    fn record(port: PortId, rule: u32, len: usize, orig_len: u32) -> CopyRecord {
        let meta = Meta { port, ts_ns: 1_700_000_000_000_000_001, orig_len };
        CopyRecord { pkt: Packet::from_slice(&vec![0xab; len], meta), rule, chain: 3 }
    }

    #[test]
    fn one_interface_per_port_and_a_comment_per_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copies.pcapng");
        let names = Names { ports: vec!["vm-a".into(), "vm-b".into()], rules: vec!["web".into()], chains: vec![] };
        let mut sink = PcapngSink::create("cap", &path).unwrap();
        sink.write(&record(1, 0, 60, 0), &names).unwrap();
        sink.write(&record(0, 0, 64, 1500), &names).unwrap();
        sink.write(&record(1, 7, 60, 0), &names).unwrap();
        sink.flush().unwrap();
        drop(sink);

        let mut reader = PcapNgReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.section().options, [SectionHeaderOption::UserApplication("flowsteer".into())]);
        let mut packets = Vec::new();
        while let Some(block) = reader.next_block() {
            if let Block::EnhancedPacket(epb) = block.unwrap() {
                packets.push(epb.into_owned());
            }
        }
        let if_names: Vec<_> = reader
            .interfaces()
            .iter()
            .map(|i| {
                assert!(i.options.contains(&InterfaceDescriptionOption::IfTsResol(9)));
                i.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                    _ => None,
                })
            })
            .collect();
        assert_eq!(if_names, [Some("vm-b".to_string()), Some("vm-a".to_string())]);
        assert_eq!(packets.iter().map(|p| p.interface_id).collect::<Vec<_>>(), [0, 1, 0]);
        assert_eq!((packets[1].data.len(), packets[1].original_len), (64, 1500));
        assert_eq!(packets[0].timestamp.as_nanos(), 1_700_000_000_000_000_001);
        let comments: Vec<_> = packets.iter().map(|p| p.options.clone()).collect();
        assert_eq!(comments[0], [EnhancedPacketOption::Comment("flowsteer rule=web chain=chain3".into())]);
        assert_eq!(comments[2], [EnhancedPacketOption::Comment("flowsteer rule=rule7 chain=chain3".into())]);
    }

    #[test]
    fn create_error_names_the_sink() {
        let err = PcapngSink::create("cap0", Path::new("/nonexistent-dir/x.pcapng")).err().unwrap();
        assert!(matches!(err, SinkError::Io { .. }));
        assert!(err.to_string().starts_with("cap0: "), "{err}");
    }

    #[test]
    fn write_errors_surface_as_io_errors() {
        let mut sink = PcapngSink::create("full", Path::new("/dev/full")).unwrap();
        let names = Names::default();
        let mut result = Ok(());
        for _ in 0..1000 {
            result = sink.write(&record(0, 0, 1500, 0), &names);
            if result.is_err() {
                break;
            }
        }
        let err = result.err().or_else(|| sink.flush().err()).expect("/dev/full must fail");
        assert!(matches!(err, SinkError::Io { ref sink, .. } if sink == "full"), "{err}");
        // Nothing more is appended to a file that may end in half a block.
        let again = sink.write(&record(0, 0, 60, 0), &names).unwrap_err();
        assert!(again.to_string().contains("earlier write error"), "{again}");
        assert!(sink.flush().is_err());
    }
}
