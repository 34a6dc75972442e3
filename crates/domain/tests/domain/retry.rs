//! Retry policy (docs/protocol.md §4): delays grow, stay within jitter bounds, respect the
//! `Retry-After` clamp and the per-event-type budgets; outcomes are classified
//! final or retryable.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use domain::retry::{GiveUp, parse_retry_after};
use domain::{AttemptResult, Class, Decision, RetryPolicy, retry::classify};
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("time")
}

fn status(code: u16) -> AttemptResult {
    AttemptResult::Status { code, retry_after: None }
}

#[test]
fn success_final_and_retryable_statuses_follow_the_spec() {
    for code in [200, 201, 202, 204, 299] {
        assert_eq!(classify(status(code)), Class::Delivered, "{code}");
    }
    for code in [408, 425, 429, 500, 502, 503, 504, 599] {
        assert_eq!(classify(status(code)), Class::Retryable { retry_after: None }, "{code}");
    }
    for code in [400, 401, 403, 404, 410, 413, 422, 301, 302] {
        assert_eq!(classify(status(code)), Class::Final, "{code}");
    }
    assert_eq!(classify(AttemptResult::Timeout), Class::Retryable { retry_after: None });
    assert_eq!(classify(AttemptResult::ConnectError), Class::Retryable { retry_after: None });
    assert_eq!(classify(AttemptResult::Refused), Class::Final);
}

#[test]
fn nominal_delays_double_until_the_cap() {
    let p = RetryPolicy::default();
    let delays: Vec<Duration> = (1..=20).map(|n| p.nominal_delay(n)).collect();
    assert_eq!(delays[0], p.initial_delay);
    assert_eq!(delays[1], p.initial_delay * 2);
    for pair in delays.windows(2) {
        assert!(pair[1] >= pair[0], "delays never shrink");
        assert!(pair[1] == pair[0] * 2 || pair[1] == p.max_delay, "double or cap");
    }
    assert_eq!(*delays.last().expect("some"), p.max_delay);
    assert_eq!(p.nominal_delay(u32::MAX), p.max_delay, "no overflow");
}

proptest! {
    #[test]
    fn jittered_delay_stays_within_bounds(failures in 1u32..64, sample in 0.0f64..1.0) {
        let p = RetryPolicy::default();
        let nominal = p.nominal_delay(failures);
        let d = p.backoff(failures, sample);
        prop_assert!(d <= nominal);
        prop_assert!(d >= nominal.mul_f64(1.0 - p.jitter));
    }

    #[test]
    fn retry_after_is_clamped(secs in 0u64..100_000) {
        let p = RetryPolicy::default();
        let result = AttemptResult::Status { code: 429, retry_after: Some(Duration::from_secs(secs)) };
        match p.decide("widgetMessage", t0(), t0(), 1, result, 0.5) {
            Decision::RetryAt(at) => {
                let waited = (at - t0()).to_std().expect("positive");
                prop_assert!(waited >= p.retry_after_min && waited <= p.retry_after_max);
                if (1..=600).contains(&secs) {
                    prop_assert_eq!(waited, Duration::from_secs(secs), "honoured as told within the clamp");
                }
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}

#[test]
fn budgets_are_per_event_type() {
    let p = RetryPolicy::default();
    assert_eq!(p.budget_for("widgetEscalate"), Duration::from_secs(120));
    assert_eq!(p.budget_for("widgetMessage"), Duration::from_secs(86_400));
    // 90 s into a widgetEscalate delivery, a 60 s Retry-After would overrun:
    // one final attempt at the deadline instead, not an immediate dead letter.
    let later = t0() + TimeDelta::seconds(90);
    let asks_60 = AttemptResult::Status { code: 503, retry_after: Some(Duration::from_secs(60)) };
    let deadline = t0() + TimeDelta::seconds(120);
    assert_eq!(p.decide("widgetEscalate", t0(), later, 5, asks_60, 0.0), Decision::RetryAt(deadline));
    assert_eq!(
        p.decide("widgetMessage", t0(), later, 5, asks_60, 0.0),
        Decision::RetryAt(later + TimeDelta::seconds(60))
    );
}

#[test]
fn the_final_attempt_is_made_at_the_deadline_and_gives_up_if_it_fails() {
    let p = RetryPolicy::default();
    let deadline = t0() + TimeDelta::seconds(120);
    // A backoff that would overrun by a millisecond is cut to the deadline.
    let just_before = deadline - TimeDelta::milliseconds(1);
    assert_eq!(
        p.decide("widgetEscalate", t0(), just_before, 9, AttemptResult::Timeout, 0.0),
        Decision::RetryAt(deadline)
    );
    // The attempt at the deadline (or later) is the last.
    for at in [deadline, deadline + TimeDelta::seconds(5)] {
        assert_eq!(
            p.decide("widgetEscalate", t0(), at, 10, AttemptResult::Timeout, 0.0),
            Decision::DeadLetter(GiveUp::OutOfBudget)
        );
    }
    // A success at the deadline still counts.
    assert_eq!(p.decide("widgetEscalate", t0(), deadline, 10, status(200), 0.0), Decision::Delivered);
}

#[test]
fn a_delivery_is_retried_until_its_budget_then_dead_lettered() {
    let p = RetryPolicy::default();
    let (mut now, mut attempts) = (t0(), 0u32);
    loop {
        attempts += 1;
        match p.decide("widgetEscalate", t0(), now, attempts, AttemptResult::Timeout, 0.3) {
            Decision::RetryAt(at) => {
                assert!(at > now);
                assert!(at <= t0() + TimeDelta::seconds(120));
                now = at;
            }
            Decision::DeadLetter(why) => {
                assert_eq!(why, GiveUp::OutOfBudget);
                assert_eq!(now, t0() + TimeDelta::seconds(120), "the last attempt is at the deadline");
                break;
            }
            Decision::Delivered => unreachable!("a timeout is not a delivery"),
        }
        assert!(attempts < 100, "the budget ends the retries");
    }
    assert!(attempts >= 5, "several attempts fit in two minutes (got {attempts})");
}

#[test]
fn final_statuses_stop_at_the_first_attempt() {
    let p = RetryPolicy::default();
    for code in [400, 410] {
        assert_eq!(
            p.decide("widgetMessage", t0(), t0(), 1, status(code), 0.0),
            Decision::DeadLetter(GiveUp::Final)
        );
    }
    assert_eq!(p.decide("widgetMessage", t0(), t0(), 1, status(204), 0.0), Decision::Delivered);
}

#[test]
fn retry_after_parses_seconds_and_http_dates() {
    assert_eq!(parse_retry_after("120", t0()), Some(Duration::from_secs(120)));
    assert_eq!(parse_retry_after(" 7 ", t0()), Some(Duration::from_secs(7)));
    let date = httpdate_for(t0() + TimeDelta::seconds(30));
    assert_eq!(parse_retry_after(&date, t0()), Some(Duration::from_secs(30)));
    let past = httpdate_for(t0() - TimeDelta::seconds(30));
    assert_eq!(parse_retry_after(&past, t0()), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("soon", t0()), None);
    assert_eq!(parse_retry_after("-5", t0()), None);
}

fn httpdate_for(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}
