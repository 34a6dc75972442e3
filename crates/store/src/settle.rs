//! Settling claimed webhook deliveries (docs/protocol.md §4): after an
//! attempt (delivered, retry later, given up) or without one (deferred,
//! skipped, undecodable), many at once in one transaction (group commit).
//!
//! The transaction first locks the heads of the deliveries it settles, in key
//! order, and settles only those this dispatcher still holds; the attempts are
//! recorded whatever happened to the claim. A head that is done (delivered,
//! dead, skipped) moves to its conversation's next pending sequence, or is
//! deleted when there is none. Its lookup runs after the lock, in a statement
//! of its own: a worker queuing deliveries for the conversation at the same
//! moment locks the head too (`deliveries.rs`), so either its rows are
//! committed and seen here, or it waits and then makes a new head.

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;

use crate::error::{Error, Result};
use crate::executor::Executor as _;
use crate::outbox::DeadReason;
use crate::pool::Store;

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
    /// `reason` set, still claimed (the caller publishes the notice next; if
    /// it dies, the lease expires and another does).
    AwaitNotice(DeadReason, DateTime<Utc>),
    /// Dead-lettered at this time.
    Dead(DeadReason, DateTime<Utc>),
    /// Settled without sending, never to be sent (`skipped`), at this time.
    Skipped(DeadReason, DateTime<Utc>),
    /// The head pointed at no pending delivery: only the head moves on.
    Heal,
}

impl Settle {
    /// Whether the head moves to the next pending sequence.
    fn ends_head(self) -> bool {
        matches!(self, Settle::Delivered(_) | Settle::Dead(..) | Settle::Skipped(..) | Settle::Heal)
    }
}

/// One claimed delivery to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleJob {
    /// The delivery.
    pub id: i64,
    /// The attempt made, if one was.
    pub attempt: Option<NewAttempt>,
    /// What becomes of it.
    pub settle: Settle,
    /// Why, when no attempt says it (`last_error`).
    pub note: Option<String>,
    /// When the run's budget started (stored on the first settlement).
    pub run_started_at: Option<DateTime<Utc>>,
}

/// The columns each job writes, as arrays for `UNNEST`.
#[derive(Default)]
struct Columns<'a> {
    ids: Vec<i64>,
    status: Vec<&'static str>,
    reason: Vec<Option<&'static str>>,
    keep_reason: Vec<bool>,
    next_at: Vec<Option<DateTime<Utc>>>,
    delivered_at: Vec<Option<DateTime<Utc>>>,
    dead_at: Vec<Option<DateTime<Utc>>>,
    counted: Vec<i32>,
    error: Vec<Option<&'a str>>,
    started: Vec<Option<DateTime<Utc>>>,
    /// Jobs whose head waits for a retry (due again at `waiting_at`).
    waiting: Vec<i64>,
    waiting_at: Vec<DateTime<Utc>>,
    /// Jobs whose head moves on.
    ending: Vec<i64>,
    /// Attempts to record.
    attempt_ids: Vec<i64>,
    attempt_at: Vec<DateTime<Utc>>,
    attempt_status: Vec<Option<i32>>,
    attempt_error: Vec<Option<&'a str>>,
    attempt_latency: Vec<i32>,
}

impl<'a> Columns<'a> {
    fn of(jobs: &'a [SettleJob]) -> Self {
        let mut c = Columns::default();
        for job in jobs {
            if let Some(attempt) = &job.attempt {
                c.attempt_ids.push(job.id);
                c.attempt_at.push(attempt.at);
                c.attempt_status.push(attempt.status_code.map(i32::from));
                c.attempt_error.push(attempt.error.as_deref());
                c.attempt_latency.push(i32::try_from(attempt.latency_ms).unwrap_or(i32::MAX));
            }
            if job.settle.ends_head() {
                c.ending.push(job.id);
            }
            let (status, reason, keep_reason, next_at, delivered_at, dead_at) = match job.settle {
                Settle::Delivered(at) => ("delivered", None, false, None, Some(at), None),
                Settle::RetryAt(at) => ("pending", None, false, Some(at), None, None),
                Settle::Defer(at) => ("pending", None, true, Some(at), None, None),
                Settle::AwaitNotice(reason, _) => ("pending", Some(reason.as_str()), false, None, None, None),
                Settle::Dead(reason, at) => ("dead", Some(reason.as_str()), false, None, None, Some(at)),
                Settle::Skipped(reason, at) => {
                    ("skipped", Some(reason.as_str()), false, None, None, Some(at))
                }
                // The row is not pending (or is gone): leave it as it is.
                Settle::Heal => continue,
            };
            if let Settle::RetryAt(at) | Settle::Defer(at) = job.settle {
                c.waiting.push(job.id);
                c.waiting_at.push(at);
            }
            c.ids.push(job.id);
            c.status.push(status);
            c.reason.push(reason);
            c.keep_reason.push(keep_reason);
            c.next_at.push(next_at);
            c.delivered_at.push(delivered_at);
            c.dead_at.push(dead_at);
            c.counted.push(i32::from(job.attempt.is_some()));
            c.error.push(job.attempt.as_ref().and_then(|a| a.error.as_deref()).or(job.note.as_deref()));
            c.started.push(job.run_started_at);
        }
        c
    }
}

