//! Where each bot's webhooks go: the bot's URL, keys and retry policy, and
//! the shared state of its endpoint (scheme, host, port): a semaphore bounding
//! concurrent requests, a count of claimed deliveries, and the circuit breaker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::RetryPolicy;
use settings::Settings;
use tokio::sync::Semaphore;
use url::Url;

use crate::breaker::{Admission, Breaker, Signal, State};
use crate::metrics::set_endpoint_state;

/// Test and tuning overrides of every bot's retry policy (the budgets stay
/// per bot). `None` keeps the policy's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryTuning {
    /// Overrides `RetryPolicy::initial_delay`.
    pub initial_delay: Option<Duration>,
    /// Overrides `RetryPolicy::max_delay`.
    pub max_delay: Option<Duration>,
    /// Overrides `RetryPolicy::jitter`.
    pub jitter: Option<f64>,
    /// Overrides `RetryPolicy::retry_after_min`.
    pub retry_after_min: Option<Duration>,
    /// Overrides `RetryPolicy::retry_after_max`.
    pub retry_after_max: Option<Duration>,
}

impl RetryTuning {
    /// `policy` with the overrides applied.
    pub fn apply(&self, policy: RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            initial_delay: self.initial_delay.unwrap_or(policy.initial_delay),
            max_delay: self.max_delay.unwrap_or(policy.max_delay),
            jitter: self.jitter.unwrap_or(policy.jitter),
            retry_after_min: self.retry_after_min.unwrap_or(policy.retry_after_min),
            retry_after_max: self.retry_after_max.unwrap_or(policy.retry_after_max),
            ..policy
        }
    }
}

/// One bot's delivery target.
#[derive(Debug)]
pub struct Target {
    /// The bot.
    pub bot_id: String,
    /// Its webhook URL and endpoint; `None` when it has no `webhook_url`.
    pub endpoint: Option<(Url, Arc<Endpoint>)>,
    /// HMAC keys of its active secrets.
    pub keys: Vec<Vec<u8>>,
    /// Its retry policy.
    pub policy: RetryPolicy,
}

/// An endpoint (scheme, host, port) shared by the bots that post to it.
#[derive(Debug)]
pub struct Endpoint {
    /// `scheme://host:port`, for logs.
    pub origin: String,
    permits: Arc<Semaphore>,
    max: u32,
    claimed: AtomicU32,
    breaker: Mutex<Breaker>,
    bots: Mutex<Vec<String>>,
}

impl Endpoint {
    fn new(origin: String, max: u32, breaker: Breaker) -> Self {
        Self {
            origin,
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            claimed: AtomicU32::new(0),
            breaker: Mutex::new(breaker),
            bots: Mutex::new(Vec::new()),
        }
    }

    /// How many more deliveries may be claimed for it now: the concurrency
    /// limit minus the claims in progress.
    pub fn capacity(&self) -> u32 {
        self.max.saturating_sub(self.claimed.load(Ordering::Acquire))
    }

    /// How many deliveries to claim for it now: none while its circuit is
    /// open (nothing would be sent), one for the probe while it is half-open
    /// and nothing else is in flight, else its free capacity.
    pub fn claimable(&self, now: DateTime<Utc>) -> u32 {
        match self.state(now) {
            State::Closed => self.capacity(),
            State::Open => 0,
            State::HalfOpen => u32::from(self.claimed.load(Ordering::Acquire) == 0),
        }
    }

    /// The bots posting here.
    pub fn bots(&self) -> Vec<String> {
        self.bots.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Counts a claimed delivery until the guard drops.
    pub fn start(self: &Arc<Self>) -> ClaimGuard {
        self.claimed.fetch_add(1, Ordering::AcqRel);
        ClaimGuard { endpoint: Some(self.clone()) }
    }

    /// Counts a delivery claimed outside a claim round (handed over by a
    /// worker, see [`crate::handoff`]) if one may be claimed now: the
    /// circuit is closed and a slot is free. `None` otherwise.
    pub fn try_start(self: &Arc<Self>, now: DateTime<Utc>) -> Option<ClaimGuard> {
        if self.state(now) != State::Closed {
            return None;
        }
        self.claimed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |claimed| {
                (claimed < self.max).then_some(claimed + 1)
            })
            .ok()?;
        Some(ClaimGuard { endpoint: Some(self.clone()) })
    }

    /// The semaphore bounding concurrent requests.
    pub fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// Asks the breaker whether to send now.
    pub fn admit(&self, now: DateTime<Utc>) -> Admission {
        let mut breaker = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        let admission = breaker.admit(now);
        self.publish_state(breaker.state(now));
        admission
    }

