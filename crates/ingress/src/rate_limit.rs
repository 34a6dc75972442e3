//! Rate limiting (docs/protocol.md §2: `429` with `Retry-After`; §3: whose budget).
//!
//! - The bot's budget: each bot has two token buckets of its configured size
//!   (`rate_limit_burst`) refilled at `rate_limit_per_sec`, one for the
//!   contact centre (agent API and queries), one for the bot platform
//!   (`escalate`). Visitors never touch either.
//! - Visitors: `messages` and `end` have one bucket per conversation (a widget
//!   token opens exactly one), sized by `widget.visitor_rate_*`, so one visitor
//!   never exhausts the bot's budget or another visitor's.
//! - Stream opens: one bucket per conversation (`widget.stream_open*`) and one
//!   for the whole instance (`widget.instance_stream_open*`), against reconnect
//!   storms.
//!
//! The buckets are GCRA cells (one atomic "theoretical arrival time" each,
//! updated by compare-and-swap). The bot list is fixed at start-up, so that
//! map is only read. Per-conversation cells live in a sharded map, so no lock
//! is process-wide; a shard forgets its full cells (a full cell is the same as
//! a new one) when it grows. Limits are per ingress instance.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use settings::Settings;

/// Which of the bot's budgets a request spends; each has its own bucket per bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `send-message-to-widget` and the query endpoints (the contact centre).
    Agent,
    /// `escalate` (the bot platform).
    Escalate,
}

/// Shards of the per-conversation maps: enough that concurrent requests
/// rarely meet on one lock.
const SHARDS: usize = 64;
/// A shard with more cells than this drops its full ones on the next insert.
const PRUNE_AT: usize = 4096;

/// The buckets of every configured bot, conversation and the instance.
#[derive(Debug)]
pub struct RateLimiter {
    epoch: Instant,
    bots: HashMap<String, [Cell; 2]>,
    visitors: Keyed,
    stream_opens: Keyed,
    instance_stream_opens: Cell,
}

impl RateLimiter {
    /// Full buckets: per bot and scope from each bot's effective settings,
    /// per conversation and per instance from `[widget]`.
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
        let w = &settings.widget;
        Self {
            epoch: Instant::now(),
            bots,
            visitors: Keyed::new(w.visitor_rate_per_sec, w.visitor_rate_burst),
            stream_opens: Keyed::new(w.stream_opens_per_sec, w.stream_open_burst),
            instance_stream_opens: Cell::new(w.instance_stream_opens_per_sec, w.instance_stream_open_burst),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes one token from `bot`'s bucket for `scope`, or says how long until
    /// one is available. Bots not configured are not limited (they cannot
    /// authenticate anyway).
    pub fn check(&self, bot: &str, scope: Scope) -> Result<(), Duration> {
        let Some(cells) = self.bots.get(bot) else { return Ok(()) };
        let cell = match scope {
            Scope::Agent => &cells[0],
            Scope::Escalate => &cells[1],
        };
        cell.check(self.now()).map_err(Duration::from_nanos)
    }

    /// Takes one token from the visitor bucket of one conversation
    /// (`messages`, `end`).
    pub fn check_visitor(&self, bot: &str, conversation: &str) -> Result<(), Duration> {
        self.visitors.check(bot, conversation, self.now()).map_err(Duration::from_nanos)
    }

    /// Takes one stream open from the conversation's bucket, then from the
    /// instance's.
    pub fn check_stream_open(&self, bot: &str, conversation: &str) -> Result<(), Duration> {
        let now = self.now();
        self.stream_opens.check(bot, conversation, now).map_err(Duration::from_nanos)?;
        self.instance_stream_opens.check(now).map_err(Duration::from_nanos)
    }
}

/// Cells per (bot, conversation), in shards each behind its own lock.
#[derive(Debug)]
struct Keyed {
    per_sec: u32,
    burst: u32,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<(String, String), Cell>>>,
}

impl Keyed {
    fn new(per_sec: u32, burst: u32) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Self { per_sec, burst, hasher: RandomState::new(), shards }
    }

    fn check(&self, bot: &str, conversation: &str, now: u64) -> Result<(), u64> {
        let index = (self.hasher.hash_one((bot, conversation)) % SHARDS as u64) as usize;
        let mut shard = self.shards[index].lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = shard.get(&(bot.to_owned(), conversation.to_owned())) {
            return cell.check(now);
        }
        if shard.len() >= PRUNE_AT {
            // A cell whose theoretical arrival time has passed is full again.
            shard.retain(|_, cell| cell.tat.load(Ordering::Relaxed) > now);
        }
        let cell = Cell::new(self.per_sec, self.burst);
        let outcome = cell.check(now);
        shard.insert((bot.to_owned(), conversation.to_owned()), cell);
        outcome
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
    fn conversations_have_buckets_of_their_own_and_full_ones_are_forgotten() {
        let keyed = Keyed::new(1, 2);
        assert_eq!(keyed.check("bot", "a", 0), Ok(()));
        assert_eq!(keyed.check("bot", "a", 0), Ok(()));
        assert!(keyed.check("bot", "a", 0).is_err());
        assert_eq!(keyed.check("bot", "b", 0), Ok(()), "another visitor is untouched");
        assert_eq!(keyed.check("other", "a", 0), Ok(()), "another bot's conversation too");
        for i in 0..(PRUNE_AT * SHARDS) {
            let _ = keyed.check("bot", &format!("c{i}"), 0);
        }
        // Shards are pruned when a new key comes to one that is full; some
        // shard holds at least the average, and a thousand new keys reach
        // every shard but with a chance of about 1e-7.
        let later = 10 * SEC;
        for i in 0..1_000 {
            let _ = keyed.check("bot", &format!("fresh-{i}"), later);
        }
        let cells: usize = keyed.shards.iter().map(|s| s.lock().expect("lock").len()).sum();
        assert!(cells < PRUNE_AT * SHARDS, "full cells are dropped: {cells}");
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
