//! One claimed delivery, from breaker check to settled row: each runs in its
//! own task, so a slow endpoint only ever holds its own deliveries.

use domain::report::error_chain;
use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use domain::retry::{Class, Decision, GiveUp, classify};
use domain::webhook::WebhookPayload;
use store::{ClaimedDelivery, DeadReason, NewAttempt, Settle, SettleJob};
use tracing::{Instrument, debug, info_span, warn};

use crate::breaker::{Admission, Signal};
use crate::client::{Outcome, Request};
use crate::dispatcher::Shared;
use crate::metrics::{record_attempt, record_dead_letter};
use crate::notice::{needs_notice, publish_undeliverable};
use crate::sign::webhook_id;
use crate::targets::{ClaimGuard, Target};

/// How long a dead `widgetEscalate` waits before its notice is published again.
const NOTICE_RETRY: TimeDelta = TimeDelta::seconds(2);

/// Runs one claimed delivery to its settlement. `claim` counts it against
/// its endpoint's capacity until its request is done (not until it is
/// settled: the endpoint's slots are for requests, and settlements are
/// group-committed behind them).
pub(crate) async fn run(
    shared: Arc<Shared>,
    target: Arc<Target>,
    delivery: ClaimedDelivery,
    claim: ClaimGuard,
) {
    // A conversation id in a span is fine (logs), never in a metric label.
    let span = info_span!(
        "webhook",
        delivery_id = delivery.id,
        bot_id = %delivery.key.bot_id,
        conversation_id = %delivery.key.conversation_id,
        sequence = delivery.sequence,
        event_type = %delivery.event_type,
    );
    deliver(&shared, &target, &delivery, claim).instrument(span).await;
    // The conversation's next sequence may be due now; capacity was freed.
    shared.wake.notify_one();
}

async fn deliver(shared: &Shared, target: &Target, delivery: &ClaimedDelivery, claim: ClaimGuard) {
    if let Some(reason) = delivery.reason {
        // Given up earlier; only the notice is outstanding.
        return bury(shared, delivery, reason).await;
    }
    if delivery.event_type == "widgetEscalate" && !delivery.escalation_live {
        // Its escalation ended (timed out, cancelled, failed) before it
        // could be sent: sending it now would make a ghost escalation at the
        // contact centre. Never sent, and visible as skipped.
        let now = Utc::now();
        if settle(shared, delivery, None, Settle::Skipped(DeadReason::EscalationEnded, now)).await {
            record_dead_letter(DeadReason::EscalationEnded.as_str());
            warn!("widgetEscalate skipped: its escalation had already ended");
        }
        return;
    }
    let Some((url, endpoint)) = &target.endpoint else {
        return give_up(shared, delivery, DeadReason::NoEndpoint, None).await;
    };
    let policy = &target.policy;
    let deadline = domain::time::after(delivery.first_attempt_at, policy.budget_for(&delivery.event_type));

    // Wait for a request slot of the endpoint, unless shutting down: then the
    // claim is handed back for another dispatcher.
    let permit = tokio::select! {
        permit = endpoint.permits().clone().acquire_owned() => permit.ok(),
        () = shared.shutdown.cancelled() => None,
    };
    let Some(permit) = permit else {
        if let Err(error) = shared.store.release_claims(&[delivery.id], &shared.claimer).await {
            warn!(error = %error_chain(&error), "releasing a claim at shutdown");
        }
        return;
    };

    let now = Utc::now();
    let probe = match endpoint.admit(now) {
        Admission::Send => false,
        Admission::Probe => true,
        Admission::Defer(until) => {
            drop(permit);
            if now >= deadline {
                return give_up(shared, delivery, DeadReason::OutOfBudget, None).await;
            }
            debug!(%until, "circuit open: deferred");
            settle(shared, delivery, None, Settle::Defer(until.min(deadline))).await;
            return;
        }
    };

    let id =
        webhook_id(delivery.key.bot_id.as_str(), delivery.key.conversation_id.as_str(), delivery.sequence);
    let payload = WebhookPayload::new(
        delivery.key.bot_id.clone(),
        delivery.key.conversation_id.clone(),
        delivery.envelope.clone(),
    );
    let body = serde_json::to_vec(&payload).unwrap_or_default();
    let outcome = shared.client.send(Request { url, id: &id, body: &body, keys: &target.keys }).await;
    drop(permit);
    // The endpoint's slot is free: another delivery may be claimed for it now.
    drop(claim);
    shared.wake.notify_one();
    debug!(ms = outcome.latency.as_secs_f64() * 1e3, "sent");

    let now = Utc::now();
    let class = classify(outcome.result);
    if endpoint.record(breaker_signal(&outcome, class), probe, now) {
        // Back: what waits for a later retry goes now, not at its backoff.
        let bots = endpoint.bots();
        let bots: Vec<&str> = bots.iter().map(String::as_str).collect();
        match shared.store.pull_forward(&bots).await {
            Ok(moved) => {
                tracing::info!(endpoint = %endpoint.origin, moved, "endpoint back: its backlog is due now")
            }
            Err(error) => warn!(error = %error_chain(&error), "making an endpoint's backlog due"),
        }
    }
    record_attempt(&delivery.event_type, outcome.result, outcome.latency.as_secs_f64());
    let attempt = new_attempt(&outcome);
    let sample: f64 = rand::random();
    let decision = policy.decide(
        &delivery.event_type,
        delivery.first_attempt_at,
        now,
        delivery.attempts.saturating_add(1),
        outcome.result,
        sample,
    );
    match decision {
        Decision::Delivered => {
            settle(shared, delivery, Some(&attempt), Settle::Delivered(now)).await;
        }
        Decision::RetryAt(at) => {
            debug!(%at, error = ?outcome.error, "attempt failed; retrying");
            settle(shared, delivery, Some(&attempt), Settle::RetryAt(at)).await;
        }
        Decision::DeadLetter(give) => {
            let reason = match give {
                GiveUp::Final => DeadReason::FinalStatus,
                GiveUp::OutOfBudget => DeadReason::OutOfBudget,
            };
            give_up(shared, delivery, reason, Some(&attempt)).await;
        }
    }
}

