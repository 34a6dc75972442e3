//! One batch of one shard's deliveries → one PostgreSQL transaction.
//!
//! The deliveries arrive in broker order, which is the order the ingress got
//! its confirms (docs/protocol.md §6). For each envelope, in that order: skip it if its
//! event id is already recorded (a redelivery), else run the pure state
//! machine on the conversation's state and collect the effects. Then write
//! states, the event log, the widget stream, the webhook outbox and the
//! timers with one set-based statement each, and commit. The caller acks only
//! after the commit, so a crash anywhere before it redelivers the whole batch,
//! and the dedupe check makes the replay a no-op for what was committed.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use delivery::{Handoff, Slot};
use domain::live::{LiveUpdate, LiveVerdict};
use domain::machine::{Conversation, Effect, TimerKind};
use domain::webhook::WebhookEnvelope;
use domain::widget::WidgetEnvelope;
use domain::{Context, Envelope, EscalationId, Phase, ScopedEventId, Verdict, step};
use store::{ClaimAtInsert, ClaimedDelivery, ConvKey, EventRecord, LeaseFence, Store};

use crate::bots::BotRules;

/// What happened to each envelope of a batch, in order.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// One verdict per envelope; `Duplicate` for a redelivery.
    pub verdicts: Vec<Verdict>,
    /// Per conversation decided on: its new widget events and verdicts, to
    /// announce once committed (never before: a subscriber may act on them).
    pub live: Vec<LiveUpdate>,
    /// New heads of line the batch queued that are left to the dispatchers'
    /// claim rounds (not handed over): someone must be woken for them.
    pub unclaimed_heads: u64,
    /// Deliveries claimed at insert for the dispatcher of this process, to
    /// hand over once committed, each with the endpoint slot reserved for it.
    pub handed: Vec<(ClaimedDelivery, Slot)>,
}

/// A timer's last word in a batch: armed for an escalation at a deadline,
/// or disarmed (`None`).
type TimerWrite = Option<(EscalationId, DateTime<Utc>)>;

/// Everything one batch writes.
#[derive(Default)]
struct Writes {
    states: Vec<(ConvKey, Conversation)>,
    events: Vec<EventRecord>,
    widget: Vec<(ConvKey, WidgetEnvelope)>,
    webhooks: Vec<(ConvKey, WebhookEnvelope)>,
    /// The last word per (conversation, timer).
    timers: HashMap<(ConvKey, TimerKind), TimerWrite>,
}

/// Applies `batch` in one transaction and commits it. On error nothing is
/// committed and the caller must not ack. Unfenced: see [`apply_fenced`].
pub async fn apply_batch(
    store: &Store,
    rules: &BotRules,
    batch: &[Envelope],
    now: DateTime<Utc>,
) -> store::Result<BatchOutcome> {
    apply_fenced(store, rules, batch, now, None).await
}

/// [`apply_batch`], committing only if the worker still holds the shard
/// under `fence`'s epoch, checked inside the transaction (docs/protocol.md
/// §6): a worker whose lease lapsed or was taken fails with
/// [`store::Error::LeaseLost`], having committed nothing.
pub async fn apply_fenced(
    store: &Store,
    rules: &BotRules,
    batch: &[Envelope],
    now: DateTime<Utc>,
    fence: Option<&LeaseFence>,
) -> store::Result<BatchOutcome> {
    apply_handing(store, rules, batch, now, fence, None).await
}

