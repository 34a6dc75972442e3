//! Per-bot rate limiting (docs/protocol.md §2: `429` with `Retry-After`).
//!
//! Each bot has two token buckets of its configured size (`rate_limit_burst`)
//! refilled at `rate_limit_per_sec`: one for the agent API, one for the widget
//! API, so a burst of visitor traffic never throttles the contact centre and
//! the other way round. The buckets are GCRA cells (one atomic "theoretical
//! arrival time" each, updated by compare-and-swap), so the hot path takes no
//! lock. The bot list is fixed at start-up, so the map is built once and only
//! read afterwards. Limits are per ingress instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use settings::Settings;

/// Which API a request is for; each has its own bucket per bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `send-message-to-widget` (the contact centre).
    Agent,
    /// The widget API (the bot platform's `escalate`, the visitor's messages and `end`).
    Widget,
}

/// The buckets of every configured bot.
#[derive(Debug)]
pub struct RateLimiter {
    epoch: Instant,
    bots: HashMap<String, [Cell; 2]>,
}

impl RateLimiter {
    /// A full bucket per bot and scope, sized from each bot's effective settings.
    pub fn new(settings: &Settings) -> Self {
        let bots = settings
            .bots
            .iter()
            .map(|bot| {
                let eff = bot.effective(&settings.defaults);
                let cell = || Cell::new(eff.rate_limit_per_sec, eff.rate_limit_burst);
                (bot.id.clone(), [cell(), cell()])
            })
            .collect();
        Self { epoch: Instant::now(), bots }
    }

    /// Takes one token from `bot`'s bucket for `scope`, or says how long until
    /// one is available. Bots not configured are not limited (they cannot
    /// authenticate anyway).
    pub fn check(&self, bot: &str, scope: Scope) -> Result<(), Duration> {
        let Some(cells) = self.bots.get(bot) else { return Ok(()) };
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let cell = match scope {
            Scope::Agent => &cells[0],
            Scope::Widget => &cells[1],
        };
        cell.check(now).map_err(Duration::from_nanos)
    }
}

/// One GCRA cell: `burst` requests at once, then one every `interval`.
#[derive(Debug)]
struct Cell {
    /// Theoretical arrival time of the next request, ns since the epoch.
    tat: AtomicU64,
    /// ns between requests at the sustained rate.
    interval: u64,
    /// How far ahead of now `tat` may run: `(burst - 1) * interval`.
    tolerance: u64,
}

impl Cell {
    fn new(per_sec: u32, burst: u32) -> Self {
        let interval = 1_000_000_000 / u64::from(per_sec.max(1));
        let tolerance = interval.saturating_mul(u64::from(burst.max(1) - 1));
        Self { tat: AtomicU64::new(0), interval, tolerance }
    }

    /// `Ok` and one token taken, or `Err(ns to wait)`.
    fn check(&self, now: u64) -> Result<(), u64> {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            let ahead = start - now;
            if ahead > self.tolerance {
                return Err(ahead - self.tolerance);
            }
            match self.tat.compare_exchange_weak(
                tat,
                start.saturating_add(self.interval),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

/// `Retry-After` in whole seconds: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn burst_then_sustained_rate() {
        let cell = Cell::new(10, 3);
        for _ in 0..3 {
            assert_eq!(cell.check(0), Ok(()));
        }
        // The fourth waits one interval (100 ms) for the bucket to refill.
        assert_eq!(cell.check(0), Err(SEC / 10));
        assert_eq!(cell.check(SEC / 10), Ok(()));
        assert!(cell.check(SEC / 10).is_err());
        // After a long pause the bucket is full again, not fuller.
        let later = 100 * SEC;
        for _ in 0..3 {
            assert_eq!(cell.check(later), Ok(()));
        }
        assert!(cell.check(later).is_err());
    }

    #[test]
    fn burst_of_one_is_a_plain_rate() {
        let cell = Cell::new(1, 1);
        assert_eq!(cell.check(0), Ok(()));
        assert_eq!(cell.check(0), Err(SEC));
        assert_eq!(cell.check(SEC / 2), Err(SEC / 2));
        assert_eq!(cell.check(SEC), Ok(()));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn concurrent_takers_never_exceed_the_burst() {
        let cell = std::sync::Arc::new(Cell::new(1, 100));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let cell = cell.clone();
                std::thread::spawn(move || (0..50).filter(|_| cell.check(0).is_ok()).count())
            })
            .collect();
        let taken: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(taken, 100);
    }
}
