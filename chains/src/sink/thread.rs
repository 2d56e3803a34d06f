//! The thread that drains one sink's queue.
//!
//! It runs off the worker cores and sleeps briefly when the queue is empty,
//! so it never competes with a busy-polling worker for a core it does not
//! need. A write error marks the sink down (workers stop copying to it), is
//! logged once, and the sink is retried with exponential backoff.

use super::{Names, Sink, SinkQueue};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Copies written between checks of the stop flag and flushes.
const BATCH: usize = 256;
/// Sleep when the queue is empty.
const IDLE_SLEEP: Duration = Duration::from_micros(500);
/// First retry delay after a failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A running sink thread.
pub struct SinkThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    queue: Arc<SinkQueue>,
}

impl SinkThread {
    /// Starts a thread writing what arrives on `queue` to `sink`.
    pub fn spawn(mut sink: Box<dyn Sink>, queue: Arc<SinkQueue>, names: Arc<Names>) -> std::io::Result<SinkThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, q) = (Arc::clone(&stop), Arc::clone(&queue));
        let handle = std::thread::Builder::new()
            .name(format!("sink-{}", queue.name()))
            .spawn(move || drain(&mut *sink, &q, &names, &stop2))?;
        Ok(SinkThread { stop, handle: Some(handle), queue })
    }

    /// The queue the thread drains.
    pub fn queue(&self) -> &Arc<SinkQueue> {
        &self.queue
    }

    /// Asks the thread to write what is queued, flush and exit; waits for it.
    /// Call after the workers have stopped, so nothing is enqueued behind it.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                log::error!("sink {}: thread panicked", self.queue.name());
            }
        }
    }
}

impl Drop for SinkThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn drain(sink: &mut dyn Sink, q: &SinkQueue, names: &Names, stop: &AtomicBool) {
    let mut dirty = false;
    let mut retry_at: Option<Instant> = None;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut did = 0;
        while did < BATCH {
            let Some(rec) = q.pop() else { break };
            did += 1;
            if let Some(t) = retry_at {
                if Instant::now() < t {
                    q.count_lost_down();
                    continue;
                }
            }
            match sink.write(&rec, names) {
                Ok(()) => {
                    q.count_written();
                    dirty = true;
                    if retry_at.take().is_some() {
                        log::info!("sink {}: recovered, copying again", sink.name());
                        q.set_up(true);
                        backoff = FIRST_BACKOFF;
                    }
                }
                Err(e) => {
                    q.count_error();
                    if q.is_up() || retry_at.is_none() {
                        log::warn!("sink {}: marked down, copies to it are dropped until it recovers: {e}", sink.name());
                    }
                    fail(q, &mut retry_at, &mut backoff);
                }
            }
        }
        if did == 0 {
            if dirty {
                if let Err(e) = sink.flush() {
                    q.count_error();
                    log::warn!("sink {}: flush failed, marked down: {e}", sink.name());
                    fail(q, &mut retry_at, &mut backoff);
                }
                dirty = false;
            }
            if let Some(t) = retry_at {
                // Let workers try again after the backoff; the next write tells whether it is back.
                if Instant::now() >= t && !q.is_up() {
                    q.set_up(true);
                }
            }
            if stop.load(Ordering::Relaxed) && q.is_empty() {
                if let Err(e) = sink.flush() {
                    q.count_error();
                    log::warn!("sink {}: final flush failed: {e}", sink.name());
                }
                return;
            }
            std::thread::sleep(IDLE_SLEEP);
        }
    }
}

fn fail(q: &SinkQueue, retry_at: &mut Option<Instant>, backoff: &mut Duration) {
    q.set_up(false);
    *retry_at = Some(Instant::now() + *backoff);
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}