/// [`apply_fenced`], claiming at insert the new heads of line `handoff`'s
/// dispatcher has room for (see [`delivery::handoff`]); the outcome holds
/// them, to hand over once committed.
#[tracing::instrument(skip_all, fields(batch = batch.len()))]
pub async fn apply_handing(
    store: &Store,
    rules: &BotRules,
    batch: &[Envelope],
    now: DateTime<Utc>,
    fence: Option<&LeaseFence>,
    handoff: Option<&Handoff>,
) -> store::Result<BatchOutcome> {
    let tx = store.batch_transaction().await?;

    let mut keys: Vec<ConvKey> = batch.iter().map(ConvKey::from).collect();
    keys.sort();
    keys.dedup();
    // Namespaced (docs/protocol.md §2): a client's `timer:…` id is not our timer's.
    let ids: Vec<(ConvKey, ScopedEventId)> =
        batch.iter().map(|e| (ConvKey::from(e), e.command.scoped_id())).collect();
    // BEGIN, the lease fence and both reads in one round trip: the client
    // pipelines concurrent queries, sent in the order they are first polled.
    // Joined, not try-joined: when one statement fails, the ones after it are
    // refused as "transaction aborted", and that refusal may be read first.
    let fenced = async {
        match fence {
            Some(fence) => store::check_lease(tx.db(), fence).await,
            None => Ok(()),
        }
    };
    let (begun, fenced, locked, recorded) = tokio::join!(
        tx.begin(),
        fenced,
        store::lock_conversations(tx.db(), &keys),
        store::applied_event_ids(tx.db(), &ids)
    );
    let (mut states, recorded) = match (begun, fenced, locked, recorded) {
        (Ok(()), Ok(()), Ok(states), Ok(recorded)) => (states, recorded),
        (begun, fenced, locked, recorded) => {
            return Err(failed([begun.err(), fenced.err(), locked.err(), recorded.err()]));
        }
    };

    let mut writes = Writes::default();
    let mut outcome = BatchOutcome::default();
    let mut seen: HashSet<(ConvKey, ScopedEventId)> = HashSet::new();
    let mut changed: Vec<ConvKey> = Vec::new();
    // Announced too: a `Prefer: wait` caller resending an event waits for its verdict.
    let mut duplicates: Vec<(ConvKey, ScopedEventId)> = Vec::new();
    for (envelope, id) in batch.iter().zip(ids) {
        if recorded.contains(&id) || !seen.insert(id.clone()) {
            outcome.verdicts.push(Verdict::Duplicate);
            duplicates.push(id);
            continue;
        }
        let (key, ScopedEventId(id_space, event_id)) = id;
        let state = states.entry(key.clone()).or_default();
        let phase_before = state.phase();
        let bot_rules = rules.rules_for(&envelope.bot_id);
        let transition = step(state, &envelope.command, &Context { now, rules: bot_rules });
        for effect in transition.effects {
            match effect {
                Effect::Widget(w) => writes.widget.push((key.clone(), w)),
                Effect::Webhook(w) => writes.webhooks.push((key.clone(), w)),
                Effect::SetTimer { escalation_id, kind, at } => {
                    writes.timers.insert((key.clone(), kind), Some((escalation_id, at)));
                }
                Effect::CancelTimer { kind, .. } => {
                    writes.timers.insert((key.clone(), kind), None);
                }
            }
        }
        writes.events.push(EventRecord {
            key: key.clone(),
            event_id,
            id_space,
            event_type: envelope.event_type().to_owned(),
            verdict: transition.verdict,
            phase_before,
            phase_after: transition.next.phase(),
            received_at: envelope.received_at,
            applied_at: now,
            warnings: envelope.command.input.warnings().to_vec(),
        });
        outcome.verdicts.push(transition.verdict);
        *state = transition.next;
        changed.push(key);
    }
    changed.sort();
    changed.dedup();
    writes.states =
        changed.into_iter().filter_map(|key| states.remove(&key).map(|state| (key, state))).collect();

    outcome.live = live_updates(&writes, duplicates, &states);
    let (claimer, mut slots) = reserve_slots(handoff, &writes.webhooks);
    let take: Vec<bool> = writes.webhooks.iter().map(|(key, _)| slots.contains_key(key)).collect();
    let claim = claimer.map(|(claimer, lease)| ClaimAtInsert { claimer, lease, take: &take });

    let mut armed = Vec::new();
    let mut disarmed = Vec::new();
    for ((key, kind), last) in writes.timers {
        match last {
            Some((escalation_id, at)) => armed.push((key, escalation_id, kind, at)),
            None => disarmed.push((key, kind)),
        }
    }
    // Every write in one round trip (pipelined, sent in this order); any
    // failure fails the whole batch, and the transaction is rolled back.
    let written = tokio::join!(
        store::save_conversations(tx.db(), &writes.states, now),
        store::record_events(tx.db(), &writes.events),
        store::insert_widget_events(tx.db(), &writes.widget),
        store::queue_webhook_deliveries(tx.db(), &writes.webhooks, now, claim),
        store::delete_timers(tx.db(), &disarmed),
        store::upsert_timers(tx.db(), &armed),
    );
    let (a, b, c, d, e, f) = written;
    let queued = match (a, b, c, d, e, f) {
        (Ok(_), Ok(_), Ok(_), Ok(queued), Ok(_), Ok(_)) => queued,
        (a, b, c, d, e, f) => return Err(failed([a.err(), b.err(), c.err(), d.err(), e.err(), f.err()])),
    };
    tx.commit().await?;
    outcome.unclaimed_heads = queued.heads.saturating_sub(queued.claimed.len() as u64);
    for (id, key, sequence) in queued.claimed {
        let Some(slot) = slots.remove(&key) else { continue };
        let Some((_, envelope)) = writes.webhooks.iter().find(|(k, w)| *k == key && w.sequence == sequence)
        else {
            continue;
        };
        let state = outcome_state(&writes.states, &key);
        outcome.handed.push((claimed_at_insert(id, key, envelope.clone(), state, now), slot));
    }
    Ok(outcome)
}

