//! `events`: every command the worker decided on. It is both the durable
//! dedupe store (an event id recorded here is never applied again, docs/protocol.md §5)
//! and the conversation's transition and rejection log (docs/protocol.md §2 queries,
//! §8 timelines).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::Json;

use domain::{BotId, EventId, FieldWarning, IdSpace, Phase, ScopedEventId, Verdict};

use crate::codec::{key_arrays, key_from_row, parse_id, parse_wire, verdict_columns, verdict_from_columns};
use crate::error::{Error, Result};
use crate::executor::{self, Executor};
use crate::key::ConvKey;
use crate::pool::Store;

/// One decided command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// The conversation.
    pub key: ConvKey,
    /// The command's idempotency key.
    pub event_id: EventId,
    /// Its namespace ([`domain::Input::id_space`]): the same id in two
    /// spaces is two events.
    pub id_space: IdSpace,
    /// The input's wire name (`Input::name`).
    pub event_type: String,
    /// What the machine decided.
    pub verdict: Verdict,
    /// The phase before the command.
    pub phase_before: Phase,
    /// The phase after it (the same as before unless applied).
    pub phase_after: Phase,
    /// When the ingress accepted it.
    pub received_at: DateTime<Utc>,
    /// When the worker applied it.
    pub applied_at: DateTime<Utc>,
    /// Display-only fields dropped from the event by the ingress (docs/protocol.md §2);
    /// stored as NULL when empty.
    pub warnings: Vec<FieldWarning>,
}

const APPLIED: &str = "
    SELECT bot_id, conversation_id, id_space, event_id
    FROM events
    WHERE (bot_id, conversation_id, id_space, event_id) IN
        (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]))";

/// Which of `ids` are already recorded, whatever their verdict: a redelivered
/// command is a duplicate even if it was rejected the first time.
#[tracing::instrument(level = "debug", skip_all, fields(ids = ids.len()))]
pub async fn applied_event_ids(
    tx: &impl Executor,
    ids: &[(ConvKey, ScopedEventId)],
) -> Result<HashSet<(ConvKey, ScopedEventId)>> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let (bots, conversations) = key_arrays(ids.iter().map(|(key, _)| key));
    let spaces: Vec<&str> = ids.iter().map(|(_, id)| id.0.as_str()).collect();
    let events: Vec<&str> = ids.iter().map(|(_, id)| id.1.as_str()).collect();
    let rows = executor::query(tx, APPLIED, &[&bots, &conversations, &spaces, &events]).await?;
    rows.iter()
        .map(|row| {
            let id = ScopedEventId(
                space_from_row(row)?,
                parse_id(row.try_get("event_id")?, "event_id", EventId::parse)?,
            );
            Ok((key_from_row(row)?, id))
        })
        .collect()
}

fn space_from_row(row: &Row) -> Result<IdSpace> {
    let name: &str = row.try_get("id_space")?;
    IdSpace::parse(name).ok_or_else(|| Error::Corrupt { column: "id_space", value: name.to_owned() })
}

// `ORDER BY ord` makes `id` follow the order of `rows`, which is the order the
// events were applied in.
const RECORD: &str = "
    INSERT INTO events
        (bot_id, conversation_id, event_id, event_type, verdict, code, phase_before, phase_after,
         received_at, applied_at, id_space, warnings)
    SELECT u.bot_id, u.conversation_id, u.event_id, u.event_type, u.verdict, u.code, u.phase_before,
           u.phase_after, u.received_at, u.applied_at, u.id_space, u.warnings
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::text[], $9::timestamptz[], $10::timestamptz[], $11::text[], $12::jsonb[])
        WITH ORDINALITY AS u(bot_id, conversation_id, event_id, event_type, verdict, code, phase_before,
                             phase_after, received_at, applied_at, id_space, warnings, ord)
    ORDER BY u.ord
    ON CONFLICT DO NOTHING";

/// Records `rows` in order. An event id already recorded for its conversation
/// is left as it was. Returns the number of rows inserted.
#[tracing::instrument(level = "debug", skip_all, fields(rows = rows.len()))]
pub async fn record_events(tx: &impl Executor, rows: &[EventRecord]) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let (bots, conversations) = key_arrays(rows.iter().map(|row| &row.key));
    let events: Vec<&str> = rows.iter().map(|row| row.event_id.as_str()).collect();
    let types: Vec<&str> = rows.iter().map(|row| row.event_type.as_str()).collect();
    let (verdicts, codes): (Vec<&str>, Vec<Option<&str>>) =
        rows.iter().map(|row| verdict_columns(row.verdict)).unzip();
    let before: Vec<&str> = rows.iter().map(|row| row.phase_before.as_str()).collect();
    let after: Vec<&str> = rows.iter().map(|row| row.phase_after.as_str()).collect();
    let received: Vec<DateTime<Utc>> = rows.iter().map(|row| row.received_at).collect();
    let applied: Vec<DateTime<Utc>> = rows.iter().map(|row| row.applied_at).collect();
    let spaces: Vec<&str> = rows.iter().map(|row| row.id_space.as_str()).collect();
    let warnings: Vec<Option<Json<&[FieldWarning]>>> =
        rows.iter().map(|row| (!row.warnings.is_empty()).then_some(Json(row.warnings.as_slice()))).collect();
    executor::execute(
        tx,
        RECORD,
        &[
            &bots,
            &conversations,
            &events,
            &types,
            &verdicts,
            &codes,
            &before,
            &after,
            &received,
            &applied,
            &spaces,
            &warnings,
        ],
    )
    .await
}

