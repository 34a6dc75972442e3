//! The dispatcher's side of the webhook outbox (docs/protocol.md §4): claiming
//! due deliveries head-of-line per conversation; settling is in
//! [`crate::settle`].
//!
//! Each conversation with pending deliveries has one row in `webhook_heads`,
//! its lowest pending sequence (migration 3). A claim reads only heads,
//! through the `(bot_id, due_at)` index, in due order, and takes each as a
//! lease: `due_at` moves to the lease's end (on the database's clock) and
//! `claimed_by` names the dispatcher. Rows are taken with `FOR UPDATE SKIP
//! LOCKED`, so several dispatchers share the outbox without waiting on each
//! other or sending a delivery twice while its lease holds. A dispatcher that
//! dies leaves leases that expire; the heads are then due again
//! (at-least-once). No statement here reads more rows than a small multiple of
//! what it returns, whatever the planner's statistics (`tests/plans.rs`).

use domain::report::error_chain;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::Json;

use domain::EscalationId;
use domain::webhook::WebhookEnvelope;

use crate::codec::{key_from_row, parse_id, to_u64};
use crate::error::{Error, Result};
use crate::key::ConvKey;
use crate::pool::Store;

/// Why a delivery stopped being retried (the `reason` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadReason {
    /// The endpoint answered with a final status (or the address was refused).
    FinalStatus,
    /// The event type's retry budget ran out.
    OutOfBudget,
    /// The bot has no webhook URL configured.
    NoEndpoint,
    /// A `widgetEscalate` whose escalation had ended before it could be sent
    /// (settled `skipped`, never sent).
    EscalationEnded,
    /// The stored row no longer decodes (dead-lettered alone).
    Undecodable,
}

impl DeadReason {
    /// Every reason, for help texts and validation.
    pub const ALL: [DeadReason; 5] = [
        DeadReason::FinalStatus,
        DeadReason::OutOfBudget,
        DeadReason::NoEndpoint,
        DeadReason::EscalationEnded,
        DeadReason::Undecodable,
    ];

    /// Column and metrics-label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::FinalStatus => "final_status",
            DeadReason::OutOfBudget => "out_of_budget",
            DeadReason::NoEndpoint => "no_endpoint",
            DeadReason::EscalationEnded => "escalation_ended",
            DeadReason::Undecodable => "undecodable",
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
    /// When the current run's budget started: for a `widgetEscalate` never
    /// replayed, when it was queued (the escalation's creation: a person is
    /// waiting); otherwise the first claim of the run. The first settlement
    /// stores it.
    pub first_attempt_at: DateTime<Utc>,
    /// Set when the delivery was already given up and only the
    /// `escalateUndeliverable` notice is still outstanding.
    pub reason: Option<DeadReason>,
    /// Whether the conversation's current escalation is still the one this
    /// delivery belongs to and is live (not back to `idle`).
    pub escalation_live: bool,
}

/// A claimed head that cannot be sent: its row does not decode, or the head
/// points at no pending delivery. Settle it (dead-letter or heal) so the
/// conversation's later deliveries go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsendableHead {
    /// The delivery the head points at.
    pub id: i64,
    /// What is wrong with it.
    pub error: String,
    /// `true`: the head points at no pending row and only needs to move on;
    /// `false`: the row is pending but undecodable and is dead-lettered.
    pub stale: bool,
}

/// What a claim round took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claimed {
    /// Deliveries to send.
    pub deliveries: Vec<ClaimedDelivery>,
    /// Heads to settle without sending.
    pub unsendable: Vec<UnsendableHead>,
}

impl Claimed {
    /// Whether nothing was claimed.
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty() && self.unsendable.is_empty()
    }

    /// How many heads were claimed.
    pub fn len(&self) -> usize {
        self.deliveries.len() + self.unsendable.len()
    }
}

/// The bots sharing one endpoint and how many of their heads one claim may
/// take in all: an endpoint shared by several bots is claimed for once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimGroup<'a> {
    /// The bots.
    pub bots: &'a [&'a str],
    /// At most this many heads, over all of them.
    pub cap: u32,
}

