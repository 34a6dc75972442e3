//! The dispatcher's side of the webhook outbox (SPEC §4): claiming due
//! deliveries head-of-line per conversation, and settling each claim after an
//! attempt (delivered, retry later, dead-lettered) in one transaction with the
//! attempt's history row.
//!
//! A claim is a lease (`claimed_by`, `claimed_until`) taken with
//! `FOR UPDATE SKIP LOCKED`, so several dispatchers (one per worker process)
//! share the outbox without sending a delivery twice while its lease holds. A
//! dispatcher that dies leaves leases that expire; the rows are then claimed
//! again (at-least-once).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::Json;

use domain::EscalationId;
use domain::webhook::WebhookEnvelope;

use crate::codec::{key_from_row, parse_id, to_u64};
use crate::error::{Error, Result};
use crate::key::ConvKey;
use crate::store::Store;

/// Why a delivery stopped being retried (the `reason` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadReason {
    /// The endpoint answered with a final status (or the address was refused).
    FinalStatus,
    /// The event type's retry budget ran out.
    OutOfBudget,
    /// The bot has no webhook URL configured.
    NoEndpoint,
}

impl DeadReason {
    /// Every reason, for help texts and validation.
    pub const ALL: [DeadReason; 3] =
        [DeadReason::FinalStatus, DeadReason::OutOfBudget, DeadReason::NoEndpoint];

    /// Column and metrics-label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::FinalStatus => "final_status",
            DeadReason::OutOfBudget => "out_of_budget",
            DeadReason::NoEndpoint => "no_endpoint",
        }
    }

    /// Parses a column value (or a CLI argument).
    pub fn parse(value: &str) -> Option<DeadReason> {
        DeadReason::ALL.into_iter().find(|reason| reason.as_str() == value)
    }
}

pub(crate) fn reason_from_column(value: Option<String>) -> Result<Option<DeadReason>> {
    value.map(|value| DeadReason::parse(&value).ok_or(Error::Corrupt { column: "reason", value })).transpose()
}

/// A delivery this dispatcher holds the claim of.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDelivery {
    /// The row id.
    pub id: i64,
    /// The conversation.
    pub key: ConvKey,
    /// The conversation's webhook sequence.
    pub sequence: u64,
    /// `widgetEscalate`, `widgetMessage`, …
    pub event_type: String,
    /// The escalation the webhook belongs to.
    pub escalation_id: Option<EscalationId>,
    /// What to post (wrapped in `WebhookPayload`).
    pub envelope: WebhookEnvelope,
    /// Attempts made in the current run (reset by a replay).
    pub attempts: u32,
    /// When the current run started: the retry budget counts from here.
    pub first_attempt_at: DateTime<Utc>,
    /// Set when the delivery was already given up and only the
    /// `escalateUndeliverable` notice is still outstanding.
    pub reason: Option<DeadReason>,
}

fn claimed_from_row(row: &Row) -> Result<ClaimedDelivery> {
    let attempts: i32 = row.try_get("attempts")?;
    let Json(envelope) = row.try_get::<_, Json<WebhookEnvelope>>("payload")?;
    Ok(ClaimedDelivery {
        id: row.try_get("id")?,
        key: key_from_row(row)?,
        sequence: to_u64(row.try_get("sequence")?, "sequence")?,
        event_type: row.try_get("event_type")?,
        escalation_id: row
            .try_get::<_, Option<&str>>("escalation_id")?
            .map(|id| parse_id(id, "escalation_id", EscalationId::parse))
            .transpose()?,
        envelope,
        attempts: u32::try_from(attempts)
            .map_err(|_| Error::Corrupt { column: "attempts", value: attempts.to_string() })?,
        first_attempt_at: row.try_get("first_attempt_at")?,
        reason: reason_from_column(row.try_get("reason")?)?,
    })
}

/// One HTTP attempt, for the `webhook_attempts` history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttempt {
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// The response status, if there was a response.
    pub status_code: Option<u16>,
    /// What went wrong, if anything (timeout, connect error, refused address, status text).
    pub error: Option<String>,
    /// Time to the response (or the failure), in milliseconds.
    pub latency_ms: u32,
}

