//! `conversations`: one row per conversation, the state machine's state as
//! JSONB beside the columns queries filter on.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;

use domain::{Conversation, Phase};

use crate::codec::{key_arrays, key_from_row, parse_wire, to_i64};
use crate::error::Result;
use crate::executor::{self, Executor};
use crate::key::ConvKey;
use crate::pool::Store;

/// A conversation as stored, for the query endpoints and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConversation {
    /// The state machine's state.
    pub state: Conversation,
    /// Its phase, as of the last write.
    pub phase: Phase,
    /// When it was last written.
    pub updated_at: DateTime<Utc>,
}

// Rows are locked in key order, so two transactions locking overlapping sets
// (possible for a moment while a shard changes hands) cannot deadlock.
const LOCK: &str = "
    SELECT bot_id, conversation_id, state
    FROM conversations
    WHERE (bot_id, conversation_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
    ORDER BY bot_id, conversation_id
    FOR UPDATE";

/// Locks the rows of `keys` for the rest of the transaction and returns their
/// states. A key with no row is a new conversation (the caller starts from
/// `Conversation::default()`); it is not locked, since there is nothing to
/// lock: the broker's single active consumer per shard is the fence.
#[tracing::instrument(level = "debug", skip_all, fields(keys = keys.len()))]
pub async fn lock_conversations(
    tx: &impl Executor,
    keys: &[ConvKey],
) -> Result<HashMap<ConvKey, Conversation>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let (bots, conversations) = key_arrays(keys.iter());
    let rows = executor::query(tx, LOCK, &[&bots, &conversations]).await?;
    rows.iter()
        .map(|row| {
            let Json(state) = row.try_get::<_, Json<Conversation>>("state")?;
            Ok((key_from_row(row)?, state))
        })
        .collect()
}

const SAVE: &str = "
    INSERT INTO conversations AS c
        (bot_id, conversation_id, state, phase, escalation_id, widget_sequence, webhook_sequence,
         created_at, updated_at)
    SELECT u.bot_id, u.conversation_id, u.state, u.phase, u.escalation_id, u.widget_sequence,
           u.webhook_sequence, $8, $8
    FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])
        AS u(bot_id, conversation_id, state, phase, escalation_id, widget_sequence, webhook_sequence)
    ON CONFLICT (bot_id, conversation_id) DO UPDATE SET
        state = EXCLUDED.state,
        phase = EXCLUDED.phase,
        escalation_id = EXCLUDED.escalation_id,
        widget_sequence = EXCLUDED.widget_sequence,
        webhook_sequence = EXCLUDED.webhook_sequence,
        updated_at = EXCLUDED.updated_at";

/// Inserts or replaces the states of `rows`, stamped `now`. When a key appears
/// more than once, its last state wins. Returns the number of rows written.
#[tracing::instrument(level = "debug", skip_all, fields(rows = rows.len()))]
pub async fn save_conversations(
    tx: &impl Executor,
    rows: &[(ConvKey, Conversation)],
    now: DateTime<Utc>,
) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    // One statement cannot update a row twice, so keep each key's last state.
    let mut last: HashMap<&ConvKey, usize> = HashMap::with_capacity(rows.len());
    for (index, (key, _)) in rows.iter().enumerate() {
        last.insert(key, index);
    }
    let mut indices: Vec<usize> = last.into_values().collect();
    indices.sort_unstable();
    let rows: Vec<&(ConvKey, Conversation)> = indices.into_iter().map(|index| &rows[index]).collect();

    let (bots, conversations) = key_arrays(rows.iter().map(|(key, _)| key));
    let states: Vec<Json<&Conversation>> = rows.iter().map(|(_, state)| Json(state)).collect();
    let phases: Vec<&str> = rows.iter().map(|(_, state)| state.phase().as_str()).collect();
    let escalations: Vec<Option<&str>> =
        rows.iter().map(|(_, state)| state.escalation.as_ref().map(|e| e.id.as_str())).collect();
    let widget_sequences: Vec<i64> = rows
        .iter()
        .map(|(_, state)| to_i64(state.widget_sequence, "widget_sequence"))
        .collect::<Result<_>>()?;
    let webhook_sequences: Vec<i64> = rows
        .iter()
        .map(|(_, state)| to_i64(state.webhook_sequence, "webhook_sequence"))
        .collect::<Result<_>>()?;
    executor::execute(
        tx,
        SAVE,
        &[&bots, &conversations, &states, &phases, &escalations, &widget_sequences, &webhook_sequences, &now],
    )
    .await
}

impl Store {
    /// The stored state of one conversation, if it has one.
    pub async fn conversation(&self, key: &ConvKey) -> Result<Option<StoredConversation>> {
        let rows = self
            .query(
                "SELECT state, phase, updated_at FROM {schema}.conversations
                 WHERE bot_id = $1 AND conversation_id = $2",
                &[&key.bot_id.as_str(), &key.conversation_id.as_str()],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let Json(state) = row.try_get::<_, Json<Conversation>>("state")?;
        Ok(Some(StoredConversation {
            state,
            phase: parse_wire(row.try_get("phase")?, "phase")?,
            updated_at: row.try_get("updated_at")?,
        }))
    }
}
