//! Bounding what monitoring costs the VMs' traffic: the monitoring budget
//! and overload shedding.
//!
//! A worker runs the chains of a burst's matched packets in one block, timed
//! with two clock reads per burst (never per packet); the time goes into the
//! `monitor_ns` counter, from which control shows the *monitoring share*
//! (monitoring time over wall time, per worker).
//!
//! Two things make the worker skip the chains of matched packets (the
//! originals are forwarded at once, as if unmatched, and counted as shed):
//!
//! * **budget** (`shed_monitor_budget`): [`MonitorBudget`] is a token bucket
//!   of monitoring time. It fills at `share` nanoseconds per nanosecond of
//!   wall time (idle time included: an idle core has room to spare) up to
//!   [`BUDGET_DEPTH`] worth, and each burst's chain time is taken out of it.
//!   While it is empty the chains are skipped, so over any long stretch
//!   monitoring takes at most `share` of the core, and bursts of work up to
//!   the depth pass untouched.
//! * **overload** (`shed_overload`): a port whose receive burst came back
//!   full on [`WorkerConfig::overload_bursts`](crate::worker::WorkerConfig)
//!   consecutive polls has a backlog in its ring; the worker then sheds the
//!   copy work of that port's bursts until a burst comes back short, so the
//!   backlog drains before the ring overflows and an original is lost.
//!
//! Only chains the [`Chains`](crate::worker::Chains) implementation calls
//! sheddable are skipped (the `chains` crate: fail-open chains). A
//! fail-closed chain promises that no packet it cannot monitor passes;
//! skipping it would break that promise, and dropping its originals instead
//! would turn CPU load into lost production traffic, so fail-closed chains
//! always run; their time still counts in the share and the budget.

use std::time::{Duration, Instant};

/// How much unused monitoring time the budget keeps: a burst of monitoring
/// work of up to `share x BUDGET_DEPTH` passes without shedding.
pub const BUDGET_DEPTH: Duration = Duration::from_millis(10);

/// A token bucket of monitoring time for one worker.
#[derive(Debug, Clone)]
pub struct MonitorBudget {
    /// Monitoring nanoseconds allowed per nanosecond of wall time.
    share: f64,
    /// Monitoring nanoseconds still allowed (negative after an expensive burst).
    balance: f64,
    /// Most the balance holds, and most it owes: one very long burst (a
    /// stalled stage) sheds at most `2 x BUDGET_DEPTH` of chain work after it.
    depth: f64,
    /// When the balance was last filled.
    last: Option<Instant>,
}

impl MonitorBudget {
    /// A budget of `share` (0 < share <= 1) of the worker's time, full.
    pub fn new(share: f64) -> MonitorBudget {
        let share = share.clamp(0.0, 1.0);
        let depth = share * BUDGET_DEPTH.as_nanos() as f64;
        MonitorBudget { share, balance: depth, depth, last: None }
    }

    /// The configured share.
    pub fn share(&self) -> f64 {
        self.share
    }

    /// Fills the bucket for the wall time up to `now` and says whether a
    /// burst's chains may run.
    #[inline]
    pub fn admit(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_nanos() as f64;
            self.balance = (self.balance + dt * self.share).min(self.depth);
        }
        self.last = Some(now);
        self.balance > 0.0
    }

    /// Takes the time a burst's chains took out of the bucket.
    #[inline]
    pub fn charge(&mut self, spent: Duration) {
        self.balance = (self.balance - spent.as_nanos() as f64).max(-self.depth);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_admits_share_of_wall_time_in_the_long_run() {
        // Work that would take 80% of the core, against a 25% budget: simulate 1 s in 100 us
        // steps, each step's chain work (80 us) charged when admitted.
        let mut b = MonitorBudget::new(0.25);
        let t0 = Instant::now();
        let (mut spent, mut shed) = (Duration::ZERO, 0);
        for step in 0..10_000u32 {
            let now = t0 + Duration::from_micros(100) * step;
            if b.admit(now) {
                b.charge(Duration::from_micros(80));
                spent += Duration::from_micros(80);
            } else {
                shed += 1;
            }
        }
        let share = spent.as_secs_f64() / 1.0;
        assert!((0.24..=0.26).contains(&share), "monitoring took {share:.3} of the time");
        assert!(shed > 6000, "most bursts were shed: {shed}");
    }

    #[test]
    fn an_idle_core_leaves_room_for_a_burst_of_work_up_to_the_depth() {
        let mut b = MonitorBudget::new(0.5);
        let t0 = Instant::now();
        assert!(b.admit(t0));
        // 5 ms of work at once (the whole 10 ms x 0.5 depth) passes, then the bucket is empty.
        b.charge(Duration::from_millis(5));
        assert!(!b.admit(t0));
        // After 1 s idle the bucket is full again, but never fuller than its depth.
        assert!(b.admit(t0 + Duration::from_secs(1)));
        b.charge(Duration::from_millis(5) + Duration::from_micros(1));
        assert!(!b.admit(t0 + Duration::from_secs(1)));
        assert_eq!(MonitorBudget::new(7.0).share(), 1.0);
        // A 600 ms stall in a chain owes at most the depth: 20 ms later the chains run again.
        b.charge(Duration::from_millis(600));
        let t1 = t0 + Duration::from_secs(1);
        assert!(!b.admit(t1 + Duration::from_millis(9)));
        assert!(b.admit(t1 + Duration::from_millis(21)));
    }
}
