//! Webhook dead letters (docs/protocol.md §8): list, show, replay, skip, purge.
//! The one implementation behind `escalations dlq` and the admin API's
//! `/v1/dead-letters`: the same filters, the same dry runs, the same answers.
//!
//! Bulk and destructive actions are guarded alike: a bulk replay without
//! `confirm` is a dry run that says what would be replayed; a purge without
//! `confirm` is refused with the count it would delete.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::webhook::{WebhookEnvelope, WebhookPayload};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{AttemptRecord, DeadLetterChange, DeadLetterFilter, DeadReason, DeliveryRecord, Store};
use utoipa::ToSchema;

use crate::error::{OpsError, OpsResult};
use crate::filter::{FilterArgs, format_time_ms};

/// Bulk actions look at this many dead letters at most per call.
pub const BULK_LIMIT: i64 = 100_000;

/// What every view of a delivery shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryFields {
    /// The delivery id (what show, replay and skip take).
    pub id: i64,
    /// The bot.
    pub bot_id: String,
    /// The conversation (`platformConversationId`).
    pub conversation_id: String,
    /// The conversation's webhook sequence.
    pub sequence: u64,
    /// `widgetEscalate`, `widgetMessage`, ...
    pub event_type: String,
    /// The escalation it belongs to.
    pub escalation_id: Option<String>,
    /// The `webhook-id` header it is (re)sent with.
    pub webhook_id: String,
    /// `pending`, `delivered`, `dead` or `skipped`.
    pub status: String,
    /// Why it was given up: `final_status`, `out_of_budget`, `no_endpoint`,
    /// `escalation_ended`, `undecodable`.
    pub reason: Option<String>,
    /// Times an operator replayed it.
    pub replays: u32,
    /// When it was queued (RFC 3339, ms).
    pub created_at: String,
    /// When it was dead-lettered.
    pub dead_at: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
}

/// A dead letter in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Its fields.
    #[serde(flatten)]
    pub fields: DeliveryFields,
    /// Attempts in the current run.
    pub attempts: u32,
}

/// One attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1, 2, ... over the delivery's whole life.
    pub attempt: u32,
    /// When it was sent (RFC 3339, ms).
    pub at: String,
    /// The response status, if any.
    pub status_code: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Time to the response or failure.
    pub latency_ms: Option<u32>,
}

/// One dead letter (or any delivery) with its payload and every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterDetail {
    /// Its fields.
    #[serde(flatten)]
    pub fields: DeliveryFields,
    /// The body that is (re)posted.
    pub payload: Value,
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
}

/// One conversation's share of a bulk replay, in sequence order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationReplay {
    /// The bot.
    pub bot_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// `(id, sequence)` of each dead letter, in sequence order.
    pub deliveries: Vec<ReplayedDelivery>,
    /// How many were replayed (0 in a dry run).
    pub replayed: u64,
}

/// A dead letter of a bulk replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplayedDelivery {
    /// The delivery id.
    pub id: i64,
    /// Its sequence.
    pub sequence: u64,
}

/// What a bulk replay did, or would do (`dryRun`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    /// Nothing was changed: `confirm` (`--yes`) was not given.
    pub dry_run: bool,
    /// Dead letters matched.
    pub matched: u64,
    /// Dead letters replayed.
    pub replayed: u64,
    /// Per conversation, in sequence order.
    pub conversations: Vec<ConversationReplay>,
}

/// What a purge deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PurgeReport {
    /// Dead letters deleted, with their attempts.
    pub deleted: u64,
}

/// What a single replay or skip did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Changed {
    /// The delivery id.
    pub id: i64,
    /// Its status now: `pending` after a replay, `skipped` after a skip.
    pub status: String,
}

fn store_error(doing: &str) -> impl FnOnce(store::Error) -> OpsError + '_ {
    move |error| OpsError::unavailable(doing, error)
}

