//! The pcapng sink: copies written to capture files Wireshark, tshark, Zeek
//! and Arkime open as they are, with rotation, retention and recovery from a
//! full disk.
//!
//! Every file says where each copy came from and why it was taken, without a
//! side channel:
//! * one Interface Description Block per ingress port seen in that file,
//!   named after the port (`if_name`, shown by tshark as
//!   `frame.interface_name`), written when the port's first copy in the file
//!   arrives; nanosecond timestamps (`if_tsresol = 9`);
//! * one Enhanced Packet Block per copy: the copied bytes as captured data,
//!   the packet's length on the wire as original length (a sliced copy keeps
//!   it), and a comment `flowsteer rule=<rule name> chain=<chain name>` (shown
//!   as `frame.comment`).
//!
//! Every rotated file starts with its own section header and interface
//! blocks, so each one is a complete capture that tools read on its own.
//!
//! Blocks are assembled in a memory buffer and reach the file in large writes
//! made of whole blocks only. So the sink always knows the offset of the last
//! complete block on disk, and after a failed write (disk full) it cuts the
//! file back to it: a broken file stays readable up to its last complete copy.
//!
//! Bounded work per call: one block (two for a port's first copy in a file),
//! plus one buffer write when the buffer is full; no allocation in steady
//! state (the block, its comment and the buffer are reused). Opening a new
//! file (rotation, recovery) allocates.

use super::{CopyRecord, Names, Sink, SinkError};
use dataplane::packet::PortId;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::{Block, PcapNgWriter};
use pcap_file::{DataLink, Endianness, PcapError};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Buffered bytes that trigger a write to the file: copies reach the file
/// system in large writes.
const WRITE_BUFFER: usize = 256 * 1024;
/// Room for one more block on top of a full buffer, so the buffer is
/// allocated once for ordinary frames (jumbo frames up to 64 KiB plus
/// comment).
const BLOCK_ROOM: usize = 66 * 1024;
/// Marks a port with no interface block in the current file yet.
const NO_IFACE: u32 = u32::MAX;

/// When the sink forces written copies to stable storage (fsync).
///
/// Without it the kernel writes back when it likes: fastest, but a host
/// crash (not a process crash) loses the last seconds of copies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fsync {
    /// Never: for captures that may be lost with the host.
    #[default]
    Never,
    /// Each file when it is closed (rotation, recovery, shutdown): every
    /// finished file survives a host crash, at one sync per file.
    OnRotate,
    /// At every flush, and when a file is closed. The sink thread flushes
    /// when its queue runs empty and every few thousand copies, so copies
    /// counted as written survive a host crash; costs a disk round trip per
    /// flush.
    EveryFlush,
}

/// Rotation, retention and durability of a [`PcapngSink`]. The default is
/// one file, never rotated, never synced.
#[derive(Clone, Debug, Default)]
pub struct PcapngOptions {
    /// Start a new file before a copy would take the current one past this
    /// many bytes (a file holding no copy yet takes the copy whatever its
    /// size, so a single huge copy still gets written).
    pub rotate_bytes: Option<u64>,
    /// Start a new file once the current one has been open this long and
    /// holds at least one copy: checked by the monotonic clock at each copy
    /// and at each flush (so an idle sink still closes its file on time).
    /// Copy timestamps are not used: a replayed capture would otherwise
    /// rotate by the time it was recorded.
    pub rotate_every: Option<Duration>,
    /// Keep at most this many of the files this sink created, deleting the
    /// oldest after each new file is opened. Files the sink did not create
    /// (an earlier run's) are never deleted. Needs rotation.
    pub keep: Option<usize>,
    /// When written data is synced to disk.
    pub fsync: Fsync,
}

