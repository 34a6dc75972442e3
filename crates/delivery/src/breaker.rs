//! Per-endpoint circuit breaker (docs/protocol.md §4: "an endpoint that keeps failing is
//! paused by a circuit breaker and probed, not hammered").
//!
//! Closed: everything goes; `failures` consecutive failed attempts open it.
//! Open: nothing goes until the cooldown ends; the dispatcher claims nothing
//! for the endpoint. Half-open: one probe goes, the rest wait; the probe's
//! success closes it, its failure opens it again for a longer cooldown.
//!
//! The first cooldown is short (1 s) and stays so for ten failed probes, so
//! that an endpoint back after a blip or a restart is found within a second;
//! after that each failed probe makes the next a quarter longer, up to the
//! configured cap, so one that stays down costs a probe every cap seconds.
//!
//! A failure is an outcome worth retrying (5xx, 408/425/429, timeout,
//! connection error): the endpoint is unwell. A final status (4xx) means it
//! answered, so it counts as alive; a refused address never reached it.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The first cooldown of a breaker that opens.
const FIRST_COOLDOWN: TimeDelta = TimeDelta::seconds(1);
/// Failed probes at the first cooldown before it starts to grow: an endpoint
/// back within about ten seconds (a deploy, a restart) is found within a
/// second; one that stays down soon costs a probe per cap.
const FLAT_PROBES: u32 = 10;

/// The breaker's state, the `state` label of `escalations_webhook_breaker_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Sending.
    Closed,
    /// Probing with one delivery.
    HalfOpen,
    /// Paused.
    Open,
}

impl State {
    /// The `state` label of the breaker gauge: `closed`, `half_open`, `open`.
    pub fn label(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half_open",
            State::Open => "open",
        }
    }
}

/// Whether a delivery may be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it.
    Send,
    /// Send it as the half-open probe; report its outcome.
    Probe,
    /// Do not send; try again at this time.
    Defer(DateTime<Utc>),
}

/// What an attempt told the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The endpoint answered (2xx or a final status).
    Alive,
    /// It failed in a way that suggests it is unwell.
    Failed,
    /// Nothing was learnt (the attempt never reached it).
    Nothing,
}