fn claimed_from_row(row: &Row) -> Result<ClaimedDelivery> {
    let attempts: i32 = row.try_get("attempts")?;
    let Json(envelope) = row.try_get::<_, Json<WebhookEnvelope>>("payload")?;
    let event_type: String = row.try_get("event_type")?;
    let replays: i32 = row.try_get("replays")?;
    let started: Option<DateTime<Utc>> = row.try_get("first_attempt_at")?;
    let first_attempt_at = match started {
        Some(at) => at,
        None if event_type == "widgetEscalate" && replays == 0 => row.try_get("created_at")?,
        None => row.try_get("claimed_at")?,
    };
    Ok(ClaimedDelivery {
        id: row.try_get("id")?,
        key: key_from_row(row)?,
        sequence: to_u64(row.try_get("sequence")?, "sequence")?,
        event_type,
        escalation_id: row
            .try_get::<_, Option<&str>>("escalation_id")?
            .map(|id| parse_id(id, "escalation_id", EscalationId::parse))
            .transpose()?,
        envelope,
        attempts: u32::try_from(attempts)
            .map_err(|_| Error::Corrupt { column: "attempts", value: attempts.to_string() })?,
        first_attempt_at,
        reason: crate::outbox::reason_from_column(row.try_get("reason")?)?,
        escalation_live: row.try_get("escalation_live")?,
    })
}

// One statement. Per bot, its due heads through `(bot_id, due_at)`, at most the
// group's cap each, locked or skipped; then at most the cap per group, in due
// order; the heads taken are leased; their deliveries and conversations are
// read by primary key. Nothing scans: every step probes an index with a limit.
const CLAIM: &str = "
    WITH cand AS (
        SELECT h.bot_id, h.conversation_id, h.delivery_id, h.due_at, g.grp, g.cap
        FROM UNNEST($1::text[], $2::int[], $3::bigint[]) AS g(bot_id, grp, cap)
        CROSS JOIN LATERAL (
            SELECT h.bot_id, h.conversation_id, h.delivery_id, h.due_at
            FROM {schema}.webhook_heads h
            WHERE h.bot_id = g.bot_id AND h.due_at <= now()
            ORDER BY h.due_at
            LIMIT g.cap
            FOR UPDATE OF h SKIP LOCKED
        ) h
    ), picked AS (
        SELECT bot_id, conversation_id FROM (
            SELECT bot_id, conversation_id, cap,
                   row_number() OVER (PARTITION BY grp ORDER BY due_at, delivery_id) AS rank
            FROM cand
        ) ranked
        WHERE rank <= cap
    ), claimed AS (
        UPDATE {schema}.webhook_heads h
        SET due_at = now() + make_interval(secs => $5), claimed_by = $4
        FROM picked p
        WHERE h.bot_id = p.bot_id AND h.conversation_id = p.conversation_id
        RETURNING h.delivery_id
    )
    SELECT cl.delivery_id, d.id, d.bot_id, d.conversation_id, d.sequence, d.event_type, d.escalation_id,
           d.status, d.payload, d.attempts, d.replays, d.created_at, d.first_attempt_at, d.reason,
           now() AS claimed_at,
           (c.phase IS NOT NULL AND c.phase <> 'idle'
               AND c.escalation_id IS NOT DISTINCT FROM d.escalation_id) AS escalation_live
    FROM claimed cl
    LEFT JOIN {schema}.webhook_deliveries d ON d.id = cl.delivery_id
    LEFT JOIN {schema}.conversations c ON c.bot_id = d.bot_id AND c.conversation_id = d.conversation_id";