const COLUMNS: &str = "bot_id, conversation_id, event_id, event_type, verdict, code, phase_before, \
                       phase_after, received_at, applied_at, id_space, warnings";

fn record_from_row(row: &Row) -> Result<EventRecord> {
    Ok(EventRecord {
        key: key_from_row(row)?,
        event_id: parse_id(row.try_get("event_id")?, "event_id", EventId::parse)?,
        id_space: space_from_row(row)?,
        event_type: row.try_get("event_type")?,
        verdict: verdict_from_columns(row.try_get("verdict")?, row.try_get("code")?)?,
        phase_before: parse_wire(row.try_get("phase_before")?, "phase_before")?,
        phase_after: parse_wire(row.try_get("phase_after")?, "phase_after")?,
        received_at: row.try_get("received_at")?,
        applied_at: row.try_get("applied_at")?,
        warnings: row
            .try_get::<_, Option<Json<Vec<FieldWarning>>>>("warnings")?
            .map_or_else(Vec::new, |Json(warnings)| warnings),
    })
}

impl Store {
    /// A conversation's recorded events, in the order they were applied.
    pub async fn events_of(&self, key: &ConvKey) -> Result<Vec<EventRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {{schema}}.events
             WHERE bot_id = $1 AND conversation_id = $2 ORDER BY id"
        );
        let rows = self.query(&sql, &[&key.bot_id.as_str(), &key.conversation_id.as_str()]).await?;
        rows.iter().map(record_from_row).collect()
    }

    /// The last `limit` recorded events of a conversation, oldest first: the
    /// query endpoint shows recent history without reading a long log whole.
    pub async fn recent_events(&self, key: &ConvKey, limit: u32) -> Result<Vec<EventRecord>> {
        let sql = format!(
            "SELECT * FROM (SELECT id, {COLUMNS} FROM {{schema}}.events
                 WHERE bot_id = $1 AND conversation_id = $2 ORDER BY id DESC LIMIT $3) AS recent
             ORDER BY id"
        );
        let limit = i64::from(limit);
        let rows = self.query(&sql, &[&key.bot_id.as_str(), &key.conversation_id.as_str(), &limit]).await?;
        rows.iter().map(record_from_row).collect()
    }

    /// `event_id`'s record in one conversation: what a caller waiting for its
    /// own event's verdict may read. Keyed by the whole conversation, never
    /// by the id alone: another bot's or another conversation's event with
    /// the same id is none of the caller's business (docs/protocol.md §3).
    pub async fn conversation_event(
        &self,
        key: &ConvKey,
        event_id: &ScopedEventId,
    ) -> Result<Option<EventRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {{schema}}.events
             WHERE bot_id = $1 AND conversation_id = $2 AND id_space = $3 AND event_id = $4"
        );
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&key.bot_id.as_str(), &key.conversation_id.as_str(), &event_id.0.as_str(), &event_id.1.as_str()];
        let rows = self.query(&sql, &params).await?;
        rows.first().map(record_from_row).transpose()
    }

    /// One recorded event of a bot, found by its id alone (docs/protocol.md §2,
    /// `GET /agent/converse/events/{eventId}`). Event ids are unique per
    /// conversation; should two conversations share one, the first recorded wins.
    /// Only the agent's namespace is searched: the caller's ids, never ours
    /// (docs/protocol.md §2), so `timer:…` names the caller's event of that id, if any.
    pub async fn event(&self, bot_id: &BotId, event_id: &EventId) -> Result<Option<EventRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {{schema}}.events
             WHERE bot_id = $1 AND id_space = 'agent' AND event_id = $2 ORDER BY id LIMIT 1"
        );
        let rows = self.query(&sql, &[&bot_id.as_str(), &event_id.as_str()]).await?;
        rows.first().map(record_from_row).transpose()
    }

    /// How many events are recorded, in all conversations. For tests.
    pub async fn count_events(&self) -> Result<u64> {
        self.count("events").await
    }

    /// `SELECT count(*)` of one of the store's tables.
    pub(crate) async fn count(&self, table: &'static str) -> Result<u64> {
        let rows = self.query(&format!("SELECT count(*) FROM {{schema}}.{table}"), &[]).await?;
        let count: i64 = match rows.first() {
            Some(row) => row.try_get(0)?,
            None => 0,
        };
        u64::try_from(count).map_err(|_| Error::Corrupt { column: "count", value: count.to_string() })
    }
}
