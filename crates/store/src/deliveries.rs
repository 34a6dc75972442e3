//! What the worker hands on: `widget_events` (the widget stream, which the SSE
//! endpoint replays after `Last-Event-ID`, docs/protocol.md §3) and `webhook_deliveries`
//! (the webhook outbox, docs/protocol.md §4).

use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;

use domain::webhook::WebhookEnvelope;
use domain::widget::WidgetEnvelope;

use crate::codec::{key_arrays, parse_id, to_i64, to_u64};
use crate::error::{Error, Result};
use crate::executor::{self, Executor};
use crate::key::ConvKey;
use crate::pool::Store;

/// One webhook delivery as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDeliveryRow {
    /// The delivery's id (`webhook_attempts.delivery_id`).
    pub id: i64,
    /// The conversation's webhook sequence.
    pub sequence: u64,
    /// The webhook event type (`widgetEscalate`, …).
    pub event_type: String,
    /// `pending`, `delivered`, `dead` or `skipped`.
    pub status: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// The [`WebhookEnvelope`] as JSON; the body posted is
    /// `WebhookPayload::new(bot_id, conversation_id, envelope)`.
    pub payload: serde_json::Value,
}

// A redelivered batch writes the same sequences again: `DO NOTHING` keeps the
// first copy.
const INSERT_WIDGET: &str = "
    INSERT INTO widget_events (bot_id, conversation_id, sequence, escalation_id, event_type, payload)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[])
    ON CONFLICT DO NOTHING";

/// Appends widget events (each envelope stored whole as `payload`). Returns
/// the number of rows inserted.
#[tracing::instrument(level = "debug", skip_all, fields(rows = rows.len()))]
pub async fn insert_widget_events(tx: &impl Executor, rows: &[(ConvKey, WidgetEnvelope)]) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let (bots, conversations) = key_arrays(rows.iter().map(|(key, _)| key));
    let sequences: Vec<i64> =
        rows.iter().map(|(_, envelope)| to_i64(envelope.sequence, "sequence")).collect::<Result<_>>()?;
    let escalations: Vec<&str> = rows.iter().map(|(_, envelope)| envelope.escalation_id.as_str()).collect();
    let types: Vec<&str> = rows.iter().map(|(_, envelope)| envelope.event.name()).collect();
    let payloads: Vec<Json<&WidgetEnvelope>> = rows.iter().map(|(_, envelope)| Json(envelope)).collect();
    executor::execute(
        tx,
        INSERT_WIDGET,
        &[&bots, &conversations, &sequences, &escalations, &types, &payloads],
    )
    .await
}