impl Store {
    /// Claims, for `lease`, the due heads of each group's bots, at most the
    /// group's cap per group: only a conversation's lowest pending sequence
    /// is ever due (head of line: order per conversation); delivered, dead
    /// and skipped rows do not block. Heads another dispatcher holds (lock or
    /// unexpired lease) are skipped. Each group is limited on its own, so a
    /// bot or endpoint with a backlog never crowds out another.
    pub async fn claim_deliveries(
        &self,
        claimer: &str,
        groups: &[ClaimGroup<'_>],
        lease: Duration,
    ) -> Result<Claimed> {
        let mut bots = Vec::new();
        let mut group_of = Vec::new();
        let mut caps = Vec::new();
        for (index, group) in (0_i32..).zip(groups) {
            if group.cap == 0 {
                continue;
            }
            for bot in group.bots {
                bots.push(*bot);
                group_of.push(index);
                caps.push(i64::from(group.cap));
            }
        }
        if bots.is_empty() {
            return Ok(Claimed::default());
        }
        let rows = self.query(CLAIM, &[&bots, &group_of, &caps, &claimer, &lease.as_secs_f64()]).await?;
        let mut claimed = Claimed::default();
        for row in &rows {
            let id: i64 = row.try_get("delivery_id")?;
            let status: Option<String> = row.try_get("status")?;
            if status.as_deref() != Some("pending") {
                let error =
                    format!("head points at a delivery that is {}", status.as_deref().unwrap_or("missing"));
                claimed.unsendable.push(UnsendableHead { id, error, stale: true });
                continue;
            }
            match claimed_from_row(row) {
                Ok(delivery) => claimed.deliveries.push(delivery),
                Err(error) => {
                    claimed.unsendable.push(UnsendableHead { id, error: error_chain(&error), stale: false })
                }
            }
        }
        Ok(claimed)
    }

    /// [`Store::claim_deliveries`] with one group per bot: `(bot, cap)`.
    pub async fn claim_due_deliveries(
        &self,
        claimer: &str,
        caps: &[(&str, u32)],
        lease: Duration,
    ) -> Result<Claimed> {
        let bots: Vec<[&str; 1]> = caps.iter().map(|(bot, _)| [*bot]).collect();
        let groups: Vec<ClaimGroup<'_>> =
            bots.iter().zip(caps).map(|(bots, (_, cap))| ClaimGroup { bots, cap: *cap }).collect();
        self.claim_deliveries(claimer, &groups, lease).await
    }

    /// Gives back claims that were not acted on (shutdown), so another
    /// dispatcher can take them at once instead of after the lease.
    pub async fn release_claims(&self, ids: &[i64], claimer: &str) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.execute(
            "UPDATE {schema}.webhook_heads SET due_at = now(), claimed_by = NULL
             WHERE delivery_id = ANY($1) AND claimed_by = $2",
            &[&ids, &claimer],
        )
        .await
    }

    /// Makes every unclaimed head of `bots` that waits for a later retry due
    /// now: their endpoint answers again (its circuit closed), so the backlog
    /// moves at once instead of at each delivery's backoff. Returns how many.
    pub async fn pull_forward(&self, bots: &[&str]) -> Result<u64> {
        if bots.is_empty() {
            return Ok(0);
        }
        self.execute(
            "UPDATE {schema}.webhook_heads h SET due_at = now()
             FROM UNNEST($1::text[]) AS b(bot_id)
             WHERE h.bot_id = b.bot_id AND h.due_at > now() AND h.claimed_by IS NULL",
            &[&bots],
        )
        .await
    }

    /// Vacuums the heads table, if no other dispatcher is doing it right now.
    /// Returns whether it ran.
    ///
    /// Every claim and settlement rewrites a head, so the small table is
    /// mostly dead row versions within a minute at a few hundred webhooks a
    /// second; where autovacuum is off (or lags, as it does under load) every
    /// claim then walks them. Vacuuming a table of a few thousand live rows
    /// takes milliseconds; no statistics are gathered or relied on.
    pub async fn vacuum_heads(&self) -> Result<bool> {
        let client = self.client().await?;
        let key = format!("store.vacuum_heads:{}", self.schema());
        let row = client.query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key]).await?;
        if !row.try_get::<_, bool>(0)? {
            return Ok(false);
        }
        let vacuumed =
            client.batch_execute(&self.qualify("VACUUM (SKIP_LOCKED) {schema}.webhook_heads")).await;
        client.execute("SELECT pg_advisory_unlock(hashtext($1))", &[&key]).await?;
        vacuumed?;
        Ok(true)
    }

    /// Bots that have pending deliveries but are not in `configured`, each
    /// with its count of pending deliveries (counted up to `cap`): a
    /// dispatcher never claims them, so they wait until their bot is
    /// configured again. The dispatcher reports them. Finds the bots by
    /// skipping through the heads' primary key, one probe per bot.
    pub async fn pending_of_other_bots(&self, configured: &[&str], cap: i64) -> Result<Vec<(String, i64)>> {
        let rows = self
            .query(
                "WITH RECURSIVE bots(bot_id) AS (
                     (SELECT bot_id FROM {schema}.webhook_heads ORDER BY bot_id LIMIT 1)
                     UNION ALL
                     SELECT (SELECT h.bot_id FROM {schema}.webhook_heads h
                             WHERE h.bot_id > b.bot_id ORDER BY h.bot_id LIMIT 1)
                     FROM bots b WHERE b.bot_id IS NOT NULL
                 )
                 SELECT b.bot_id,
                        (SELECT count(*) FROM (
                             SELECT 1 FROM {schema}.webhook_deliveries d
                             WHERE d.bot_id = b.bot_id AND d.status = 'pending' LIMIT $2) n) AS pending
                 FROM bots b
                 WHERE b.bot_id IS NOT NULL AND b.bot_id <> ALL($1::text[])
                 ORDER BY b.bot_id",
                &[&configured, &cap],
            )
            .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
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