/// Dead letters matching `filter`, oldest first, at most `limit` (1-10,000).
pub async fn list(store: &Store, filter: &FilterArgs, limit: i64) -> OpsResult<Vec<DeadLetter>> {
    if !(1..=10_000).contains(&limit) {
        return Err(OpsError::invalid(format!("invalid limit {limit}: expected 1 to 10000")));
    }
    let filter = filter.parse(Utc::now())?;
    let letters =
        store.list_dead_letters(&filter, limit).await.map_err(store_error("listing dead letters"))?;
    Ok(letters.iter().map(dead_letter).collect())
}

/// One delivery with its payload and attempts.
pub async fn show(store: &Store, id: i64) -> OpsResult<DeadLetterDetail> {
    let record = store.delivery(id).await.map_err(store_error("reading the delivery"))?;
    let Some(record) = record else { return Err(OpsError::not_found(format!("dead letter {id} not found"))) };
    let attempts = store.delivery_attempts(id).await.map_err(store_error("reading its attempts"))?;
    Ok(DeadLetterDetail {
        fields: fields(&record),
        payload: posted_body(&record),
        attempts: attempts.iter().map(attempt).collect(),
    })
}

/// Re-queues one dead letter with a fresh budget and the same webhook-id.
pub async fn replay_one(store: &Store, id: i64) -> OpsResult<Changed> {
    let change = store.replay_dead_letter(id, Utc::now()).await.map_err(store_error("replaying"))?;
    check_change(id, change)?;
    Ok(Changed { id, status: "pending".to_owned() })
}

/// Marks a dead letter skipped: kept in the history, never sent.
pub async fn skip(store: &Store, id: i64) -> OpsResult<Changed> {
    check_change(id, store.skip_dead_letter(id).await.map_err(store_error("skipping"))?)?;
    Ok(Changed { id, status: "skipped".to_owned() })
}

/// Replays every match, each conversation's dead letters together and in
/// sequence order; only says what it would do unless `confirm`.
pub async fn replay(store: &Store, filter: &FilterArgs, confirm: bool) -> OpsResult<ReplayReport> {
    replay_reporting(store, filter, confirm, |_, _, _| {}).await
}

/// [`replay`], calling `progress(conversation, replayed so far, matched)` after
/// each conversation it replayed.
pub async fn replay_reporting(
    store: &Store,
    filter: &FilterArgs,
    confirm: bool,
    mut progress: impl FnMut(&ConversationReplay, u64, u64),
) -> OpsResult<ReplayReport> {
    let now = Utc::now();
    let filter = filter.parse(now)?;
    let mut letters =
        store.list_dead_letters(&filter, BULK_LIMIT).await.map_err(store_error("listing dead letters"))?;
    // Skipped deliveries (their escalation ended) are listed, never replayed.
    letters.retain(|letter| letter.status == "dead");
    let mut by_conversation: BTreeMap<(String, String), Vec<&DeliveryRecord>> = BTreeMap::new();
    for letter in &letters {
        let key = (letter.key.bot_id.to_string(), letter.key.conversation_id.to_string());
        by_conversation.entry(key).or_default().push(letter);
    }
    let mut report = ReplayReport {
        dry_run: !confirm,
        matched: letters.len() as u64,
        replayed: 0,
        conversations: Vec::new(),
    };
    for ((bot_id, conversation_id), mut letters) in by_conversation {
        letters.sort_by_key(|l| l.sequence);
        let deliveries: Vec<ReplayedDelivery> =
            letters.iter().map(|l| ReplayedDelivery { id: l.id, sequence: l.sequence }).collect();
        let mut entry = ConversationReplay { bot_id, conversation_id, deliveries, replayed: 0 };
        if confirm {
            let ids: Vec<i64> = entry.deliveries.iter().map(|d| d.id).collect();
            let replayed = store.replay_dead_letters(&ids, now).await.map_err(|error| {
                OpsError::unavailable(&format!("replaying {}/{}", entry.bot_id, entry.conversation_id), error)
            })?;
            entry.replayed = replayed;
            report.replayed += replayed;
            progress(&entry, report.replayed, report.matched);
        }
        report.conversations.push(entry);
    }
    Ok(report)
}

