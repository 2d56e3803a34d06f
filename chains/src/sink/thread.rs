//! The thread that drains one sink's queue.
//!
//! It runs off the worker cores and sleeps briefly when the queue is empty,
//! so it never competes with a busy-polling worker for a core it does not
//! need. After a quiet spell it dozes (parks for long) and the first copy
//! pushed wakes it: an idle sink thread wakes a few times a second, not
//! two thousand (each of those wake-ups preempts whatever runs on the core
//! it lands on, on a host whose every core is busy-polling). A write or
//! flush error marks the sink down (workers stop copying to it), is logged
//! once, and the sink is retried with exponential backoff.

use super::{Names, Sink, SinkQueue};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Copies written between checks of the stop flag and flushes.
const BATCH: usize = 256;
/// Copies written between flushes while the queue never runs empty.
const FLUSH_EVERY: u64 = 4096;
/// Sleep when the queue is empty.
const IDLE_SLEEP: Duration = Duration::from_micros(500);
/// Empty checks in a row (each after an [`IDLE_SLEEP`]) before dozing off.
const DOZE_AFTER: u32 = 200;
/// Longest doze: the delay of a copy whose wake-up raced with dozing off.
const DOZE: Duration = Duration::from_millis(200);
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
    /// Starts a thread writing what arrives on `queue` to `sink`. One sink
    /// thread drains a queue at a time: stop the previous one first.
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
            h.thread().unpark();
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
    // Copies handed to the sink but not yet flushed: they count as written
    // only once a flush succeeds, and as lost if it fails.
    let mut pending: u64 = 0;
    let mut backoff = FIRST_BACKOFF;
    // A sink that starts down (it could not be opened) is first retried after the backoff.
    let mut retry_at: Option<Instant> = (!q.is_up()).then(|| Instant::now() + FIRST_BACKOFF);
    let mut quiet = 0u32;
    q.attach_drainer();
    loop {
        if let Some(t) = retry_at {
            // Backoff over: let workers copy again; the next write and flush tell whether it is back.
            if !q.is_up() && Instant::now() >= t {
                q.set_up(true);
            }
        }
        let mut did = 0;
        while did < BATCH {
            let Some(rec) = q.pop() else { break };
            did += 1;
            if retry_at.is_some_and(|t| Instant::now() < t) {
                q.count_lost_down();
                continue;
            }
            if let Err(e) = sink.write(&rec, names) {
                // Everything not yet flushed is lost, including what the sink already counted.
                let _ = sink.take_lost();
                q.count_errors(1 + pending);
                pending = 0;
                if retry_at.is_none() {
                    log::warn!("sink {}: marked down, copies to it are dropped until it recovers: {e}", sink.name());
                }
                fail(q, &mut retry_at, &mut backoff);
            } else {
                pending += 1;
            }
        }
        if pending > 0 && (did == 0 || pending >= FLUSH_EVERY) {
            match sink.flush() {
                Ok(()) => {
                    let lost = sink.take_lost().min(pending);
                    q.count_written(pending - lost);
                    q.count_errors(lost);
                    if retry_at.take().is_some() {
                        log::info!("sink {}: recovered, copying again", sink.name());
                        q.set_up(true);
                        backoff = FIRST_BACKOFF;
                    }
                }
                Err(e) => {
                    let _ = sink.take_lost();
                    q.count_errors(pending);
                    if retry_at.is_none() {
                        log::warn!("sink {}: flush failed, marked down, {pending} copies lost: {e}", sink.name());
                    }
                    fail(q, &mut retry_at, &mut backoff);
                }
            }
            pending = 0;
        }
        if did == 0 {
            if stop.load(Ordering::Relaxed) && q.is_empty() {
                return;
            }
            quiet = quiet.saturating_add(1);
            if quiet >= DOZE_AFTER {
                q.doze(doze_limit(retry_at, q.is_up(), Instant::now()));
            } else {
                std::thread::sleep(IDLE_SLEEP);
            }
        } else {
            quiet = 0;
        }
    }
}

/// How long a quiet sink thread may doze: [`DOZE`], or, while the sink is
/// down, no longer than until its retry, which this thread times (nothing,
/// when the retry fell due since the top of the loop). A sink that is up
/// (never failed, or past its retry and waiting for a copy to confirm it)
/// is woken by the workers' next copy.
fn doze_limit(retry_at: Option<Instant>, up: bool, now: Instant) -> Duration {
    match retry_at {
        Some(t) if !up => t.saturating_duration_since(now).min(DOZE),
        _ => DOZE,
    }
}

fn fail(q: &SinkQueue, retry_at: &mut Option<Instant>, backoff: &mut Duration) {
    q.set_up(false);
    *retry_at = Some(Instant::now() + *backoff);
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_waiting_for_its_retry_dozes_no_later_than_the_retry() {
        let now = Instant::now();
        assert_eq!(doze_limit(None, true, now), DOZE);
        assert_eq!(doze_limit(Some(now + Duration::from_millis(30)), false, now), Duration::from_millis(30));
        assert_eq!(doze_limit(Some(now + DOZE * 3), false, now), DOZE);
        // Due but not yet set up (that happens at the top of the loop): no doze.
        assert_eq!(doze_limit(Some(now), false, now + Duration::from_secs(1)), Duration::ZERO);
        // Set up again after its retry time: nothing left to time.
        assert_eq!(doze_limit(Some(now), true, now + Duration::from_secs(1)), DOZE);
    }
}