/// What becomes of a claimed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// 2xx: delivered at this time.
    Delivered(DateTime<Utc>),
    /// Try again at this time (counts the attempt, if one is given).
    RetryAt(DateTime<Utc>),
    /// Not attempted (circuit open, broker unavailable for the notice): due
    /// again at this time, the attempt counter and `reason` unchanged.
    Defer(DateTime<Utc>),
    /// Given up, but a notice must be confirmed first: stays `pending` with
    /// `reason` set, due at this time, still claimed (the caller publishes the
    /// notice next; if it dies, the lease expires and another does).
    AwaitNotice(DeadReason, DateTime<Utc>),
    /// Dead-lettered at this time.
    Dead(DeadReason, DateTime<Utc>),
}

/// The columns a [`Settle`] writes.
struct RowUpdate {
    status: &'static str,
    reason: Option<&'static str>,
    /// A deferral leaves `reason` as it was (a notice may still be outstanding).
    keep_reason: bool,
    next_attempt_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    dead_at: Option<DateTime<Utc>>,
}

impl RowUpdate {
    fn of(settle: Settle) -> Self {
        let pending = |reason: Option<DeadReason>, keep_reason, at| RowUpdate {
            status: "pending",
            reason: reason.map(DeadReason::as_str),
            keep_reason,
            next_attempt_at: Some(at),
            delivered_at: None,
            dead_at: None,
        };
        match settle {
            Settle::Delivered(at) => {
                RowUpdate { delivered_at: Some(at), status: "delivered", ..pending(None, false, at) }
            }
            Settle::RetryAt(at) => pending(None, false, at),
            Settle::Defer(at) => pending(None, true, at),
            Settle::AwaitNotice(reason, at) => pending(Some(reason), false, at),
            Settle::Dead(reason, at) => {
                RowUpdate { dead_at: Some(at), status: "dead", ..pending(Some(reason), false, at) }
            }
        }
    }
}