// A redelivered batch writes the same sequences again: `DO NOTHING` keeps the
// first copy, and only rows really inserted make heads. A conversation's first
// pending delivery becomes its head (`webhook_heads`); when it has a head
// already, the no-op `DO UPDATE ... WHERE false` still locks it, so a
// dispatcher settling that head concurrently either sees these rows (it waits
// for this commit) or has deleted the head before, and then the insert is
// retried and makes a new one: a pending delivery is never left without a head.
// A new head of a conversation whose rows are flagged (`$8`) is inserted
// claimed by `$9` for `$10` seconds on the database's clock, as a claim round
// would lease it: the dispatcher of the worker's own process sends it without
// a claim round (`ClaimAtInsert`). Dispatchers in other processes hear of new
// deliveries through `Store::announce_outbox`, after the commit
// (docs/protocol.md §4).
const INSERT_WEBHOOK: &str = "
    WITH ins AS (
        INSERT INTO webhook_deliveries
            (bot_id, conversation_id, sequence, event_type, escalation_id, payload, next_attempt_at, created_at)
        SELECT u.bot_id, u.conversation_id, u.sequence, u.event_type, u.escalation_id, u.payload, $7, $7
        FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[]) WITH ORDINALITY
            AS u(bot_id, conversation_id, sequence, event_type, escalation_id, payload, ord)
        ORDER BY u.ord
        ON CONFLICT (bot_id, conversation_id, sequence) DO NOTHING
        RETURNING id, bot_id, conversation_id, sequence, next_attempt_at
    ), firsts AS (
        SELECT DISTINCT ON (bot_id, conversation_id) id, bot_id, conversation_id, sequence, next_attempt_at
        FROM ins ORDER BY bot_id, conversation_id, sequence
    ), flagged AS (
        -- A hashed subplan, not a join: the batch connections plan no hash
        -- join, and a nested loop here would cost rows × conversations.
        SELECT f.*, (f.bot_id, f.conversation_id) IN (
                   SELECT t.bot_id, t.conversation_id
                   FROM UNNEST($1::text[], $2::text[], $8::bool[]) AS t(bot_id, conversation_id, take)
                   WHERE t.take
               ) AS take
        FROM firsts f
    ), heads AS (
        INSERT INTO webhook_heads (bot_id, conversation_id, delivery_id, sequence, due_at, claimed_by)
        SELECT f.bot_id, f.conversation_id, f.id, f.sequence,
               CASE WHEN f.take THEN now() + make_interval(secs => $10::float8) ELSE f.next_attempt_at END,
               CASE WHEN f.take THEN $9::text END
        FROM flagged f
        ORDER BY f.bot_id, f.conversation_id
        ON CONFLICT (bot_id, conversation_id) DO UPDATE SET sequence = webhook_heads.sequence WHERE false
        RETURNING delivery_id, bot_id, conversation_id, sequence, claimed_by IS NOT NULL AS claimed
    )
    SELECT (SELECT count(*) FROM ins) AS inserted,
           (SELECT count(*) FROM heads) AS heads,
           ARRAY(SELECT delivery_id FROM heads WHERE claimed) AS claimed_ids,
           ARRAY(SELECT bot_id FROM heads WHERE claimed) AS claimed_bots,
           ARRAY(SELECT conversation_id FROM heads WHERE claimed) AS claimed_conversations,
           ARRAY(SELECT sequence FROM heads WHERE claimed) AS claimed_sequences";

/// The channel a dispatcher `LISTEN`s on for new deliveries of `schema`.
pub fn outbox_channel(schema: &str) -> String {
    format!("{schema}.outbox")
}

/// Queues webhook deliveries, `pending` and due at `now`. A sequence already
/// queued for its conversation is left as it was. Returns the number of rows
/// inserted.
pub async fn insert_webhook_deliveries(
    tx: &impl Executor,
    rows: &[(ConvKey, WebhookEnvelope)],
    now: DateTime<Utc>,
) -> Result<u64> {
    Ok(queue_webhook_deliveries(tx, rows, now, None).await?.inserted)
}

/// Deliveries to claim in the transaction that queues them, for the
/// dispatcher of the same process: only a new head can be claimed (a
/// conversation whose earlier deliveries are still pending waits for them).
#[derive(Debug, Clone, Copy)]
pub struct ClaimAtInsert<'a> {
    /// The dispatcher taking them (`claimed_by`).
    pub claimer: &'a str,
    /// How long the claim holds, as a claim round's lease.
    pub lease: std::time::Duration,
    /// Per row of `rows`: whether its conversation's new head may be claimed.
    pub take: &'a [bool],
}

/// What [`queue_webhook_deliveries`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Queued {
    /// Rows inserted (a redelivered batch inserts none).
    pub inserted: u64,
    /// New heads of line among them (claimed at insert or not).
    pub heads: u64,
    /// The new heads claimed at insert: `(delivery id, conversation, sequence)`.
    pub claimed: Vec<(i64, ConvKey, u64)>,
}