/// pcapng files receiving copies, one interface per ingress port.
///
/// Configuration ([`PcapngSink::with_options`]): a path or, with rotation, a
/// file name pattern (see [`PcapngSink::with_options`] for its tokens);
/// `rotate_bytes`, `rotate_every`, `keep` and `fsync` ([`PcapngOptions`]).
///
/// Counters: the sink keeps none of its own; its [`super::SinkQueue`]
/// counts copies written (flushed), lost to errors, and dropped while down.
///
/// Failures: an I/O error (disk full, file removed, directory gone) is
/// returned as [`SinkError::Io`] naming the sink, so the sink thread marks it
/// down. The file is cut back to its last complete block, so it stays
/// readable up to its last complete copy. The next copy after that (the
/// thread's retry) recovers by itself: a rotating sink starts a new file with
/// the next sequence number (deleting the broken one if nothing of it reached
/// the disk); a single-file sink carries on in the same file after its last
/// complete block, starting a new pcapng section (a section header and its
/// interface blocks), which every pcapng reader accepts. If writing still
/// fails the copy fails too, and the thread keeps retrying with backoff: when
/// space returns, copies flow again without anyone's help.
pub struct PcapngSink {
    name: String,
    naming: Naming,
    opts: PcapngOptions,
    shb: SectionHeaderBlock<'static>,
    /// The file being written.
    out: Out,
    /// The sequence number (`%n`) of the next file.
    next_seq: u64,
    /// Files this sink created that still exist, oldest first (the current
    /// one last); only these are ever deleted by `keep`.
    created: VecDeque<PathBuf>,
    /// The packet block, reused for every copy: its data and comment keep
    /// their capacity, so steady-state writes allocate nothing.
    epb: EnhancedPacketBlock<'static>,
    /// Set by an I/O error, cleared when the next copy recovers.
    broken: bool,
}

/// How files are named.
enum Naming {
    /// One file, used as given.
    Fixed(PathBuf),
    /// Rotated files named after a pattern.
    Rotating(Pattern),
}

/// One open file and the pcapng section being written to it.
struct Out {
    file: File,
    path: PathBuf,
    /// Blocks not yet written to the file. Only whole blocks are ever
    /// written, so the file always ends on a block boundary.
    writer: PcapNgWriter<Vec<u8>>,
    /// Bytes in the file, all of them complete blocks.
    on_disk: u64,
    /// Copies in the current section.
    packets: u64,
    opened: Instant,
    /// Interface id (IDB index in the section) of each port, by port id.
    ifaces: Vec<u32>,
}

impl Out {
    fn new(file: File, path: PathBuf, buf: Vec<u8>, shb: &SectionHeaderBlock<'static>) -> Result<Out, PcapError> {
        let mut out = Out {
            file,
            path,
            writer: PcapNgWriter::new(Vec::new())?,
            on_disk: 0,
            packets: 0,
            opened: Instant::now(),
            ifaces: Vec::new(),
        };
        out.start_section(buf, shb)?;
        Ok(out)
    }

    /// Starts a new section at the end of what is on disk, in `buf`.
    fn start_section(&mut self, mut buf: Vec<u8>, shb: &SectionHeaderBlock<'static>) -> Result<(), PcapError> {
        buf.clear();
        self.writer = PcapNgWriter::with_section_header(buf, shb.clone())?;
        self.packets = 0;
        self.opened = Instant::now();
        self.ifaces.clear();
        Ok(())
    }

    fn buffered(&self) -> usize {
        self.writer.get_ref().len()
    }
}

impl PcapngSink {
    /// Creates (truncates) `path`, one file without rotation, and writes the
    /// section header (`shb_userappl = "flowsteer"`). `name` labels the sink
    /// in errors and logs.
    pub fn create(name: &str, path: &Path) -> Result<PcapngSink, SinkError> {
        PcapngSink::with_options(name, path, PcapngOptions::default())
    }

