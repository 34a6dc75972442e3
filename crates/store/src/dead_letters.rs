//! The operator's view of the webhook outbox (docs/protocol.md §8): dead letters listed
//! with filters, shown with their whole attempt history, replayed (as pending
//! again, with a fresh budget), skipped or purged; and a conversation's
//! deliveries with their attempts, for its timeline.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::codec::{key_from_row, to_u64};
use crate::error::{Error, Result};
use crate::key::ConvKey;
use crate::outbox::{DeadReason, reason_from_column};
use crate::pool::Store;

/// One webhook delivery as the operator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    /// The row id (what `dlq show|replay|skip` take).
    pub id: i64,
    /// The conversation.
    pub key: ConvKey,
    /// The conversation's webhook sequence.
    pub sequence: u64,
    /// `widgetEscalate`, `widgetMessage`, …
    pub event_type: String,
    /// The escalation it belongs to.
    pub escalation_id: Option<String>,
    /// `pending`, `delivered`, `dead` or `skipped`.
    pub status: String,
    /// Why it was given up, when it was.
    pub reason: Option<DeadReason>,
    /// Attempts in the current run.
    pub attempts: u32,
    /// Times an operator replayed it.
    pub replays: u32,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it is (or was last) due.
    pub next_attempt_at: DateTime<Utc>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was dead-lettered.
    pub dead_at: Option<DateTime<Utc>>,
    /// The last failure.
    pub last_error: Option<String>,
    /// The stored `WebhookEnvelope`.
    pub payload: serde_json::Value,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// 1, 2, … over the delivery's whole life (replays continue the count).
    pub attempt: u32,
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// The response status, if any.
    pub status_code: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Milliseconds to the response or failure.
    pub latency_ms: Option<u32>,
}

/// Which dead letters a command applies to. Empty matches all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only this bot's.
    pub bot_id: Option<String>,
    /// Only this conversation's (of any bot, unless `bot_id` is set too).
    pub conversation_id: Option<String>,
    /// Only those given up for this reason.
    pub reason: Option<DeadReason>,
    /// Dead-lettered at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered before this time.
    pub until: Option<DateTime<Utc>>,
}

impl DeadLetterFilter {
    /// Whether nothing narrows it down.
    pub fn is_empty(&self) -> bool {
        self == &DeadLetterFilter::default()
    }
}

/// Why a dead letter could not be replayed or skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterChange {
    /// Done.
    Changed,
    /// No delivery has this id.
    NotFound,
    /// The delivery exists but is not dead (its status).
    NotDead(String),
}

const COLUMNS: &str = "id, bot_id, conversation_id, sequence, event_type, escalation_id, status, reason, \
                       attempts, replays, created_at, next_attempt_at, delivered_at, dead_at, last_error, payload";

/// What `dlq list` shows; the given-up indexes have this predicate, word for word.
const GIVEN_UP: &str = "(status = 'dead' OR (status = 'skipped' AND reason = 'escalation_ended'))";

// Each filter is optional: `$n IS NULL OR …` (purge).
const FILTER: &str = "status = 'dead'
    AND ($1::text IS NULL OR bot_id = $1)
    AND ($2::text IS NULL OR conversation_id = $2)
    AND ($3::text IS NULL OR reason = $3)
    AND ($4::timestamptz IS NULL OR dead_at >= $4)
    AND ($5::timestamptz IS NULL OR dead_at < $5)";

fn count(row: &Row, column: &'static str) -> Result<u32> {
    let value: i32 = row.try_get(column)?;
    u32::try_from(value).map_err(|_| Error::Corrupt { column, value: value.to_string() })
}

fn record_from_row(row: &Row) -> Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: row.try_get("id")?,
        key: key_from_row(row)?,
        sequence: to_u64(row.try_get("sequence")?, "sequence")?,
        event_type: row.try_get("event_type")?,
        escalation_id: row.try_get("escalation_id")?,
        status: row.try_get("status")?,
        reason: reason_from_column(row.try_get("reason")?)?,
        attempts: count(row, "attempts")?,
        replays: count(row, "replays")?,
        created_at: row.try_get("created_at")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        delivered_at: row.try_get("delivered_at")?,
        dead_at: row.try_get("dead_at")?,
        last_error: row.try_get("last_error")?,
        payload: row.try_get("payload")?,
    })
}