impl Store {
    /// Pending deliveries of bots not in `configured`, counted per bot: a
    /// dispatcher never claims them, so they wait until their bot is
    /// configured again. The dispatcher reports them.
    pub async fn pending_of_other_bots(&self, configured: &[&str]) -> Result<Vec<(String, i64)>> {
        let rows = self
            .query(
                "SELECT bot_id, count(*) FROM {schema}.webhook_deliveries
                 WHERE status = 'pending' AND bot_id <> ALL($1::text[])
                 GROUP BY bot_id ORDER BY bot_id",
                &[&configured],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Claims up to `cap` due deliveries of each `(bot, cap)` in `caps`, for
    /// `lease`. Only a conversation's lowest pending sequence is due (head of
    /// line: order per conversation); delivered, dead and skipped rows do not
    /// block. Rows another dispatcher holds (lock or unexpired lease) are
    /// skipped. Each bot is limited on its own, so a bot with a backlog never
    /// crowds out another. Starts the run's budget clock on first claim.
    pub async fn claim_due_deliveries(
        &self,
        claimer: &str,
        caps: &[(&str, u32)],
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<ClaimedDelivery>> {
        let (bots, limits): (Vec<&str>, Vec<i64>) =
            caps.iter().filter(|(_, cap)| *cap > 0).map(|(bot, cap)| (*bot, i64::from(*cap))).unzip();
        if bots.is_empty() {
            return Ok(Vec::new());
        }
        let until = TimeDelta::from_std(lease)
            .ok()
            .and_then(|lease| now.checked_add_signed(lease))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let rows = self
            .query(
                "WITH picked AS (
                     SELECT c.id
                     FROM UNNEST($1::text[], $2::bigint[]) AS cap(bot_id, n)
                     CROSS JOIN LATERAL (
                         SELECT d.id FROM {schema}.webhook_deliveries d
                         WHERE d.bot_id = cap.bot_id
                           AND d.status = 'pending'
                           AND d.next_attempt_at <= $3
                           AND (d.claimed_until IS NULL OR d.claimed_until <= $3)
                           AND NOT EXISTS (
                               SELECT 1 FROM {schema}.webhook_deliveries p
                               WHERE p.status = 'pending'
                                 AND p.bot_id = d.bot_id
                                 AND p.conversation_id = d.conversation_id
                                 AND p.sequence < d.sequence)
                         ORDER BY d.next_attempt_at, d.id
                         LIMIT cap.n
                         FOR UPDATE OF d SKIP LOCKED
                     ) c
                 )
                 UPDATE {schema}.webhook_deliveries d
                 SET claimed_by = $4, claimed_until = $5,
                     first_attempt_at = COALESCE(d.first_attempt_at, $3)
                 FROM picked WHERE d.id = picked.id
                 RETURNING d.id, d.bot_id, d.conversation_id, d.sequence, d.event_type, d.escalation_id,
                           d.payload, d.attempts, d.first_attempt_at, d.reason",
                &[&bots, &limits, &now, &claimer, &until],
            )
            .await?;
        rows.iter().map(claimed_from_row).collect()
    }

    /// Records `attempt` (if any) in the delivery's history and applies
    /// `settle`, in one transaction. Returns `false` when the claim was lost
    /// (the lease expired and another dispatcher took the row, or the row was
    /// purged): the attempt is still recorded, the row is left to its holder.
    pub async fn settle_delivery(
        &self,
        id: i64,
        claimer: &str,
        attempt: Option<&NewAttempt>,
        settle: Settle,
    ) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                &self.qualify("SELECT claimed_by FROM {schema}.webhook_deliveries WHERE id = $1 FOR UPDATE"),
                &[&id],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(false) };
        let holder: Option<String> = row.try_get("claimed_by")?;
        if let Some(attempt) = attempt {
            let status = attempt.status_code.map(i32::from);
            let latency = i32::try_from(attempt.latency_ms).unwrap_or(i32::MAX);
            tx.execute(
                &self.qualify(
                    "INSERT INTO {schema}.webhook_attempts (delivery_id, attempt, at, status_code, error, latency_ms)
                     SELECT $1, COALESCE(MAX(attempt), 0) + 1, $2, $3, $4, $5
                     FROM {schema}.webhook_attempts WHERE delivery_id = $1",
                ),
                &[&id, &attempt.at, &status, &attempt.error, &latency],
            )
            .await?;
        }
        if holder.as_deref() != Some(claimer) {
            tx.commit().await?;
            return Ok(false);
        }
        let counted = i32::from(attempt.is_some());
        // Awaiting the notice, the claim is kept: the same dispatcher goes on
        // to publish it.
        let hold = matches!(settle, Settle::AwaitNotice(..));
        let error = attempt.and_then(|a| a.error.as_deref());
        let row = RowUpdate::of(settle);
        tx.execute(
            &self.qualify(
                "UPDATE {schema}.webhook_deliveries SET
                     status = $2,
                     reason = CASE WHEN $9 THEN reason ELSE $3 END,
                     next_attempt_at = COALESCE($4, next_attempt_at),
                     delivered_at = COALESCE($5, delivered_at),
                     dead_at = $6,
                     attempts = attempts + $7,
                     last_error = CASE WHEN $2 = 'delivered' THEN NULL ELSE COALESCE($8, last_error) END,
                     claimed_by = CASE WHEN $10 THEN claimed_by END,
                     claimed_until = CASE WHEN $10 THEN claimed_until END
                 WHERE id = $1",
            ),
            &[
                &id,
                &row.status,
                &row.reason,
                &row.next_attempt_at,
                &row.delivered_at,
                &row.dead_at,
                &counted,
                &error,
                &row.keep_reason,
                &hold,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Gives back claims that were not acted on (shutdown), so another
    /// dispatcher can take them at once instead of after the lease.
    pub async fn release_claims(&self, ids: &[i64], claimer: &str) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.execute(
            "UPDATE {schema}.webhook_deliveries SET claimed_by = NULL, claimed_until = NULL
             WHERE id = ANY($1) AND claimed_by = $2",
            &[&ids, &claimer],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        for reason in DeadReason::ALL {
            assert_eq!(DeadReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(DeadReason::parse("nope"), None);
    }
}