fn breaker_signal(outcome: &Outcome, class: Class) -> Signal {
    match (outcome.status_code, class) {
        (_, Class::Retryable { .. }) => Signal::Failed,
        (Some(_), _) => Signal::Alive,
        (None, _) => Signal::Nothing,
    }
}

fn new_attempt(outcome: &Outcome) -> NewAttempt {
    NewAttempt {
        at: outcome.at,
        status_code: outcome.status_code,
        error: outcome.error.clone(),
        latency_ms: u32::try_from(outcome.latency.as_millis()).unwrap_or(u32::MAX),
    }
}

/// Dead-letters a delivery; a `widgetEscalate` first has its notice confirmed.
async fn give_up(
    shared: &Shared,
    delivery: &ClaimedDelivery,
    reason: DeadReason,
    attempt: Option<&NewAttempt>,
) {
    let now = Utc::now();
    if !needs_notice(delivery) {
        if settle(shared, delivery, attempt, Settle::Dead(reason, now)).await {
            record_dead_letter(reason.as_str());
            warn!(reason = reason.as_str(), "webhook dead-lettered");
        }
        return;
    }
    // Record the decision first, so a crash from here on resumes with the
    // notice instead of sending the webhook again.
    if settle(shared, delivery, attempt, Settle::AwaitNotice(reason, now)).await {
        bury(shared, delivery, reason).await;
    }
}

/// Publishes the notice of a given-up `widgetEscalate`, then marks it dead;
/// if the broker does not confirm, tries again later.
async fn bury(shared: &Shared, delivery: &ClaimedDelivery, reason: DeadReason) {
    if needs_notice(delivery)
        && let Err(error) = publish_undeliverable(shared.publisher.as_deref(), delivery).await
    {
        warn!(error = %error_chain(&error), "escalateUndeliverable not confirmed; will retry");
        settle(shared, delivery, None, Settle::Defer(Utc::now() + NOTICE_RETRY)).await;
        return;
    }
    if settle(shared, delivery, None, Settle::Dead(reason, Utc::now())).await {
        record_dead_letter(reason.as_str());
        warn!(reason = reason.as_str(), "webhook dead-lettered");
    }
}

/// Settles the claim through the dispatcher's group commit. Returns whether
/// the row was updated; if not, the lease runs out and the delivery is
/// claimed again (at-least-once).
async fn settle(
    shared: &Shared,
    delivery: &ClaimedDelivery,
    attempt: Option<&NewAttempt>,
    settle: Settle,
) -> bool {
    let job = SettleJob {
        id: delivery.id,
        attempt: attempt.cloned(),
        settle,
        note: None,
        run_started_at: Some(delivery.first_attempt_at),
    };
    shared.settler.settle(job).await
}