// The heads this dispatcher still holds, locked in key order (the order every
// writer of heads locks them in, so settlements never deadlock each other).
const LOCK_HEADS: &str = "
    SELECT delivery_id FROM {schema}.webhook_heads
    WHERE delivery_id = ANY($1) AND claimed_by = $2
    ORDER BY bot_id, conversation_id
    FOR UPDATE";

// Recorded whether or not the claim still holds: the attempt was made. The
// number continues the delivery's whole history.
const RECORD_ATTEMPTS: &str = "
    INSERT INTO {schema}.webhook_attempts (delivery_id, attempt, at, status_code, error, latency_ms)
    SELECT u.id,
           COALESCE((SELECT max(a.attempt) FROM {schema}.webhook_attempts a WHERE a.delivery_id = u.id), 0) + 1,
           u.at, u.status_code, u.error, u.latency_ms
    FROM UNNEST($1::bigint[], $2::timestamptz[], $3::int[], $4::text[], $5::int[])
        AS u(id, at, status_code, error, latency_ms)
    WHERE EXISTS (SELECT 1 FROM {schema}.webhook_deliveries d WHERE d.id = u.id)
    ON CONFLICT DO NOTHING";

const UPDATE_DELIVERIES: &str = "
    UPDATE {schema}.webhook_deliveries d SET
        status = u.status,
        reason = CASE WHEN u.keep_reason THEN d.reason ELSE u.reason END,
        next_attempt_at = COALESCE(u.next_at, d.next_attempt_at),
        delivered_at = COALESCE(u.delivered_at, d.delivered_at),
        dead_at = u.dead_at,
        attempts = d.attempts + u.counted,
        last_error = CASE WHEN u.status = 'delivered' THEN NULL ELSE COALESCE(u.error, d.last_error) END,
        first_attempt_at = COALESCE(d.first_attempt_at, u.started)
    FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bool[], $5::timestamptz[], $6::timestamptz[],
                $7::timestamptz[], $8::int[], $9::text[], $10::timestamptz[])
        AS u(id, status, reason, keep_reason, next_at, delivered_at, dead_at, counted, error, started)
    JOIN {schema}.webhook_heads h ON h.delivery_id = u.id AND h.claimed_by = $11
    WHERE d.id = u.id";

// A retry: the head stays, due at the retry, unclaimed.
const WAIT_HEADS: &str = "
    UPDATE {schema}.webhook_heads h SET due_at = u.at, claimed_by = NULL
    FROM UNNEST($1::bigint[], $2::timestamptz[]) AS u(id, at)
    WHERE h.delivery_id = u.id AND h.claimed_by = $3";

// Done: the head moves to the conversation's next pending sequence (one probe
// of the pending index), or goes.
const ADVANCE_HEADS: &str = "
    WITH done AS (
        SELECT h.bot_id, h.conversation_id FROM {schema}.webhook_heads h
        WHERE h.delivery_id = ANY($1) AND h.claimed_by = $2
    ), next AS (
        SELECT done.bot_id, done.conversation_id, n.id, n.sequence, n.next_attempt_at
        FROM done
        LEFT JOIN LATERAL (
            SELECT d.id, d.sequence, d.next_attempt_at FROM {schema}.webhook_deliveries d
            WHERE d.bot_id = done.bot_id AND d.conversation_id = done.conversation_id AND d.status = 'pending'
            ORDER BY d.sequence LIMIT 1
        ) n ON true
    ), moved AS (
        UPDATE {schema}.webhook_heads h
        SET delivery_id = next.id, sequence = next.sequence, due_at = next.next_attempt_at, claimed_by = NULL
        FROM next
        WHERE next.id IS NOT NULL AND h.bot_id = next.bot_id AND h.conversation_id = next.conversation_id
        RETURNING 1
    ), gone AS (
        DELETE FROM {schema}.webhook_heads h USING next
        WHERE next.id IS NULL AND h.bot_id = next.bot_id AND h.conversation_id = next.conversation_id
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM gone) AS gone";

