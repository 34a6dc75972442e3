//! What the admin listener's gauges read (docs/operations.md): each bot's
//! outbox depth and oldest pending delivery, and the dead letters per reason.
//!
//! Every query is bounded by a cap and walks an index in its order, so its
//! cost does not depend on statistics (PostgreSQL here never analyzes):
//! `tests/outbox_plans.rs` runs them over a 20,000-row never-analyzed outbox.
//! Past the cap a gauge saturates rather than scanning on. They run in a
//! transaction that also rules out bitmap scans and sorts: without statistics
//! the planner otherwise reads every head (or dead letter) of the bot into a
//! bitmap and sorts it, which costs the whole backlog however small the cap.

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::executor;
use crate::pool::Store;

/// Index scans in index order only, so `LIMIT` stops the walk.
const ORDERED_WALKS: &str = "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off";

/// One bot's outbox, as the gauges show it.
#[derive(Debug, Clone, PartialEq)]
pub struct BotOutbox {
    /// The bot.
    pub bot_id: String,
    /// Pending deliveries, counted up to the cap.
    pub pending: i64,
    /// Conversations with pending deliveries (heads), counted up to the cap.
    pub conversations: i64,
    /// When the oldest pending delivery among the first `cap` heads was queued.
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

// The pending-head index `(bot_id, conversation_id, sequence) WHERE status =
// 'pending'`, walked for one bot and stopped at the cap.
const PENDING: &str = "SELECT count(*) AS n FROM (
        SELECT 1 FROM {schema}.webhook_deliveries WHERE bot_id = $1 AND status = 'pending' LIMIT $2) p";

// A bot's heads through `(bot_id, due_at)`, stopped at the cap; each head's
// delivery by primary key. The oldest pending delivery of a conversation is
// its head (sequences are queued in order, and a replay re-queues in order),
// so the oldest of the bot is the oldest of its heads' deliveries.
const HEADS: &str = "SELECT count(*) AS n,
        min((SELECT d.created_at FROM {schema}.webhook_deliveries d WHERE d.id = h.delivery_id)) AS oldest
    FROM (SELECT delivery_id FROM {schema}.webhook_heads WHERE bot_id = $1 ORDER BY due_at LIMIT $2) h";

// The newest `cap` dead letters, backwards through `(dead_at) WHERE status =
// 'dead'`; grouped by hashing (sorts are off).
const DEAD: &str = "SELECT reason, count(*) AS n FROM (
        SELECT reason FROM {schema}.webhook_deliveries WHERE status = 'dead'
        ORDER BY dead_at DESC LIMIT $1) d
    GROUP BY reason";

impl Store {
    /// The outbox of each of `bots`: two capped index walks per bot.
    pub async fn outbox_gauges(&self, bots: &[String], cap: i64) -> Result<Vec<BotOutbox>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(ORDERED_WALKS).await?;
        let (pending_sql, heads_sql) = (self.qualify(PENDING), self.qualify(HEADS));
        let mut out = Vec::with_capacity(bots.len());
        for bot in bots {
            let pending: i64 = executor::query(&tx, &pending_sql, &[bot, &cap]).await?[0].try_get("n")?;
            let heads = &executor::query(&tx, &heads_sql, &[bot, &cap]).await?[0];
            out.push(BotOutbox {
                bot_id: bot.clone(),
                pending,
                conversations: heads.try_get("n")?,
                oldest_pending_at: heads.try_get("oldest")?,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Dead letters per reason among the newest `cap` (a reason that has none
    /// is missing).
    pub async fn dead_letter_counts(&self, cap: i64) -> Result<Vec<(String, i64)>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(ORDERED_WALKS).await?;
        let rows = executor::query(&tx, &self.qualify(DEAD), &[&cap]).await?;
        tx.commit().await?;
        let mut counts = rows
            .iter()
            .map(|row| {
                let reason: Option<String> = row.try_get("reason")?;
                Ok((reason.unwrap_or_else(|| "unknown".to_owned()), row.try_get("n")?))
            })
            .collect::<Result<Vec<(String, i64)>>>()?;
        counts.sort();
        Ok(counts)
    }
}
