//! Per-endpoint circuit breaker (SPEC §4: "an endpoint that keeps failing is
//! paused by a circuit breaker and probed, not hammered").
//!
//! Closed: everything goes; `failures` consecutive failed attempts open it.
//! Open: nothing goes until the cooldown ends; deliveries are deferred to
//! then. Half-open: one probe goes, the rest wait; the probe's success closes
//! it, its failure opens it again for another cooldown.
//!
//! A failure is an outcome worth retrying (5xx, 408/425/429, timeout,
//! connection error): the endpoint is unwell. A final status (4xx) means it
//! answered, so it counts as alive; a refused address never reached it.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The breaker's state, also the `escalations_webhook_endpoint_state` gauge.
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
    /// Gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::HalfOpen => 1.0,
            State::Open => 2.0,
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
    cooldown: TimeDelta,
    /// While half-open, how long the others wait for the probe.
    probe_wait: TimeDelta,
    failures: u32,
    open_until: Option<DateTime<Utc>>,
    probing: bool,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        let cooldown = TimeDelta::from_std(cooldown).unwrap_or(TimeDelta::seconds(30));
        Self {
            threshold: threshold.max(1),
            cooldown,
            probe_wait: cooldown.min(TimeDelta::seconds(1)),
            failures: 0,
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
    pub fn record(&mut self, signal: Signal, probe: bool, now: DateTime<Utc>) {
        if probe {
            self.probing = false;
        }
        match signal {
            Signal::Alive => {
                self.failures = 0;
                self.open_until = None;
            }
            Signal::Failed => {
                self.failures = self.failures.saturating_add(1);
                // A failed probe reopens at once; otherwise the threshold
                // applies (attempts sent before it opened still report).
                if probe || (self.open_until.is_none() && self.failures >= self.threshold) {
                    self.open_until = Some(now + self.cooldown);
                }
            }
            Signal::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("time")
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let mut breaker = Breaker::new(3, Duration::from_secs(30));
        for _ in 0..2 {
            assert_eq!(breaker.admit(t(0)), Admission::Send);
            breaker.record(Signal::Failed, false, t(0));
        }
        breaker.record(Signal::Alive, false, t(0));
        for _ in 0..3 {
            assert_eq!(breaker.admit(t(1)), Admission::Send);
            breaker.record(Signal::Failed, false, t(1));
        }
        assert_eq!(breaker.state(t(1)), State::Open);
        assert_eq!(breaker.admit(t(5)), Admission::Defer(t(31)));
        // Half-open: one probe, the others wait for it.
        assert_eq!(breaker.state(t(31)), State::HalfOpen);
        assert_eq!(breaker.admit(t(31)), Admission::Probe);
        assert_eq!(breaker.admit(t(31)), Admission::Defer(t(32)));
        // The probe fails: open again for a whole cooldown.
        breaker.record(Signal::Failed, true, t(33));
        assert_eq!(breaker.admit(t(40)), Admission::Defer(t(63)));
        assert_eq!(breaker.admit(t(63)), Admission::Probe);
        breaker.record(Signal::Alive, true, t(64));
        assert_eq!(breaker.state(t(64)), State::Closed);
        assert_eq!(breaker.admit(t(64)), Admission::Send);
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