fn attempt_from_row(row: &Row) -> Result<AttemptRecord> {
    let status: Option<i32> = row.try_get("status_code")?;
    let latency: Option<i32> = row.try_get("latency_ms")?;
    Ok(AttemptRecord {
        attempt: count(row, "attempt")?,
        at: row.try_get("at")?,
        status_code: status.map(|s| u16::try_from(s).unwrap_or(0)),
        error: row.try_get("error")?,
        latency_ms: latency.map(|l| u32::try_from(l).unwrap_or(0)),
    })
}

impl Store {
    /// Dead letters matching `filter`, and deliveries the dispatcher skipped
    /// because their escalation had ended (never sent, shown so an operator
    /// sees why), oldest first (by `dead_at`, then id), at most `limit`.
    pub async fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>> {
        // Only the filters given, so that every plan (custom or generic) can
        // walk one of the given-up indexes in order and stop at the limit;
        // `$n IS NULL OR …` would hide the bot's index from a generic plan.
        let params = FilterParams::new(filter);
        let mut conditions = vec![GIVEN_UP.to_owned()];
        let mut values: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let candidates: [(&str, Option<&(dyn ToSql + Sync)>); 5] = [
            ("bot_id = ${}", params.bot_id.as_ref().map(|v| v as &(dyn ToSql + Sync))),
            ("conversation_id = ${}", params.conversation_id.as_ref().map(|v| v as &(dyn ToSql + Sync))),
            ("reason = ${}", params.reason.as_ref().map(|v| v as &(dyn ToSql + Sync))),
            ("dead_at >= ${}", params.since.as_ref().map(|v| v as &(dyn ToSql + Sync))),
            ("dead_at < ${}", params.until.as_ref().map(|v| v as &(dyn ToSql + Sync))),
        ];
        for (condition, value) in candidates {
            if let Some(value) = value {
                values.push(value);
                conditions.push(condition.replace("{}", &values.len().to_string()));
            }
        }
        values.push(&limit);
        let sql = format!(
            "SELECT {COLUMNS} FROM {{schema}}.webhook_deliveries WHERE {} ORDER BY dead_at, id LIMIT ${}",
            conditions.join(" AND "),
            values.len()
        );
        let rows = self.query(&sql, &values).await?;
        rows.iter().map(record_from_row).collect()
    }