/// Deletes the matching dead letters and their attempts; refused (with the
/// count) unless `confirm`.
pub async fn purge(store: &Store, filter: &FilterArgs, confirm: bool) -> OpsResult<PurgeReport> {
    let filter: DeadLetterFilter = filter.parse(Utc::now())?;
    if !confirm {
        let listed = store.list_dead_letters(&filter, BULK_LIMIT).await.map_err(store_error("counting"))?;
        let count = listed.iter().filter(|letter| letter.status == "dead").count();
        return Err(OpsError::refused(format!(
            "refusing to delete {count} dead letter(s) without --yes (confirm=true over HTTP): \
             this cannot be undone"
        )));
    }
    let deleted = store.purge_dead_letters(&filter).await.map_err(store_error("purging dead letters"))?;
    Ok(PurgeReport { deleted })
}

fn check_change(id: i64, change: DeadLetterChange) -> OpsResult<()> {
    match change {
        DeadLetterChange::Changed => Ok(()),
        DeadLetterChange::NotFound => Err(OpsError::not_found(format!("dead letter {id} not found"))),
        DeadLetterChange::NotDead(status) => {
            Err(OpsError::refused(format!("delivery {id} is {status}, not a dead letter")))
        }
    }
}

/// The `webhook-id` of a delivery.
pub fn webhook_id(record: &DeliveryRecord) -> String {
    delivery::webhook_id(record.key.bot_id.as_str(), record.key.conversation_id.as_str(), record.sequence)
}

/// The fields of `record`.
pub fn fields(r: &DeliveryRecord) -> DeliveryFields {
    DeliveryFields {
        id: r.id,
        bot_id: r.key.bot_id.to_string(),
        conversation_id: r.key.conversation_id.to_string(),
        sequence: r.sequence,
        event_type: r.event_type.clone(),
        escalation_id: r.escalation_id.clone(),
        webhook_id: webhook_id(r),
        status: r.status.clone(),
        reason: r.reason.map(|reason| DeadReason::as_str(reason).to_owned()),
        replays: r.replays,
        created_at: format_time_ms(r.created_at),
        dead_at: r.dead_at.map(format_time_ms),
        delivered_at: r.delivered_at.map(format_time_ms),
        last_error: r.last_error.clone(),
    }
}

/// `record` as a list entry.
pub fn dead_letter(record: &DeliveryRecord) -> DeadLetter {
    DeadLetter { fields: fields(record), attempts: record.attempts }
}

/// `record` as the API shows it.
pub fn attempt(a: &AttemptRecord) -> Attempt {
    Attempt {
        attempt: a.attempt,
        at: format_time_ms(a.at),
        status_code: a.status_code,
        error: a.error.clone(),
        latency_ms: a.latency_ms,
    }
}

/// The body that is (re)posted: the stored envelope in the wire wrapper.
pub fn posted_body(record: &DeliveryRecord) -> Value {
    match serde_json::from_value::<WebhookEnvelope>(record.payload.clone()) {
        Ok(envelope) => {
            let payload =
                WebhookPayload::new(record.key.bot_id.clone(), record.key.conversation_id.clone(), envelope);
            serde_json::to_value(payload).unwrap_or(Value::Null)
        }
        Err(_) => record.payload.clone(),
    }
}

/// `HTTP 503 (12 ms)`, `timed out (10000 ms)`, `refused: ...`.
pub fn describe_attempt(a: &Attempt) -> String {
    let outcome = match (&a.status_code, &a.error) {
        (Some(_), Some(error)) if error.starts_with("HTTP ") => error.clone(),
        (Some(code), _) => format!("HTTP {code}"),
        (None, Some(error)) => error.clone(),
        (None, None) => "no response".to_owned(),
    };
    match a.latency_ms {
        Some(ms) => format!("{outcome} ({ms} ms)"),
        None => outcome,
    }
}

/// Parses a time the API printed back (for renderers).
pub fn parse_printed(at: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(at).ok().map(|t| t.with_timezone(&Utc))
}