/// [`insert_webhook_deliveries`], claiming the new heads `claim` flags.
///
/// # Panics
///
/// When `claim.take` is not as long as `rows`.
#[tracing::instrument(level = "debug", skip_all, fields(rows = rows.len()))]
pub async fn queue_webhook_deliveries(
    tx: &impl Executor,
    rows: &[(ConvKey, WebhookEnvelope)],
    now: DateTime<Utc>,
    claim: Option<ClaimAtInsert<'_>>,
) -> Result<Queued> {
    if rows.is_empty() {
        return Ok(Queued::default());
    }
    let (bots, conversations) = key_arrays(rows.iter().map(|(key, _)| key));
    let sequences: Vec<i64> =
        rows.iter().map(|(_, envelope)| to_i64(envelope.sequence, "sequence")).collect::<Result<_>>()?;
    let types: Vec<&str> = rows.iter().map(|(_, envelope)| envelope.event.event_type()).collect();
    let escalations: Vec<Option<&str>> =
        rows.iter().map(|(_, envelope)| envelope.escalation_id.as_ref().map(|id| id.as_str())).collect();
    let payloads: Vec<Json<&WebhookEnvelope>> = rows.iter().map(|(_, envelope)| Json(envelope)).collect();
    let none = vec![false; rows.len()];
    let (take, claimer, lease) = match &claim {
        Some(claim) => {
            assert_eq!(claim.take.len(), rows.len(), "one flag per row");
            (claim.take, Some(claim.claimer), claim.lease.as_secs_f64())
        }
        None => (none.as_slice(), None, 0.0),
    };
    let result = executor::query(
        tx,
        INSERT_WEBHOOK,
        &[&bots, &conversations, &sequences, &types, &escalations, &payloads, &now, &take, &claimer, &lease],
    )
    .await?;
    let Some(row) = result.first() else { return Ok(Queued::default()) };
    let inserted: i64 = row.try_get("inserted")?;
    let heads: i64 = row.try_get("heads")?;
    let ids: Vec<i64> = row.try_get("claimed_ids")?;
    let claimed_bots: Vec<&str> = row.try_get("claimed_bots")?;
    let claimed_conversations: Vec<&str> = row.try_get("claimed_conversations")?;
    let claimed_sequences: Vec<i64> = row.try_get("claimed_sequences")?;
    let mut claimed = Vec::with_capacity(ids.len());
    for (((id, bot), conversation), sequence) in
        ids.into_iter().zip(claimed_bots).zip(claimed_conversations).zip(claimed_sequences)
    {
        let key = ConvKey::new(
            parse_id(bot, "bot_id", domain::BotId::parse)?,
            parse_id(conversation, "conversation_id", domain::ConversationId::parse)?,
        );
        claimed.push((id, key, to_u64(sequence, "sequence")?));
    }
    Ok(Queued {
        inserted: u64::try_from(inserted).unwrap_or(0),
        heads: u64::try_from(heads).unwrap_or(0),
        claimed,
    })
}

impl Store {
    /// A conversation's widget events after `after_sequence`, in sequence
    /// order (`0` for all of them).
    pub async fn widget_events(&self, key: &ConvKey, after_sequence: u64) -> Result<Vec<WidgetEnvelope>> {
        // Beyond `i64::MAX` nothing can follow.
        let Ok(after) = i64::try_from(after_sequence) else { return Ok(Vec::new()) };
        let rows = self
            .query(
                "SELECT payload FROM {schema}.widget_events
                 WHERE bot_id = $1 AND conversation_id = $2 AND sequence > $3
                 ORDER BY sequence",
                &[&key.bot_id.as_str(), &key.conversation_id.as_str(), &after],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let Json(envelope) = row.try_get::<_, Json<WidgetEnvelope>>("payload")?;
                Ok(envelope)
            })
            .collect()
    }

    /// A conversation's webhook deliveries, in sequence order.
    pub async fn webhook_deliveries_of(&self, key: &ConvKey) -> Result<Vec<WebhookDeliveryRow>> {
        let rows = self
            .query(
                "SELECT id, sequence, event_type, status, attempts, payload
                 FROM {schema}.webhook_deliveries
                 WHERE bot_id = $1 AND conversation_id = $2
                 ORDER BY sequence",
                &[&key.bot_id.as_str(), &key.conversation_id.as_str()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let attempts: i32 = row.try_get("attempts")?;
                Ok(WebhookDeliveryRow {
                    id: row.try_get("id")?,
                    sequence: to_u64(row.try_get("sequence")?, "sequence")?,
                    event_type: row.try_get("event_type")?,
                    status: row.try_get("status")?,
                    attempts: u32::try_from(attempts)
                        .map_err(|_| Error::Corrupt { column: "attempts", value: attempts.to_string() })?,
                    payload: row.try_get("payload")?,
                })
            })
            .collect()
    }

    /// How many widget events are stored, in all conversations. For tests.
    pub async fn count_widget_events(&self) -> Result<u64> {
        self.count("widget_events").await
    }
}
