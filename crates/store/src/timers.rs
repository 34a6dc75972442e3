//! `timers`: the armed timers of docs/protocol.md §5, durable so they survive worker
//! restarts. At most one per conversation and kind.
//!
//! Firing is two-phase: a poller claims due rows ([`claim_due_timers`], which
//! skips rows another poller holds), publishes a `TimerFired` command to the
//! broker, then deletes the row with [`delete_fired_timer`] — only if it was not
//! re-armed meanwhile — and commits. A crash between publish and commit fires
//! the timer again; the state machine ignores a timer that no longer applies.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use domain::{EscalationId, TimerKind};

use crate::codec::{key_arrays, key_from_row, parse_id, parse_wire};
use crate::error::Result;
use crate::executor::{self, Executor};
use crate::key::ConvKey;

/// A timer whose deadline has passed, claimed by this transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    /// The conversation.
    pub key: ConvKey,
    /// The escalation it was armed for.
    pub escalation_id: EscalationId,
    /// Which timer.
    pub kind: TimerKind,
    /// Its deadline, as stored (microsecond precision).
    pub due_at: DateTime<Utc>,
}

const UPSERT: &str = "
    INSERT INTO timers AS t (bot_id, conversation_id, kind, escalation_id, due_at)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
    ON CONFLICT (bot_id, conversation_id, kind) DO UPDATE SET
        escalation_id = EXCLUDED.escalation_id,
        due_at = EXCLUDED.due_at";

/// Arms (or re-arms) timers. When a conversation and kind appear more than
/// once, the last one wins. Returns the number of rows written.
#[tracing::instrument(level = "debug", skip_all, fields(rows = rows.len()))]
pub async fn upsert_timers(
    tx: &impl Executor,
    rows: &[(ConvKey, EscalationId, TimerKind, DateTime<Utc>)],
) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    // One statement cannot update a row twice, so keep each timer's last value.
    let mut last: HashMap<(&ConvKey, TimerKind), usize> = HashMap::with_capacity(rows.len());
    for (index, (key, _, kind, _)) in rows.iter().enumerate() {
        last.insert((key, *kind), index);
    }
    let mut indices: Vec<usize> = last.into_values().collect();
    indices.sort_unstable();
    let rows: Vec<&(ConvKey, EscalationId, TimerKind, DateTime<Utc>)> =
        indices.into_iter().map(|index| &rows[index]).collect();

    let (bots, conversations) = key_arrays(rows.iter().map(|(key, ..)| key));
    let kinds: Vec<&str> = rows.iter().map(|(_, _, kind, _)| kind.as_str()).collect();
    let escalations: Vec<&str> = rows.iter().map(|(_, escalation, ..)| escalation.as_str()).collect();
    let due: Vec<DateTime<Utc>> = rows.iter().map(|(.., at)| *at).collect();
    executor::execute(tx, UPSERT, &[&bots, &conversations, &kinds, &escalations, &due]).await
}

const DELETE: &str = "
    DELETE FROM timers t
    USING UNNEST($1::text[], $2::text[], $3::text[]) AS u(bot_id, conversation_id, kind)
    WHERE t.bot_id = u.bot_id AND t.conversation_id = u.conversation_id AND t.kind = u.kind";

/// Disarms timers, whatever escalation they were armed for. Returns the number
/// of rows deleted.
#[tracing::instrument(level = "debug", skip_all, fields(rows = rows.len()))]
pub async fn delete_timers(tx: &impl Executor, rows: &[(ConvKey, TimerKind)]) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let (bots, conversations) = key_arrays(rows.iter().map(|(key, _)| key));
    let kinds: Vec<&str> = rows.iter().map(|(_, kind)| kind.as_str()).collect();
    executor::execute(tx, DELETE, &[&bots, &conversations, &kinds]).await
}

// `SKIP LOCKED`: several pollers run at once; each claims rows no other
// transaction holds, so a timer is never claimed twice at the same time.
const CLAIM: &str = "
    SELECT bot_id, conversation_id, kind, escalation_id, due_at
    FROM timers
    WHERE due_at <= $1
    ORDER BY due_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED";

/// Claims up to `limit` timers due at `now`, earliest first, locking them for
/// the rest of the transaction.
#[tracing::instrument(level = "debug", skip(tx))]
pub async fn claim_due_timers(tx: &impl Executor, now: DateTime<Utc>, limit: usize) -> Result<Vec<DueTimer>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = executor::query(tx, CLAIM, &[&now, &limit]).await?;
    rows.iter().map(due_timer_from_row).collect()
}

fn due_timer_from_row(row: &Row) -> Result<DueTimer> {
    Ok(DueTimer {
        key: key_from_row(row)?,
        escalation_id: parse_id(row.try_get("escalation_id")?, "escalation_id", EscalationId::parse)?,
        kind: parse_wire(row.try_get("kind")?, "kind")?,
        due_at: row.try_get("due_at")?,
    })
}

const DELETE_FIRED: &str = "
    DELETE FROM timers
    WHERE bot_id = $1 AND conversation_id = $2 AND kind = $3 AND escalation_id = $4 AND due_at = $5";

/// Deletes a fired timer unless it was re-armed since it was claimed (another
/// deadline or escalation). Returns whether it was deleted.
#[tracing::instrument(level = "debug", skip_all, fields(kind = timer.kind.as_str()))]
pub async fn delete_fired_timer(tx: &impl Executor, timer: &DueTimer) -> Result<bool> {
    let deleted = executor::execute(
        tx,
        DELETE_FIRED,
        &[
            &timer.key.bot_id.as_str(),
            &timer.key.conversation_id.as_str(),
            &timer.kind.as_str(),
            &timer.escalation_id.as_str(),
            &timer.due_at,
        ],
    )
    .await?;
    Ok(deleted > 0)
}