/// One endpoint's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    /// The next cooldown.
    cooldown: TimeDelta,
    /// The first cooldown, and the longest.
    initial: TimeDelta,
    max: TimeDelta,
    /// While half-open, how long the others wait for the probe.
    probe_wait: TimeDelta,
    failures: u32,
    /// Failed probes since the endpoint last answered.
    failed_probes: u32,
    open_until: Option<DateTime<Utc>>,
    probing: bool,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for 1 s at first (or
    /// `max_cooldown` if shorter), growing by a quarter per failed probe up to
    /// `max_cooldown`.
    pub fn new(threshold: u32, max_cooldown: Duration) -> Self {
        let max = TimeDelta::from_std(max_cooldown).unwrap_or(TimeDelta::seconds(30));
        let initial = max.min(FIRST_COOLDOWN);
        Self {
            threshold: threshold.max(1),
            cooldown: initial,
            initial,
            max,
            probe_wait: initial.min(TimeDelta::seconds(1)),
            failures: 0,
            failed_probes: 0,
            open_until: None,
            probing: false,
        }
    }

    /// The state at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> State {
        match self.open_until {
            None => State::Closed,
            Some(until) if now < until => State::Open,
            Some(_) => State::HalfOpen,
        }
    }

    /// Whether a delivery may go now; at most one probe at a time.
    pub fn admit(&mut self, now: DateTime<Utc>) -> Admission {
        match self.state(now) {
            State::Closed => Admission::Send,
            State::Open => Admission::Defer(self.open_until.unwrap_or(now)),
            State::HalfOpen if self.probing => Admission::Defer(now + self.probe_wait),
            State::HalfOpen => {
                self.probing = true;
                Admission::Probe
            }
        }
    }

    /// Records an attempt's outcome; `probe` tells whether it was the probe.
    /// Returns `true` when this closed an open or half-open breaker (the
    /// endpoint is back: what waited for it may go now).
    pub fn record(&mut self, signal: Signal, probe: bool, now: DateTime<Utc>) -> bool {
        if probe {
            self.probing = false;
        }
        match signal {
            Signal::Alive => {
                self.failures = 0;
                self.failed_probes = 0;
                self.cooldown = self.initial;
                self.open_until.take().is_some()
            }
            Signal::Failed => {
                self.failures = self.failures.saturating_add(1);
                // A failed probe reopens at once, for longer; otherwise the
                // threshold applies (attempts sent before it opened still report).
                if probe {
                    self.failed_probes = self.failed_probes.saturating_add(1);
                    if self.failed_probes > FLAT_PROBES {
                        self.cooldown =
                            TimeDelta::milliseconds(self.cooldown.num_milliseconds() * 5 / 4).min(self.max);
                    }
                    self.open_until = Some(now + self.cooldown);
                } else if self.open_until.is_none() && self.failures >= self.threshold {
                    self.open_until = Some(now + self.cooldown);
                }
                false
            }
            Signal::Nothing => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        ms(seconds * 1000)
    }

    fn ms(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + millis).expect("time")
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_a_growing_cooldown() {
        let mut breaker = Breaker::new(3, Duration::from_secs(30));
        for _ in 0..2 {
            assert_eq!(breaker.admit(t(0)), Admission::Send);
            breaker.record(Signal::Failed, false, t(0));
        }
        breaker.record(Signal::Alive, false, t(0));
        for _ in 0..3 {
            assert_eq!(breaker.admit(t(10)), Admission::Send);
            breaker.record(Signal::Failed, false, t(10));
        }
        assert_eq!(breaker.state(t(10)), State::Open);
        assert_eq!(breaker.admit(t(10)), Admission::Defer(t(11)));
        // Half-open after the first, short cooldown: one probe, the others wait.
        assert_eq!(breaker.state(t(11)), State::HalfOpen);
        assert_eq!(breaker.admit(t(11)), Admission::Probe);
        assert!(matches!(breaker.admit(t(11)), Admission::Defer(_)));
        // Ten failed probes keep the first cooldown; then each makes the next
        // a quarter longer.
        let mut now = t(11);
        for _ in 0..10 {
            assert!(!breaker.record(Signal::Failed, true, now));
            assert_eq!(breaker.admit(now), Admission::Defer(now + TimeDelta::seconds(1)));
            now += TimeDelta::seconds(1);
            assert_eq!(breaker.admit(now), Admission::Probe);
        }
        breaker.record(Signal::Failed, true, now);
        assert_eq!(breaker.admit(now), Admission::Defer(now + TimeDelta::milliseconds(1_250)));
        now += TimeDelta::milliseconds(1_250);
        assert_eq!(breaker.admit(now), Admission::Probe);
        breaker.record(Signal::Failed, true, now);
        assert_eq!(breaker.admit(now), Admission::Defer(now + TimeDelta::milliseconds(1_562)));
        now += TimeDelta::milliseconds(1_562);
        // A successful probe closes it, says so, and resets the cooldown.
        assert_eq!(breaker.admit(now), Admission::Probe);
        assert!(breaker.record(Signal::Alive, true, now));
        assert_eq!(breaker.state(now), State::Closed);
        assert_eq!(breaker.admit(now), Admission::Send);
        for _ in 0..3 {
            breaker.record(Signal::Failed, false, now);
        }
        assert_eq!(breaker.admit(now), Admission::Defer(now + TimeDelta::seconds(1)));
    }

    #[test]
    fn the_cooldown_grows_up_to_its_cap() {
        let mut breaker = Breaker::new(1, Duration::from_secs(3));
        breaker.record(Signal::Failed, false, t(0));
        let mut now = t(0);
        for _ in 0..40 {
            let Admission::Defer(until) = breaker.admit(now) else { panic!("open") };
            now = until;
            assert_eq!(breaker.admit(now), Admission::Probe);
            breaker.record(Signal::Failed, true, now);
        }
        assert_eq!(breaker.admit(now), Admission::Defer(now + TimeDelta::seconds(3)));
        // A cap below the first cooldown is the cooldown.
        let mut short = Breaker::new(1, Duration::from_millis(300));
        short.record(Signal::Failed, false, t(0));
        assert_eq!(short.admit(t(0)), Admission::Defer(ms(300)));
    }

    #[test]
    fn state_labels_and_the_wait_for_a_probe() {
        // The `state` label of `escalations_webhook_breaker_state`.
        assert_eq!(
            [State::Closed, State::HalfOpen, State::Open].map(State::label),
            ["closed", "half_open", "open"]
        );
        let mut breaker = Breaker::new(1, Duration::from_secs(30));
        breaker.record(Signal::Failed, false, t(0));
        assert_eq!(breaker.admit(t(1)), Admission::Probe);
        // While the probe is out the others wait a second for it, then ask again.
        assert_eq!(breaker.admit(t(1)), Admission::Defer(t(2)));
        let mut short = Breaker::new(1, Duration::from_millis(300));
        short.record(Signal::Failed, false, t(0));
        assert_eq!(short.admit(ms(300)), Admission::Probe);
        assert_eq!(short.admit(ms(300)), Admission::Defer(ms(600)), "never longer than the cooldown");
    }

    #[test]
    fn a_probe_that_learnt_nothing_frees_the_probe_slot() {
        let mut breaker = Breaker::new(1, Duration::from_secs(10));
        breaker.record(Signal::Failed, false, t(0));
        assert_eq!(breaker.admit(t(10)), Admission::Probe);
        breaker.record(Signal::Nothing, true, t(10));
        assert_eq!(breaker.admit(t(10)), Admission::Probe);
    }
}