    /// Tells the breaker what an attempt showed. Returns `true` when this
    /// closed the circuit: the endpoint is back.
    pub fn record(&self, signal: Signal, probe: bool, now: DateTime<Utc>) -> bool {
        let mut breaker = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        let before = breaker.state(now);
        let closed = breaker.record(signal, probe, now);
        let after = breaker.state(now);
        if before != after {
            tracing::warn!(endpoint = %self.origin, ?before, ?after, "webhook endpoint circuit changed");
        }
        self.publish_state(after);
        closed
    }

    /// The breaker's state now.
    pub fn state(&self, now: DateTime<Utc>) -> State {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner).state(now)
    }

    /// Sets the state gauge of every bot posting here.
    pub fn publish_state(&self, state: State) {
        for bot in self.bots.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            set_endpoint_state(bot, state);
        }
    }
}

/// Holds one unit of an endpoint's claim count.
#[derive(Debug)]
pub struct ClaimGuard {
    endpoint: Option<Arc<Endpoint>>,
}

impl ClaimGuard {
    /// A guard counting nothing (bots without an endpoint).
    pub fn none() -> Self {
        Self { endpoint: None }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(endpoint) = &self.endpoint {
            endpoint.claimed.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// `scheme://host:port` of a URL.
fn origin(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// Every configured bot's target, by bot id.
pub fn build_targets(settings: &Settings, tuning: &RetryTuning) -> HashMap<String, Arc<Target>> {
    let webhooks = &settings.webhooks;
    let max = u32::try_from(webhooks.max_concurrency_per_endpoint.max(1)).unwrap_or(u32::MAX);
    let mut endpoints: HashMap<String, Arc<Endpoint>> = HashMap::new();
    let mut targets = HashMap::new();
    for bot in &settings.bots {
        let endpoint = bot.webhook_url.as_ref().map(|url| {
            let origin = origin(url);
            let endpoint = endpoints
                .entry(origin.clone())
                .or_insert_with(|| {
                    let breaker = Breaker::new(
                        webhooks.breaker_failures,
                        Duration::from_secs(webhooks.breaker_cooldown_secs),
                    );
                    Arc::new(Endpoint::new(origin, max, breaker))
                })
                .clone();
            endpoint.bots.lock().unwrap_or_else(PoisonError::into_inner).push(bot.id.clone());
            set_endpoint_state(&bot.id, State::Closed);
            (url.clone(), endpoint)
        });
        let policy = tuning.apply(bot.effective(&settings.defaults).retry_policy());
        let target = Target { bot_id: bot.id.clone(), endpoint, keys: bot.webhook_keys(), policy };
        targets.insert(bot.id.clone(), Arc::new(target));
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_include_the_default_port() {
        let url = |s: &str| Url::parse(s).expect("url");
        assert_eq!(origin(&url("https://example.com/a")), "https://example.com:443");
        assert_eq!(origin(&url("http://127.0.0.1:8080/x")), "http://127.0.0.1:8080");
    }

    #[test]
    fn tuning_overrides_only_what_it_sets() {
        let tuning = RetryTuning { initial_delay: Some(Duration::from_millis(10)), ..RetryTuning::default() };
        let policy = tuning.apply(RetryPolicy::default());
        assert_eq!(policy.initial_delay, Duration::from_millis(10));
        assert_eq!(policy.max_delay, RetryPolicy::default().max_delay);
    }

    #[test]
    fn claims_are_counted_until_dropped() {
        let endpoint = Arc::new(Endpoint::new("x".into(), 2, Breaker::new(1, Duration::from_secs(1))));
        let a = endpoint.start();
        assert_eq!(endpoint.capacity(), 1);
        let _b = endpoint.start();
        assert_eq!(endpoint.capacity(), 0);
        drop(a);
        assert_eq!(endpoint.capacity(), 1);
    }

    #[test]
    fn a_slot_is_reserved_only_while_one_is_free_and_the_circuit_closed() {
        let now = Utc::now();
        let endpoint = Arc::new(Endpoint::new("x".into(), 2, Breaker::new(1, Duration::from_secs(60))));
        let a = endpoint.try_start(now).expect("a free slot");
        let b = endpoint.try_start(now).expect("the second slot");
        assert!(endpoint.try_start(now).is_none(), "both slots taken");
        assert_eq!(endpoint.capacity(), 0);
        drop(a);
        assert_eq!(endpoint.capacity(), 1);
        endpoint.record(Signal::Failed, false, now);
        assert_eq!(endpoint.state(now), State::Open);
        assert!(endpoint.try_start(now).is_none(), "nothing while the circuit is open");
        drop(b);
        assert_eq!(endpoint.capacity(), 2);
    }
}
