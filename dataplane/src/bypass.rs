//! The bypass switch: forward without classifying, copying or chaining.
//!
//! An operator turns it on by hand (the control API's `bypass on`) when
//! monitoring itself is suspect, to take every steered flow off the chains
//! at once without touching the rules. While it is on, each worker forwards
//! what it receives exactly as an unmatched packet would go (a link's peer,
//! or where a bridge says) and counts it as `bypassed`. Workers read the
//! switch once per poll round, so turning it on or off takes effect at the
//! next burst boundary and never splits a burst.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A switch shared by every worker and control.
#[derive(Debug, Default)]
pub struct Bypass {
    on: AtomicBool,
    /// How many times it was turned on.
    engaged: AtomicU64,
}

impl Bypass {
    /// A switch that is off.
    pub fn new() -> Bypass {
        Bypass::default()
    }

    /// Turns the bypass on or off; returns whether it was on before.
    pub fn set(&self, on: bool) -> bool {
        let was = self.on.swap(on, Ordering::AcqRel);
        if on && !was {
            self.engaged.fetch_add(1, Ordering::Relaxed);
        }
        was
    }

    /// Whether the bypass is on. One relaxed load: workers call it once per poll round.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// How many times the bypass was turned on since start.
    pub fn engaged(&self) -> u64 {
        self.engaged.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_reports_the_previous_state_and_counts_engagements() {
        let b = Bypass::new();
        assert!(!b.is_on());
        assert!(!b.set(true));
        assert!(b.set(true));
        assert!(b.is_on());
        assert!(b.set(false));
        assert!(!b.is_on());
        b.set(true);
        assert_eq!(b.engaged(), 2);
    }
}
