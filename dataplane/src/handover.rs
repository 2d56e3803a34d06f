//! The hand-over window between the dataplane and the guard's kernel bypass.
//!
//! `flowsteer guard` (a separate process) installs a kernel bypass between
//! the Linux interfaces of a link or a bridge when the dataplane dies or
//! hangs. A packet socket receives every frame *before* tc ingress and the
//! bridge do, so while a bypass is installed and the dataplane is alive (it
//! was only stopped, or it is starting again) both would deliver the same
//! frame. A [`Handover`] prevents that with one rule, applied per frame by
//! the frame's receive timestamp (the time the kernel wrote it into the
//! ring, `meta.ts_ns`, CLOCK_REALTIME):
//!
//! > a frame of a guarded port is forwarded only if it was received inside
//! > the window `[from, until)`; every other frame is discarded and counted
//! > as `standby` (the kernel bypass delivers it, or nobody could).
//!
//! * `until` is the **lease**: the guard promises not to install a bypass
//!   until `timeout` after a heartbeat it received; the dataplane's
//!   heartbeat thread sets `until` to the heartbeat's send time plus a lease
//!   shorter than that timeout when the guard acknowledges it. A frame
//!   received before `until` reached tc ingress (right after the ring, in
//!   the same softirq) before any bypass existed. After a SIGSTOP longer
//!   than the lease, the stale contents of the rings lie past `until`.
//! * `from` is the **hand-back**: every acknowledgement also says since when
//!   the guard has had no bypass installed (the wall-clock time at which the
//!   kernel confirmed its last removal). Every frame received after that
//!   moment is the dataplane's alone; one before it may have been bypassed.
//! * With no guard connected the window is open (`until` = never): nothing
//!   can bypass, nothing is held back.
//!
//! A frame that reaches tc ingress while the kernel is still acknowledging
//! the removal (microseconds) is lost; none is delivered twice. This holds
//! when a frame's timestamp is taken as it is received: with
//! `net.core.netdev_tstamp_prequeue = 1` (the kernel's default, when any
//! socket asked for timestamps) it is taken when the frame is queued for
//! receive, and a receive backlog longer than the lease's 1 ms margin (a
//! host out of CPU) can misplace a frame across the window's edges. The timestamps and
//! the heartbeat's clock are both CLOCK_REALTIME: a step of the wall clock
//! (not a slew) during a hand-over can misplace the window by the step.
//!
//! While the lease has run out (`now >= until`), workers do not poll guarded
//! ports at all: frames that arrive between the guard's removal of its
//! bypass and the acknowledgement reaching the dataplane wait in the ring
//! instead of being judged by the stale window, so the hand-back loses
//! nothing. Workers read the two words and the clock once per poll round;
//! ports the kernel cannot bypass (capture files, DPDK ports) ignore it.

use std::sync::atomic::{AtomicU64, Ordering};

/// The forwarding window shared by the heartbeat thread and the workers.
#[derive(Debug)]
pub struct Handover {
    from: AtomicU64,
    until: AtomicU64,
}

/// `until` when no guard is connected: every frame is forwarded.
const OPEN: u64 = u64::MAX;

impl Default for Handover {
    fn default() -> Self {
        Handover::new()
    }
}

impl Handover {
    /// An open window (no guard).
    pub fn new() -> Handover {
        Handover { from: AtomicU64::new(0), until: AtomicU64::new(OPEN) }
    }

    /// Opens the window: no guard is connected, so nothing can bypass.
    pub fn open(&self) {
        self.until.store(OPEN, Ordering::Release);
    }

    /// Closes the window (a guard is connected and has granted nothing yet).
    pub fn close(&self) {
        self.until.store(0, Ordering::Release);
    }

    /// Extends the lease to `until_ns`; the guard has had no bypass installed
    /// since `clear_ns`, so frames received before it are held back for good.
    /// Called by one thread only (the heartbeat).
    pub fn grant(&self, until_ns: u64, clear_ns: u64) {
        if clear_ns > self.from.load(Ordering::Acquire) {
            // `from` first: a worker that sees the new `until` sees the new `from` too.
            self.from.store(clear_ns, Ordering::Release);
        }
        self.until.store(until_ns, Ordering::Release);
    }

    /// The current window `[from, until)`, read once per burst.
    #[inline]
    pub fn window(&self) -> Window {
        let until = self.until.load(Ordering::Acquire);
        let from = self.from.load(Ordering::Acquire);
        Window { from, until }
    }
}

/// A snapshot of a [`Handover`]'s window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    from: u64,
    until: u64,
}

impl Window {
    /// The window of a worker without guarded ports.
    pub const OPEN: Window = Window { from: 0, until: OPEN };

    /// Whether the lease has run out at `now_ns`: the guard may have
    /// installed its bypass, so guarded ports wait for the hand-back (their
    /// frames stay in the ring, to be judged by the next window).
    #[inline]
    pub fn lapsed(self, now_ns: u64) -> bool {
        now_ns >= self.until
    }

    /// Whether every frame is forwarded (no guard connected).
    #[inline]
    pub fn is_open(self) -> bool {
        self.until == OPEN
    }

    /// Whether a frame received at `ts_ns` is the dataplane's to forward.
    #[inline]
    pub fn admits(self, ts_ns: u64) -> bool {
        self.is_open() || (ts_ns >= self.from && ts_ns < self.until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_guard_admits_everything() {
        let h = Handover::new();
        assert!(h.window().is_open());
        assert!(h.window().admits(0));
        assert!(h.window().admits(u64::MAX - 1));
    }

    #[test]
    fn a_connected_guard_admits_nothing_until_it_grants_a_lease() {
        let h = Handover::new();
        h.close();
        assert!(!h.window().admits(5));
        // First grant after a closed window: frames before it may have been bypassed.
        h.grant(2_000, 1_000);
        let w = h.window();
        assert!(!w.admits(999), "received before the hand-back: the bypass had it");
        assert!(w.admits(1_000));
        assert!(w.admits(1_999));
        assert!(!w.admits(2_000), "past the lease: the guard may have installed its bypass");
    }

    #[test]
    fn a_lease_renewed_without_a_bypass_keeps_what_came_before() {
        let h = Handover::new();
        h.close();
        h.grant(2_000, 1_000);
        h.grant(3_000, 1_000);
        let w = h.window();
        assert!(w.admits(1_200), "no bypass since 1_000: nothing after it is held back");
        assert!(w.admits(2_500));
    }

    #[test]
    fn a_bypass_removed_later_moves_the_start_of_the_window() {
        let h = Handover::new();
        h.close();
        h.grant(2_000, 1_000);
        // Stopped past the lease; the guard bypassed, then removed it at 5_000.
        h.grant(9_000, 5_000);
        let w = h.window();
        assert!(!w.admits(1_500), "stale frame from before the stop");
        assert!(!w.admits(4_000), "frame the bypass delivered");
        assert!(w.admits(5_000));
    }

    #[test]
    fn a_lease_lapses_at_until() {
        let h = Handover::new();
        assert!(!h.window().lapsed(u64::MAX - 1), "no guard: never");
        h.close();
        assert!(h.window().lapsed(0), "connected, nothing granted yet");
        h.grant(2_000, 1_000);
        assert!(!h.window().lapsed(1_999));
        assert!(h.window().lapsed(2_000));
    }

    #[test]
    fn losing_the_guard_opens_the_window() {
        let h = Handover::new();
        h.close();
        h.open();
        assert!(h.window().admits(1));
    }
}