    /// One delivery, whatever its status.
    pub async fn delivery(&self, id: i64) -> Result<Option<DeliveryRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM {{schema}}.webhook_deliveries WHERE id = $1");
        let rows = self.query(&sql, &[&id]).await?;
        rows.first().map(record_from_row).transpose()
    }

    /// A delivery's attempts, in order.
    pub async fn delivery_attempts(&self, id: i64) -> Result<Vec<AttemptRecord>> {
        let rows = self
            .query(
                "SELECT attempt, at, status_code, error, latency_ms FROM {schema}.webhook_attempts
                 WHERE delivery_id = $1 ORDER BY attempt",
                &[&id],
            )
            .await?;
        rows.iter().map(attempt_from_row).collect()
    }

    /// A conversation's deliveries in sequence order, each with its attempts.
    pub async fn deliveries_with_attempts(
        &self,
        key: &ConvKey,
    ) -> Result<Vec<(DeliveryRecord, Vec<AttemptRecord>)>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {{schema}}.webhook_deliveries
             WHERE bot_id = $1 AND conversation_id = $2 ORDER BY sequence"
        );
        let rows = self.query(&sql, &[&key.bot_id.as_str(), &key.conversation_id.as_str()]).await?;
        let deliveries = rows.iter().map(record_from_row).collect::<Result<Vec<_>>>()?;
        let ids: Vec<i64> = deliveries.iter().map(|d| d.id).collect();
        let rows = self
            .query(
                "SELECT delivery_id, attempt, at, status_code, error, latency_ms FROM {schema}.webhook_attempts
                 WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt",
                &[&ids],
            )
            .await?;
        let mut out: Vec<(DeliveryRecord, Vec<AttemptRecord>)> =
            deliveries.into_iter().map(|d| (d, Vec::new())).collect();
        for row in &rows {
            let id: i64 = row.try_get("delivery_id")?;
            if let Some((_, attempts)) = out.iter_mut().find(|(d, _)| d.id == id) {
                attempts.push(attempt_from_row(row)?);
            }
        }
        Ok(out)
    }

    /// Re-queues the dead letters `ids` (in one statement, so a conversation's
    /// replayed deliveries become pending together and go out in sequence
    /// order): `pending`, due `now`, attempts and budget reset. Their webhook
    /// id does not change. Returns how many were dead and are now pending.
    pub async fn replay_dead_letters(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        // The replayed rows become pending together; each conversation's
        // lowest becomes its head unless the head is lower already or is
        // being sent (then the replayed rows follow it: the head moves to the
        // lowest pending sequence when it is settled).
        let rows = self
            .query(
                "WITH replayed AS (
                     UPDATE {schema}.webhook_deliveries SET
                         status = 'pending', reason = NULL, dead_at = NULL, attempts = 0,
                         first_attempt_at = NULL, next_attempt_at = $2, replays = replays + 1,
                         claimed_by = NULL, claimed_until = NULL
                     WHERE id = ANY($1) AND status = 'dead'
                     RETURNING id, bot_id, conversation_id, sequence, next_attempt_at
                 ), firsts AS (
                     SELECT DISTINCT ON (bot_id, conversation_id) * FROM replayed
                     ORDER BY bot_id, conversation_id, sequence
                 ), heads AS (
                     INSERT INTO {schema}.webhook_heads (bot_id, conversation_id, delivery_id, sequence, due_at)
                     SELECT bot_id, conversation_id, id, sequence, next_attempt_at FROM firsts
                     ORDER BY bot_id, conversation_id
                     ON CONFLICT (bot_id, conversation_id) DO UPDATE
                         SET delivery_id = EXCLUDED.delivery_id, sequence = EXCLUDED.sequence,
                             due_at = EXCLUDED.due_at, claimed_by = NULL
                         WHERE EXCLUDED.sequence < webhook_heads.sequence AND webhook_heads.claimed_by IS NULL
                     RETURNING 1
                 )
                 SELECT (SELECT count(*) FROM replayed) AS replayed, (SELECT count(*) FROM heads) AS heads",
                &[&ids, &now],
            )
            .await?;
        let replayed: i64 = rows.first().map(|row| row.try_get("replayed")).transpose()?.unwrap_or(0);
        if replayed > 0 {
            // Best effort: a dispatcher that misses it polls anyway.
            if let Err(error) = self.announce_outbox().await {
                tracing::warn!(%error, "announcing replayed deliveries");
            }
        }
        Ok(u64::try_from(replayed).unwrap_or(0))
    }

    /// Replays one dead letter; see [`Store::replay_dead_letters`].
    pub async fn replay_dead_letter(&self, id: i64, now: DateTime<Utc>) -> Result<DeadLetterChange> {
        if self.replay_dead_letters(&[id], now).await? == 1 {
            return Ok(DeadLetterChange::Changed);
        }
        self.why_unchanged(id).await
    }

    /// Marks one dead letter `skipped`: it stays in the history, out of the
    /// dead-letter list, never sent.
    pub async fn skip_dead_letter(&self, id: i64) -> Result<DeadLetterChange> {
        let changed = self
            .execute(
                "UPDATE {schema}.webhook_deliveries SET status = 'skipped'
                 WHERE id = $1 AND status = 'dead'",
                &[&id],
            )
            .await?;
        if changed == 1 { Ok(DeadLetterChange::Changed) } else { self.why_unchanged(id).await }
    }

    /// Deletes the dead letters matching `filter`, with their attempts.
    /// Returns how many.
    pub async fn purge_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let sql = format!("DELETE FROM {{schema}}.webhook_deliveries WHERE {FILTER}");
        let params = FilterParams::new(filter);
        self.execute(&sql, &params.refs()).await
    }

    async fn why_unchanged(&self, id: i64) -> Result<DeadLetterChange> {
        let rows = self.query("SELECT status FROM {schema}.webhook_deliveries WHERE id = $1", &[&id]).await?;
        Ok(match rows.first() {
            None => DeadLetterChange::NotFound,
            Some(row) => DeadLetterChange::NotDead(row.try_get("status")?),
        })
    }
}

/// The filter as the `$1`…`$5` of [`FILTER`].
struct FilterParams<'a> {
    bot_id: Option<&'a str>,
    conversation_id: Option<&'a str>,
    reason: Option<&'static str>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl<'a> FilterParams<'a> {
    fn new(filter: &'a DeadLetterFilter) -> Self {
        Self {
            bot_id: filter.bot_id.as_deref(),
            conversation_id: filter.conversation_id.as_deref(),
            reason: filter.reason.map(DeadReason::as_str),
            since: filter.since,
            until: filter.until,
        }
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![&self.bot_id, &self.conversation_id, &self.reason, &self.since, &self.until]
    }
}