impl Store {
    /// Settles `jobs` in one transaction (five statements, pipelined after
    /// `BEGIN`: one round trip and the commit). Returns, per job, whether
    /// this dispatcher still held its claim: `false` when the lease expired
    /// and another dispatcher took the head (or the row was purged). The
    /// attempt is recorded either way; the row is left to its holder.
    pub async fn settle_deliveries(&self, claimer: &str, jobs: &[SettleJob]) -> Result<Vec<bool>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = jobs.iter().map(|job| job.id).collect();
        let c = Columns::of(jobs);
        let lock = self.qualify(LOCK_HEADS);
        let record = self.qualify(RECORD_ATTEMPTS);
        let update = self.qualify(UPDATE_DELIVERIES);
        let wait = self.qualify(WAIT_HEADS);
        let advance = self.qualify(ADVANCE_HEADS);
        let record_params: [&(dyn ToSql + Sync); 5] =
            [&c.attempt_ids, &c.attempt_at, &c.attempt_status, &c.attempt_error, &c.attempt_latency];
        let update_params: [&(dyn ToSql + Sync); 11] = [
            &c.ids,
            &c.status,
            &c.reason,
            &c.keep_reason,
            &c.next_at,
            &c.delivered_at,
            &c.dead_at,
            &c.counted,
            &c.error,
            &c.started,
            &claimer,
        ];
        let lock_params: [&(dyn ToSql + Sync); 2] = [&ids, &claimer];
        let wait_params: [&(dyn ToSql + Sync); 3] = [&c.waiting, &c.waiting_at, &claimer];
        let advance_params: [&(dyn ToSql + Sync); 2] = [&c.ending, &claimer];
        let tx = self.batch_transaction().await?;
        let db = tx.db();
        // Prepared first (from the connection's cache, after the first
        // time), so that each statement below is sent when first polled, in
        // this order: the lock first, the heads' advance after the update.
        let (lock, record, update, wait, advance) = tokio::try_join!(
            db.prepare_sql(&lock),
            db.prepare_sql(&record),
            db.prepare_sql(&update),
            db.prepare_sql(&wait),
            db.prepare_sql(&advance),
        )?;
        // Joined, not try-joined: after a failure the later statements are
        // refused as "transaction aborted", and that may be read first.
        let (begun, locked, recorded, updated, waited, advanced) = tokio::join!(
            tx.begin(),
            db.query_sql(&lock, &lock_params),
            db.execute_sql(&record, &record_params),
            db.execute_sql(&update, &update_params),
            db.execute_sql(&wait, &wait_params),
            db.query_sql(&advance, &advance_params),
        );
        let (locked, recorded, updated, waited, advanced) = (
            locked.map_err(Error::Db),
            recorded.map_err(Error::Db),
            updated.map_err(Error::Db),
            waited.map_err(Error::Db),
            advanced.map_err(Error::Db),
        );
        let locked = match (begun, locked, recorded, updated, waited, advanced) {
            (Ok(()), Ok(locked), Ok(_), Ok(_), Ok(_), Ok(_)) => locked,
            (begun, locked, recorded, updated, waited, advanced) => {
                let error = Error::first_cause([
                    begun.err(),
                    locked.err(),
                    recorded.err(),
                    updated.err(),
                    waited.err(),
                    advanced.err(),
                ]);
                return Err(error.unwrap_or_else(|| unreachable!("a statement failed")));
            }
        };
        tx.commit().await?;
        let held: std::collections::HashSet<i64> =
            locked.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>()?;
        Ok(jobs.iter().map(|job| held.contains(&job.id)).collect())
    }

    /// Settles one claimed delivery; see [`Store::settle_deliveries`].
    pub async fn settle_delivery(
        &self,
        id: i64,
        claimer: &str,
        attempt: Option<&NewAttempt>,
        settle: Settle,
    ) -> Result<bool> {
        let job = SettleJob { id, attempt: attempt.cloned(), settle, note: None, run_started_at: None };
        let held = self.settle_deliveries(claimer, &[job]).await?;
        Ok(held.first().copied().unwrap_or(false))
    }
}