/// A slot of its endpoint for each conversation the batch queues webhooks
/// for, as far as `handoff`'s dispatcher has room, with that dispatcher's
/// claimer name and lease (`None` when nothing was reserved).
fn reserve_slots<'h>(
    handoff: Option<&'h Handoff>,
    webhooks: &[(ConvKey, WebhookEnvelope)],
) -> (Option<(&'h str, std::time::Duration)>, HashMap<ConvKey, Slot>) {
    let mut slots = HashMap::new();
    let Some((handoff, claimer)) = handoff.and_then(|h| h.claimer().map(|claimer| (h, claimer))) else {
        return (None, slots);
    };
    for (key, _) in webhooks {
        if !slots.contains_key(key)
            && let Some(slot) = handoff.reserve(key.bot_id.as_str())
        {
            slots.insert(key.clone(), slot);
        }
    }
    ((!slots.is_empty()).then_some(claimer), slots)
}

fn outcome_state<'a>(states: &'a [(ConvKey, Conversation)], key: &ConvKey) -> Option<&'a Conversation> {
    states.iter().find(|(k, _)| k == key).map(|(_, state)| state)
}

/// The delivery a claim round would have read for a head claimed at insert:
/// no attempt yet, its budget starting now (for a `widgetEscalate`, its
/// escalation's creation: this batch), and live if its escalation is the
/// conversation's live one after the batch.
fn claimed_at_insert(
    id: i64,
    key: ConvKey,
    envelope: WebhookEnvelope,
    state: Option<&Conversation>,
    now: DateTime<Utc>,
) -> ClaimedDelivery {
    let escalation_live = state
        .and_then(Conversation::live)
        .is_some_and(|live| envelope.escalation_id.as_ref() == Some(&live.id));
    ClaimedDelivery {
        id,
        key,
        sequence: envelope.sequence,
        event_type: envelope.event.event_type().to_owned(),
        escalation_id: envelope.escalation_id.clone(),
        envelope,
        attempts: 0,
        first_attempt_at: now,
        reason: None,
        escalation_live,
    }
}

/// The error that failed a pipelined step; `errors` holds at least one.
fn failed<const N: usize>(errors: [Option<store::Error>; N]) -> store::Error {
    store::Error::first_cause(errors).unwrap_or_else(|| unreachable!("called only when a statement failed"))
}

/// One [`LiveUpdate`] per conversation the batch decided on, in key order.
/// `unchanged` holds the locked states of conversations with only duplicates.
fn live_updates(
    writes: &Writes,
    duplicates: Vec<(ConvKey, ScopedEventId)>,
    unchanged: &HashMap<ConvKey, Conversation>,
) -> Vec<LiveUpdate> {
    let update = |key: &ConvKey, state: Option<&Conversation>| LiveUpdate {
        bot_id: key.bot_id.clone(),
        conversation_id: key.conversation_id.clone(),
        phase: state.map_or(Phase::Idle, Conversation::phase),
        events: Vec::new(),
        verdicts: Vec::new(),
    };
    let mut updates: BTreeMap<ConvKey, LiveUpdate> =
        writes.states.iter().map(|(key, state)| (key.clone(), update(key, Some(state)))).collect();
    for (key, ScopedEventId(space, event_id)) in duplicates {
        updates
            .entry(key.clone())
            .or_insert_with(|| update(&key, unchanged.get(&key)))
            .verdicts
            .push(LiveVerdict { event_id, space, verdict: Verdict::Duplicate });
    }
    for record in &writes.events {
        if let Some(update) = updates.get_mut(&record.key) {
            let (event_id, space) = (record.event_id.clone(), record.id_space);
            update.verdicts.push(LiveVerdict { event_id, space, verdict: record.verdict });
        }
    }
    for (key, envelope) in &writes.widget {
        if let Some(update) = updates.get_mut(key) {
            update.events.push(envelope.clone());
        }
    }
    updates.into_values().collect()
}