    /// A sink writing to `pattern` as `opts` say.
    ///
    /// Without rotation (`rotate_bytes` and `rotate_every` both unset) the
    /// path is used as it is, and created or truncated.
    ///
    /// With rotation, each file's name comes from the pattern with these
    /// tokens replaced, so files sort by name in the order they were written:
    /// * `%Y` year (4 digits), `%m` month, `%d` day, `%H` hour, `%M` minute,
    ///   `%S` second (2 digits each): the UTC time the file was opened;
    /// * `%n` the file's sequence number, from 0, zero-padded to 5 digits;
    /// * `%%` a literal `%`.
    ///
    /// A pattern without `%n` gets `-%n` inserted before the file name's
    /// extension (or at its end), so two files opened in the same second never
    /// share a name, e.g. `ids-%Y%m%d.pcapng` gives `ids-20240131-00000.pcapng`.
    /// Files are created exclusively: an existing file (say, from an earlier
    /// run) is never overwritten; its number is skipped. Directories are not
    /// created.
    ///
    /// Errors: [`SinkError::Format`] for a bad configuration (an unknown
    /// token, a zero size or period or `keep`, `keep` without rotation, a
    /// pattern that is not UTF-8); [`SinkError::Io`] when the first file
    /// cannot be created.
    pub fn with_options(name: &str, pattern: &Path, opts: PcapngOptions) -> Result<PcapngSink, SinkError> {
        let config = |message: String| SinkError::Format { sink: name.to_string(), message };
        let rotating = opts.rotate_bytes.is_some() || opts.rotate_every.is_some();
        if opts.rotate_bytes == Some(0) {
            return Err(config("rotate_bytes must be at least 1".into()));
        }
        if opts.rotate_every == Some(Duration::ZERO) {
            return Err(config("rotate_every must be longer than zero".into()));
        }
        match opts.keep {
            Some(0) => return Err(config("keep must be at least 1".into())),
            Some(_) if !rotating => return Err(config("keep needs rotation (rotate_bytes or rotate_every)".into())),
            _ => {}
        }
        let naming = if rotating {
            let text = pattern
                .to_str()
                .ok_or_else(|| config(format!("file name pattern {} is not UTF-8", pattern.display())))?;
            Naming::Rotating(Pattern::parse(text).map_err(config)?)
        } else {
            Naming::Fixed(pattern.to_path_buf())
        };
        let shb = SectionHeaderBlock {
            endianness: Endianness::native(),
            options: vec![SectionHeaderOption::UserApplication("flowsteer".into())],
            ..Default::default()
        };
        let io = |source| SinkError::Io { sink: name.to_string(), source };
        let mut next_seq = 0;
        let (file, path) = open_file(&naming, &mut next_seq).map_err(io)?;
        let out = Out::new(file, path, Vec::with_capacity(WRITE_BUFFER + BLOCK_ROOM), &shb)
            .map_err(|e| sink_error(name, e))?;
        let mut created = VecDeque::new();
        if rotating {
            created.push_back(out.path.clone());
        }
        log::info!("sink {name}: writing {}", out.path.display());
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::ZERO,
            original_len: 0,
            data: Cow::Owned(Vec::new()),
            options: vec![EnhancedPacketOption::Comment(Cow::Owned(String::new()))],
        };
        Ok(PcapngSink { name: name.to_string(), naming, opts, shb, out, next_seq, created, epb, broken: false })
    }

    /// The interface id of `port` in the current section, writing its
    /// description block on first use.
    fn iface(&mut self, port: PortId, names: &Names) -> Result<u32, SinkError> {
        let slot = usize::from(port);
        let out = &mut self.out;
        match out.ifaces.get(slot) {
            Some(&id) if id != NO_IFACE => return Ok(id),
            Some(_) => {}
            None => out.ifaces.resize(slot + 1, NO_IFACE),
        }
        let id = out.writer.interfaces().len() as u32;
        let idb = InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![
                InterfaceDescriptionOption::IfName(names.port(port).into_owned().into()),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        out.writer.write_pcapng_block(idb).map_err(|e| sink_error(&self.name, e))?;
        out.ifaces[slot] = id;
        Ok(id)
    }

    /// Loads `rec` into the reused packet block (all but its interface id).
    fn fill_epb(&mut self, rec: &CopyRecord, names: &Names) {
        let pkt = &rec.pkt;
        let epb = &mut self.epb;
        epb.timestamp = match pkt.meta.ts_ns {
            // Unstamped copies get the time they are written: close enough,
            // and better than 1970.
            0 => SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
            ts => Duration::from_nanos(ts),
        };
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
    }

    /// Appends the loaded packet block (and its port's interface block, if
    /// new to the section) to the buffer.
    fn put_copy(&mut self, port: PortId, names: &Names) -> Result<(), SinkError> {
        self.epb.interface_id = self.iface(port, names)?;
        // `write_block` takes a `Block`; move the reused block in and back out.
        let block = Block::EnhancedPacket(std::mem::replace(&mut self.epb, empty_epb()));
        let res = self.out.writer.write_block(&block);
        if let Block::EnhancedPacket(epb) = block {
            self.epb = epb;
        }
        res.map(drop).map_err(|e| sink_error(&self.name, e))
    }

    /// True when time rotation is due: the file holds a copy and has been
    /// open for the whole period.
    fn time_is_up(&self) -> bool {
        self.opts.rotate_every.is_some_and(|period| self.out.packets > 0 && self.out.opened.elapsed() >= period)
    }

    /// Writes the buffered blocks to the file.
    fn spill(&mut self) -> Result<(), SinkError> {
        let out = &mut self.out;
        if out.buffered() == 0 {
            return Ok(());
        }
        match out.file.write_all(out.writer.get_ref()) {
            Ok(()) => {
                out.on_disk += out.buffered() as u64;
                out.writer.get_mut().clear();
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Writes out the current file and syncs it as the policy says: it is
    /// about to be closed.
    fn finish_file(&mut self) -> Result<(), SinkError> {
        self.spill()?;
        if self.opts.fsync != Fsync::Never {
            self.out.file.sync_all().map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Closes the current file and opens the next one.
    fn rotate(&mut self) -> Result<(), SinkError> {
        self.finish_file()?;
        self.open_next()
    }

    /// Opens the next rotated file, makes it current, and applies `keep`.
    fn open_next(&mut self) -> Result<(), SinkError> {
        let (file, path) = open_file(&self.naming, &mut self.next_seq).map_err(|e| self.fail(e))?;
        // The old buffer moves to the new file; the old writer keeps an empty one.
        let buf = std::mem::take(self.out.writer.get_mut());
        let new = Out::new(file, path, buf, &self.shb).map_err(|e| sink_error(&self.name, e))?;
        let old = std::mem::replace(&mut self.out, new);
        log::info!("sink {}: writing {}", self.name, self.out.path.display());
        if old.on_disk == 0 {
            // A file whose section header never reached the disk holds nothing:
            // it goes rather than lingering as an empty file.
            self.forget(&old.path);
        }
        self.created.push_back(self.out.path.clone());
        if let Some(keep) = self.opts.keep {
            while self.created.len() > keep {
                let Some(oldest) = self.created.pop_front() else { break };
                remove(&self.name, &oldest);
            }
        }
        Ok(())
    }

    /// Deletes a file this sink created and stops tracking it.
    fn forget(&mut self, path: &Path) {
        self.created.retain(|p| p != path);
        remove(&self.name, path);
    }

    /// Marks the sink broken after an I/O error and cuts the file back to
    /// its last complete block; the buffered blocks are lost.
    fn fail(&mut self, source: io::Error) -> SinkError {
        self.broken = true;
        let out = &mut self.out;
        out.writer.get_mut().clear();
        if let Err(e) = out.file.set_len(out.on_disk) {
            log::warn!(
                "sink {}: cannot cut {} back to its last complete block ({} bytes): {e}",
                self.name,
                out.path.display(),
                out.on_disk
            );
        }
        SinkError::Io { sink: self.name.clone(), source }
    }

    /// After an I/O error: starts writing again (see the type's docs).
    fn recover(&mut self) -> Result<(), SinkError> {
        match self.naming {
            Naming::Fixed(_) => {
                // One file was asked for: carry on in it, after its last complete block.
                let out = &mut self.out;
                let at = out.on_disk;
                out.file.seek(SeekFrom::Start(at)).map_err(|e| self.fail(e))?;
                let buf = std::mem::take(self.out.writer.get_mut());
                self.out.start_section(buf, &self.shb).map_err(|e| sink_error(&self.name, e))?;
                log::info!("sink {}: writing {} again from byte {at}", self.name, self.out.path.display());
            }
            Naming::Rotating(_) => self.open_next()?,
        }
        self.broken = false;
        Ok(())
    }
}

/// Creates the file for `naming`: the fixed path (truncated), or the next
/// free name from the pattern, advancing `seq` past every number tried.
fn open_file(naming: &Naming, seq: &mut u64) -> io::Result<(File, PathBuf)> {
    match naming {
        Naming::Fixed(path) => Ok((File::create(path)?, path.clone())),
        Naming::Rotating(pattern) => loop {
            let path = pattern.render(*seq, SystemTime::now());
            *seq += 1;
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((file, path)),
                // Not ours: never overwritten (nor ever deleted); the next number is free
                // sooner or later, as every number gives a new name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        },
    }
}

fn remove(sink: &str, path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => log::debug!("sink {sink}: deleted {}", path.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("sink {sink}: cannot delete {}: {e}", path.display()),
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
        if self.broken {
            self.recover()?;
        }
        if self.time_is_up() {
            self.rotate()?;
        }
        self.fill_epb(rec, names);
        let port = rec.pkt.meta.port;
        let before = self.out.buffered();
        self.put_copy(port, names)?;
        if let Some(limit) = self.opts.rotate_bytes {
            let size = self.out.on_disk + self.out.buffered() as u64;
            if size > limit && self.out.packets > 0 {
                // The copy would take the file past its limit: it opens the next file instead.
                self.out.writer.get_mut().truncate(before);
                self.rotate()?;
                self.put_copy(port, names)?;
            }
        }
        self.out.packets += 1;
        if self.out.buffered() >= WRITE_BUFFER {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes out buffered copies (rotating first when the file's time is up)
    /// and syncs them with [`Fsync::EveryFlush`]. While the sink is broken
    /// (between an I/O error and the next copy) it fails: the copies since
    /// the last flush were lost.
    fn flush(&mut self) -> Result<(), SinkError> {
        if self.broken {
            return Err(SinkError::Io {
                sink: self.name.clone(),
                source: io::Error::other(
                    "copies since the last flush were lost to a write error; the next copy retries",
                ),
            });
        }
        if self.time_is_up() {
            self.rotate()?;
        }
        self.spill()?;
        if self.opts.fsync == Fsync::EveryFlush {
            self.out.file.sync_data().map_err(|e| self.fail(e))?;
        }
        Ok(())
    }
}

/// An empty packet block: the initial value of the block the sink reuses
/// for every copy (it owns no memory, so creating it allocates nothing).
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
            // The loss was already reported to the caller; a file of which
            // nothing reached the disk goes.
            if self.out.on_disk == 0 && matches!(self.naming, Naming::Rotating(_)) {
                let path = self.out.path.clone();
                self.forget(&path);
            }
            return;
        }
        if let Err(e) = self.finish_file() {
            log::error!("{e}: copies still buffered at shutdown are lost");
        }
    }
}

/// A parsed file name pattern.
#[derive(Debug, PartialEq, Eq)]
struct Pattern {
    parts: Vec<Part>,
}

#[derive(Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Seq,
}

impl Pattern {
    /// Parses `text`, inserting `-%n` when it has no sequence number.
    fn parse(text: &str) -> Result<Pattern, String> {
        let pattern = Pattern::parse_tokens(text)?;
        if pattern.parts.contains(&Part::Seq) {
            return Ok(pattern);
        }
        let name_start = text.rfind('/').map_or(0, |i| i + 1);
        let with_seq = match text[name_start..].rfind('.') {
            // A leading dot (a hidden file) is not an extension.
            Some(dot) if dot > 0 => format!("{}-%n{}", &text[..name_start + dot], &text[name_start + dot..]),
            _ => format!("{text}-%n"),
        };
        Pattern::parse_tokens(&with_seq)
    }

    fn parse_tokens(text: &str) -> Result<Pattern, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                lit.push(c);
                continue;
            }
            let part = match chars.next() {
                Some('%') => {
                    lit.push('%');
                    continue;
                }
                Some('Y') => Part::Year,
                Some('m') => Part::Month,
                Some('d') => Part::Day,
                Some('H') => Part::Hour,
                Some('M') => Part::Minute,
                Some('S') => Part::Second,
                Some('n') => Part::Seq,
                Some(other) => {
                    return Err(format!(
                        "unknown token %{other} in file name pattern {text:?} (known: %Y %m %d %H %M %S %n %%)"
                    ))
                }
                None => return Err(format!("file name pattern {text:?} ends in a lone % (write %% for a literal %)")),
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(part);
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Pattern { parts })
    }

    /// The name of file number `seq` opened at `now`.
    fn render(&self, seq: u64, now: SystemTime) -> PathBuf {
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let (year, month, day) = civil_from_days(secs / 86_400);
        let sod = secs % 86_400;
        let mut s = String::new();
        for part in &self.parts {
            // Writing into a String cannot fail.
            let _ = match part {
                Part::Lit(l) => s.write_str(l),
                Part::Year => write!(s, "{year:04}"),
                Part::Month => write!(s, "{month:02}"),
                Part::Day => write!(s, "{day:02}"),
                Part::Hour => write!(s, "{:02}", sod / 3600),
                Part::Minute => write!(s, "{:02}", sod % 3600 / 60),
                Part::Second => write!(s, "{:02}", sod % 60),
                Part::Seq => write!(s, "{seq:05}"),
            };
        }
        PathBuf::from(s)
    }
}

/// The proleptic Gregorian (year, month, day) of day `days` since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for days after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
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
        let names =
            Names { ports: vec!["vm-a".into(), "vm-b".into()], rules: vec!["web".to_string()].into(), chains: vec![] };
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
    fn write_errors_surface_as_io_errors_and_every_copy_retries() {
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
        // Broken: a flush cannot make lost copies written.
        assert!(sink.flush().unwrap_err().to_string().contains("lost"));
        // The next copy is the retry: it starts over (a new section) and is
        // buffered; the disk is still full, so writing it out fails again.
        sink.write(&record(0, 0, 60, 0), &names).unwrap();
        assert!(matches!(sink.flush(), Err(SinkError::Io { .. })));
    }

    #[test]
    fn bad_options_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let pattern = dir.path().join("c-%n.pcapng");
        let rot = |o: PcapngOptions| PcapngOptions { rotate_bytes: Some(1 << 20), ..o };
        let cases = [
            (dir.path().join("c-%q.pcapng"), rot(PcapngOptions::default()), "unknown token %q"),
            (dir.path().join("c-%"), rot(PcapngOptions::default()), "lone %"),
            (pattern.clone(), PcapngOptions { rotate_bytes: Some(0), ..Default::default() }, "rotate_bytes"),
            (
                pattern.clone(),
                PcapngOptions { rotate_every: Some(Duration::ZERO), ..Default::default() },
                "rotate_every",
            ),
            (pattern.clone(), rot(PcapngOptions { keep: Some(0), ..Default::default() }), "keep must be"),
            (pattern.clone(), PcapngOptions { keep: Some(2), ..Default::default() }, "keep needs rotation"),
        ];
        for (path, opts, want) in cases {
            let err = PcapngSink::with_options("cfg", &path, opts).err().unwrap();
            assert!(matches!(err, SinkError::Format { .. }) && err.to_string().contains(want), "{err}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing created for a bad configuration");
    }

    #[test]
    fn patterns_render_utc_time_and_a_padded_sequence_number() {
        // 2024-02-29 23:59:58 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_198);
        let render = |p: &str, seq| Pattern::parse(p).unwrap().render(seq, t).to_str().unwrap().to_string();
        assert_eq!(render("/d/ids-%Y%m%d-%H%M%S-%n.pcapng", 7), "/d/ids-20240229-235958-00007.pcapng");
        assert_eq!(render("/d/ids-%Y.pcapng", 12), "/d/ids-2024-00012.pcapng", "-%n goes before the extension");
        assert_eq!(render("/d.x/ids", 1), "/d.x/ids-00001", "no extension: -%n goes at the end");
        assert_eq!(render("/d/.cap", 0), "/d/.cap-00000", "a leading dot is no extension");
        assert_eq!(render("/d/100%%-%n", 123_456), "/d/100%-123456");
        assert_eq!(render("%n%%n", 3), "00003%n", "%%n is literal, not a sequence number");
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
        assert_eq!(civil_from_days(20_088), (2024, 12, 31));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1), "2100 is not a leap year");
    }
}
