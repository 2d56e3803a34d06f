//! The dataplane's side of the guard channel: heartbeats to `flowsteer
//! guard` and the hand-over window they keep open.
//!
//! The guard listens on a Unix stream socket (`guard.heartbeat`); the
//! dataplane connects. Both directions carry 16-byte [`Frame`]s:
//!
//! * dataplane -> guard, every `heartbeat_ms`: `Heartbeat { sent_ns }`, the
//!   wall-clock time it was sent;
//! * guard -> dataplane: `Ack { sent_ns, clear_ns }` echoing it, sent only
//!   while no bypass is installed; `clear_ns` is when the kernel confirmed
//!   the guard's last removal of its bypass. An ack is a lease: the guard
//!   installs no bypass until `timeout_ms` after it received that heartbeat,
//!   so the dataplane may forward every frame received in
//!   `[clear_ns, sent_ns + lease)` ([`GuardSettings::lease`],
//!   `timeout_ms - 1`). See [`dataplane::handover`] for how workers apply it.
//!
//! The guard needs no message to know the dataplane died: the kernel closes
//! the socket of a dead process, and the guard reads EOF at once. A hang
//! (SIGSTOP, a stuck process) is a missed deadline.
//!
//! Hand-over, as this thread drives it:
//! * **start**: connect before the ports open. Connected: the window starts
//!   closed (a bypass may be carrying the traffic) and the first heartbeat
//!   is sent once the workers poll; the guard removes its bypass, then
//!   acks, and the window opens from the moment of the removal. Not connected: forward
//!   unguarded and retry every `heartbeat_ms`.
//! * **guard lost** (EOF): open the window (nobody can bypass now) and retry.
//! * **guard found again**: the new guard waits `timeout_ms` for a
//!   heartbeat before it bypasses anything, so forwarding goes on under an
//!   implied lease from the moment of connecting.
//! * **stop** (SIGTERM): close the window, then the socket: the guard
//!   bypasses at once, and no frame is forwarded by both.
//!
//! The thread sleeps between heartbeats, is pinned off the worker cores
//! when a free core exists, so busy-polling workers never delay it, and runs
//! at a low real-time priority ([`crate::sched`]) so other work does not.

use crate::guard::GuardSettings;
use dataplane::handover::Handover;
use dataplane::worker::wall_clock_ns;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes in a [`Frame`].
pub const FRAME_LEN: usize = 24;
const MAGIC: [u8; 4] = *b"FSG1";

/// One message on the guard channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The dataplane is alive; sent at `sent_ns` (CLOCK_REALTIME).
    Heartbeat {
        /// Send time, nanoseconds since the epoch.
        sent_ns: u64,
    },
    /// The guard received that heartbeat and has no bypass installed.
    Ack {
        /// The acknowledged heartbeat's send time.
        sent_ns: u64,
        /// Since when no bypass has been installed (CLOCK_REALTIME).
        clear_ns: u64,
    },
}

impl Frame {
    /// The frame on the wire: magic `FSG1`, kind (`H` or `A`), three zero
    /// bytes, then two little-endian u64: the heartbeat's send time and (in
    /// an ack) the time since which no bypass is installed, else 0.
    pub fn encode(self) -> [u8; FRAME_LEN] {
        let (kind, t, c) = match self {
            Frame::Heartbeat { sent_ns } => (b'H', sent_ns, 0),
            Frame::Ack { sent_ns, clear_ns } => (b'A', sent_ns, clear_ns),
        };
        let mut b = [0u8; FRAME_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = kind;
        b[8..16].copy_from_slice(&t.to_le_bytes());
        b[16..].copy_from_slice(&c.to_le_bytes());
        b
    }

    /// Reads a frame; `None` when it is not one (wrong magic or kind).
    pub fn decode(b: &[u8; FRAME_LEN]) -> Option<Frame> {
        if b[..4] != MAGIC || b[5..8] != [0, 0, 0] {
            return None;
        }
        let t = u64::from_le_bytes(b[8..16].try_into().ok()?);
        let c = u64::from_le_bytes(b[16..].try_into().ok()?);
        match b[4] {
            b'H' if c == 0 => Some(Frame::Heartbeat { sent_ns: t }),
            b'A' => Some(Frame::Ack { sent_ns: t, clear_ns: c }),
            _ => None,
        }
    }
}

/// Reads whole frames from a stream that may deliver them in pieces.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: [u8; FRAME_LEN],
    have: usize,
}

impl FrameReader {
    /// Reads once from `r`; returns the frame completed by it, if any.
    /// `Ok(None)` with nothing read means EOF (reported as `UnexpectedEof`).
    pub fn read_from(&mut self, r: &mut impl Read) -> io::Result<Option<[u8; FRAME_LEN]>> {
        let n = r.read(&mut self.buf[self.have..])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        self.have += n;
        if self.have < FRAME_LEN {
            return Ok(None);
        }
        self.have = 0;
        Ok(Some(self.buf))
    }
}

