//! The bounded queue between workers and a sink thread, with the sink's
//! health and counters.

use super::CopyRecord;
use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::Duration;

/// A sink's inbox: bounded, lock-free, multi-producer (workers) and single
/// consumer (the sink thread). Pushing never blocks: a full queue hands the
/// copy back and the worker drops it.
pub struct SinkQueue {
    name: String,
    queue: ArrayQueue<CopyRecord>,
    up: AtomicBool,
    written: AtomicU64,
    errors: AtomicU64,
    lost_down: AtomicU64,
    /// The sink thread, parked for long after a quiet spell (see [`SinkQueue::doze`]).
    dozing: AtomicBool,
    /// The thread draining the queue, to wake it; replaced when another
    /// sink thread takes the queue over.
    drainer: ArcSwapOption<Thread>,
}

impl SinkQueue {
    /// A queue of `capacity` copies for the sink called `name`.
    pub fn new(name: &str, capacity: usize) -> SinkQueue {
        SinkQueue {
            name: name.to_string(),
            queue: ArrayQueue::new(capacity.max(1)),
            up: AtomicBool::new(true),
            written: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            lost_down: AtomicU64::new(0),
            dozing: AtomicBool::new(false),
            drainer: ArcSwapOption::empty(),
        }
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Enqueues a copy; gives it back when the queue is full. The first
    /// copy after the sink thread dozed off wakes it.
    #[inline]
    pub fn push(&self, rec: CopyRecord) -> Result<(), CopyRecord> {
        let pushed = self.queue.push(rec);
        if self.dozing.load(Ordering::Relaxed) {
            self.wake();
        }
        pushed
    }

    /// Unparks a dozing sink thread: one system call per quiet spell that
    /// ends, not per copy (the flag is cleared by whoever wakes it first).
    #[cold]
    fn wake(&self) {
        if self.dozing.swap(false, Ordering::AcqRel) {
            if let Some(t) = &*self.drainer.load() {
                t.unpark();
            }
        }
    }

    /// Names the calling thread as the one draining the queue, in place of
    /// any thread that drained it before.
    pub(crate) fn attach_drainer(&self) {
        self.drainer.store(Some(Arc::new(std::thread::current())));
    }

    /// Parks the draining thread for at most `limit`, or until a copy is
    /// pushed. Without a fence on the workers' side a push racing with
    /// dozing off may not wake it: that copy then waits for the timeout,
    /// which bounds the delay.
    pub(crate) fn doze(&self, limit: Duration) {
        self.dozing.store(true, Ordering::SeqCst);
        if self.queue.is_empty() {
            std::thread::park_timeout(limit);
        }
        self.dozing.store(false, Ordering::Relaxed);
    }

    /// True while the sink thread is parked after a quiet spell.
    pub fn is_dozing(&self) -> bool {
        self.dozing.load(Ordering::Relaxed)
    }

    /// Takes the next copy (sink thread only).
    pub fn pop(&self) -> Option<CopyRecord> {
        self.queue.pop()
    }

    /// Copies waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when a push would fail: lets a stage skip making a copy that
    /// would only be dropped (may be momentarily stale; the push decides).
    #[inline]
    pub fn is_full(&self) -> bool {
        self.queue.is_full()
    }

    /// True when no copy is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// False while the sink is failing: workers then skip copying to it.
    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Marks the sink down before its thread starts (it could not be opened):
    /// workers skip it and fail-closed chains drop their originals until the
    /// sink thread's first retry succeeds.
    pub fn start_down(&self) {
        self.set_up(false);
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    pub(crate) fn count_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn count_errors(&self, n: u64) {
        self.errors.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn count_lost_down(&self) {
        self.lost_down.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the sink wrote and flushed.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Copies lost to write or flush errors.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Copies that were already queued when the sink went down, discarded
    /// until its retry time.
    pub fn lost_down(&self) -> u64 {
        self.lost_down.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::packet::{Meta, Packet};
    use std::time::Instant;

    #[test]
    fn a_push_wakes_the_thread_attached_last() {
        let q = Arc::new(SinkQueue::new("s", 4));
        let q1 = Arc::clone(&q);
        std::thread::spawn(move || q1.attach_drainer()).join().unwrap();
        let q2 = Arc::clone(&q);
        let second = std::thread::spawn(move || {
            q2.attach_drainer();
            let t = Instant::now();
            q2.doze(Duration::from_secs(60));
            t.elapsed()
        });
        while !q.is_dozing() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let rec = CopyRecord { pkt: Packet::from_slice(&[0; 60], Meta::default()), rule: 0, chain: 0 };
        assert!(q.push(rec).is_ok());
        let dozed = second.join().unwrap();
        assert!(dozed < Duration::from_secs(30), "the push woke another thread: the drainer dozed {dozed:?}");
    }
}