/// The dataplane's heartbeat: a connection attempt made before the ports
/// open, then a thread once the workers run.
pub struct Heartbeat {
    settings: GuardSettings,
    handover: Option<Arc<Handover>>,
    stream: Option<UnixStream>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// Tries to reach the guard once, before the ports open: the socket then
    /// has a lower descriptor than the packet sockets, and a dying process
    /// closes it first (closing a packet socket waits for an RCU grace
    /// period, milliseconds each), so the guard hears of the death sooner.
    pub fn connect(settings: &GuardSettings) -> Heartbeat {
        let stream = match UnixStream::connect(&settings.socket) {
            Ok(s) => {
                log::info!("guard: connected at {}; forwarding once it hands back", settings.socket.display());
                Some(s)
            }
            Err(e) => {
                log::warn!(
                    "guard: none at {} ({e}): forwarding unguarded, retrying every {} ms",
                    settings.socket.display(),
                    settings.heartbeat.as_millis()
                );
                None
            }
        };
        Heartbeat {
            settings: settings.clone(),
            handover: None,
            stream,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        }
    }

    /// Starts heartbeating once the workers poll (their window closed until
    /// now), on `core` if given. Connected: the window stays closed until the
    /// guard hands back. Not connected: it opens (forward unguarded).
    pub fn start(&mut self, handover: Arc<Handover>, core: Option<usize>) -> io::Result<()> {
        if self.stream.is_some() {
            handover.close();
        } else {
            handover.open();
        }
        self.handover = Some(Arc::clone(&handover));
        let mut link = Link { settings: self.settings.clone(), handover, conn: self.stream.take().map(Conn::new) };
        let stop = Arc::clone(&self.stop);
        let h = std::thread::Builder::new().name("heartbeat".into()).spawn(move || {
            if let Some(c) = core {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                    log::warn!("guard: could not pin the heartbeat thread to core {c}");
                }
            }
            if let Err(e) = crate::sched::realtime() {
                log::warn!("guard: heartbeat thread at normal priority ({e}): a busy host may delay heartbeats");
            }
            link.run(&stop);
        })?;
        self.thread = Some(h);
        Ok(())
    }

    /// Stops heartbeating: the window closes first, then the connection, so
    /// the guard's bypass takes over without a frame delivered twice.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(h) = &self.handover {
            h.close();
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

struct Conn {
    stream: UnixStream,
    reader: FrameReader,
}

impl Conn {
    fn new(stream: UnixStream) -> Conn {
        Conn { stream, reader: FrameReader::default() }
    }
}

/// The heartbeat thread's state.
struct Link {
    settings: GuardSettings,
    handover: Arc<Handover>,
    conn: Option<Conn>,
}

impl Link {
    fn run(&mut self, stop: &AtomicBool) {
        let period = self.settings.heartbeat;
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let Some(conn) = self.conn.as_mut() else {
                std::thread::sleep(period);
                self.reconnect();
                next = Instant::now();
                continue;
            };
            let now = Instant::now();
            if now >= next {
                let hb = Frame::Heartbeat { sent_ns: wall_clock_ns() }.encode();
                // A guard that stopped reading must not stall this thread: the write times out.
                if let Err(e) = conn.stream.set_write_timeout(Some(period)).and_then(|_| conn.stream.write_all(&hb)) {
                    self.lost(&e);
                    continue;
                }
                next += period;
                if next < now {
                    next = now + period;
                }
            }
            let wait = next.saturating_duration_since(Instant::now()).max(Duration::from_micros(100));
            if let Err(e) = conn.stream.set_read_timeout(Some(wait)) {
                self.lost(&e);
                continue;
            }
            match conn.reader.read_from(&mut conn.stream) {
                Ok(Some(b)) => match Frame::decode(&b) {
                    Some(Frame::Ack { sent_ns, clear_ns }) => {
                        self.handover.grant(sent_ns.saturating_add(self.settings.lease().as_nanos() as u64), clear_ns)
                    }
                    _ => {
                        let e = io::Error::new(io::ErrorKind::InvalidData, "not a guard acknowledgement");
                        self.lost(&e);
                    }
                },
                Ok(None) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.lost(&e),
            }
        }
    }

    /// The guard is gone: nobody can bypass, so forward unguarded.
    fn lost(&mut self, e: &io::Error) {
        self.handover.open();
        self.conn = None;
        log::warn!("guard: connection lost ({e}): forwarding unguarded, reconnecting");
    }

    fn reconnect(&mut self) {
        if let Ok(s) = UnixStream::connect(&self.settings.socket) {
            // A new guard bypasses nothing until `timeout` after it accepted us: an implied lease.
            let now = wall_clock_ns();
            self.handover.grant(now.saturating_add(self.settings.lease().as_nanos() as u64), 0);
            log::info!("guard: connected at {}", self.settings.socket.display());
            self.conn = Some(Conn::new(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        for f in [Frame::Heartbeat { sent_ns: 1_700_000_000_123_456_789 }, Frame::Ack { sent_ns: 7, clear_ns: 3 }] {
            assert_eq!(Frame::decode(&f.encode()), Some(f));
        }
        let mut b = Frame::Ack { sent_ns: 7, clear_ns: 3 }.encode();
        b[4] = b'X';
        assert_eq!(Frame::decode(&b), None);
        let mut b = Frame::Ack { sent_ns: 7, clear_ns: 3 }.encode();
        b[0] = b'G';
        assert_eq!(Frame::decode(&b), None);
    }

    #[test]
    fn a_frame_split_across_reads_is_reassembled() {
        let bytes = Frame::Heartbeat { sent_ns: 42 }.encode();
        let mut r = FrameReader::default();
        let mut first = &bytes[..5];
        assert_eq!(r.read_from(&mut first).unwrap(), None);
        let mut rest = &bytes[5..];
        assert_eq!(r.read_from(&mut rest).unwrap(), Some(bytes));
        let mut empty: &[u8] = &[];
        assert_eq!(r.read_from(&mut empty).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
