//! The operations API (`/v1`): each handler parses its request, calls the
//! operation the CLI calls, and answers its result as JSON. Bulk and
//! destructive actions take `confirm=true` where the CLI takes `--yes`:
//! without it a bulk replay is a dry run and a purge is refused (`409`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{AdminState, ErrorBody};
use crate::dead_events::{self, DeadEvent, DeadEventsPurge, DeadEventsReplay};
use crate::dead_letters::{self, Changed, DeadLetter, DeadLetterDetail, PurgeReport, ReplayReport};
use crate::error::{OpsError, OpsResult};
use crate::filter::FilterArgs;
use crate::shards::{self, Shards};
use crate::timeline::{self, Timeline};

/// `GET /v1/dead-letters` parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this bot's.
    pub bot: Option<String>,
    /// Only this conversation's (`platformConversationId`).
    pub conversation: Option<String>,
    /// Only those given up for this reason: `final_status`, `out_of_budget`,
    /// `no_endpoint`, `escalation_ended`, `undecodable`.
    pub reason: Option<String>,
    /// Dead-lettered at or after: RFC 3339, or a duration ago (`30m`, `2h`, `7d`).
    pub since: Option<String>,
    /// Dead-lettered before (same formats as `since`).
    pub until: Option<String>,
    /// At most this many, 1-10000. Default 100.
    pub limit: Option<i64>,
}

/// Filters and confirmation of the bulk actions.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BulkQuery {
    /// Only this bot's.
    pub bot: Option<String>,
    /// Only this conversation's.
    pub conversation: Option<String>,
    /// Only those given up for this reason.
    pub reason: Option<String>,
    /// Dead-lettered at or after.
    pub since: Option<String>,
    /// Dead-lettered before.
    pub until: Option<String>,
    /// `true` to act; otherwise a replay is a dry run and a purge is refused.
    pub confirm: Option<bool>,
}

impl BulkQuery {
    fn filter(&self) -> FilterArgs {
        FilterArgs {
            bot: self.bot.clone(),
            conversation: self.conversation.clone(),
            reason: self.reason.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
        }
    }
}

/// `limit` of `GET /v1/dead-events`; `confirm` of the dead-event actions.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadEventsQuery {
    /// At most this many (list). Default 100.
    pub limit: Option<usize>,
    /// `true` to act (replay, purge).
    pub confirm: Option<bool>,
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> OpsResult<T> {
    query.map(|Query(q)| q).map_err(|rejection| OpsError::invalid(rejection.body_text()))
}

/// List dead letters, oldest first.
#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead letters", params(ListQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [DeadLetter]), (status = 400, body = ErrorBody),
               (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_dead_letters(
    State(state): State<AdminState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> OpsResult<Json<Vec<DeadLetter>>> {
    let q = query(q)?;
    let filter = FilterArgs {
        bot: q.bot,
        conversation: q.conversation,
        reason: q.reason,
        since: q.since,
        until: q.until,
    };
    Ok(Json(dead_letters::list(&state.store, &filter, q.limit.unwrap_or(100)).await?))
}

/// One dead letter (or any delivery) with its payload and every attempt.
#[utoipa::path(get, path = "/v1/dead-letters/{id}", tag = "dead letters",
    params(("id" = i64, Path, description = "The delivery id")), security(("bearer" = [])),
    responses((status = 200, body = DeadLetterDetail), (status = 404, body = ErrorBody),
               (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn show_dead_letter(
    State(state): State<AdminState>,
    Path(id): Path<i64>,
) -> OpsResult<Json<DeadLetterDetail>> {
    Ok(Json(dead_letters::show(&state.store, id).await?))
}

/// Re-queue one dead letter with a fresh budget and the same webhook-id.
#[utoipa::path(post, path = "/v1/dead-letters/{id}/replay", tag = "dead letters",
    params(("id" = i64, Path, description = "The delivery id")), security(("bearer" = [])),
    responses((status = 200, body = Changed), (status = 404, body = ErrorBody),
               (status = 409, body = ErrorBody, description = "Not a dead letter"),
               (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn replay_dead_letter(
    State(state): State<AdminState>,
    Path(id): Path<i64>,
) -> OpsResult<Json<Changed>> {
    Ok(Json(dead_letters::replay_one(&state.store, id).await?))
}

/// Mark a dead letter skipped: kept in the history, never sent.
#[utoipa::path(post, path = "/v1/dead-letters/{id}/skip", tag = "dead letters",
    params(("id" = i64, Path, description = "The delivery id")), security(("bearer" = [])),
    responses((status = 200, body = Changed), (status = 404, body = ErrorBody),
               (status = 409, body = ErrorBody, description = "Not a dead letter"),
               (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn skip_dead_letter(
    State(state): State<AdminState>,
    Path(id): Path<i64>,
) -> OpsResult<Json<Changed>> {
    Ok(Json(dead_letters::skip(&state.store, id).await?))
}

/// Replay every match, each conversation's in sequence order; a dry run unless `confirm=true`.
#[utoipa::path(post, path = "/v1/dead-letters/replay", tag = "dead letters", params(BulkQuery),
    security(("bearer" = [])),
    responses((status = 200, body = ReplayReport), (status = 400, body = ErrorBody),
               (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn replay_dead_letters(
    State(state): State<AdminState>,
    q: Result<Query<BulkQuery>, QueryRejection>,
) -> OpsResult<Json<ReplayReport>> {
    let q = query(q)?;
    Ok(Json(dead_letters::replay(&state.store, &q.filter(), q.confirm.unwrap_or(false)).await?))
}

/// Delete the matching dead letters and their attempts; refused (`409`, with the count) unless `confirm=true`.
#[utoipa::path(post, path = "/v1/dead-letters/purge", tag = "dead letters", params(BulkQuery),
    security(("bearer" = [])),
    responses((status = 200, body = PurgeReport), (status = 400, body = ErrorBody),
               (status = 409, body = ErrorBody, description = "Not confirmed"),
               (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn purge_dead_letters(
    State(state): State<AdminState>,
    q: Result<Query<BulkQuery>, QueryRejection>,
) -> OpsResult<Json<PurgeReport>> {
    let q = query(q)?;
    Ok(Json(dead_letters::purge(&state.store, &q.filter(), q.confirm.unwrap_or(false)).await?))
}

/// List dead-lettered events without consuming them, oldest first.
#[utoipa::path(get, path = "/v1/dead-events", tag = "dead events", params(DeadEventsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [DeadEvent]), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_dead_events(
    State(state): State<AdminState>,
    q: Result<Query<DeadEventsQuery>, QueryRejection>,
) -> OpsResult<Json<Vec<DeadEvent>>> {
    let q = query(q)?;
    Ok(Json(dead_events::list(&state.settings, q.limit.unwrap_or(100)).await?))
}

/// Republish every decodable dead-lettered event to its shard queue; a dry run unless `confirm=true`.
#[utoipa::path(post, path = "/v1/dead-events/replay", tag = "dead events", params(DeadEventsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = DeadEventsReplay), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn replay_dead_events(
    State(state): State<AdminState>,
    q: Result<Query<DeadEventsQuery>, QueryRejection>,
) -> OpsResult<Json<DeadEventsReplay>> {
    let q = query(q)?;
    Ok(Json(dead_events::replay(&state.settings, q.confirm.unwrap_or(false)).await?))
}

/// Delete every dead-lettered event; refused (`409`) unless `confirm=true`.
#[utoipa::path(post, path = "/v1/dead-events/purge", tag = "dead events", params(DeadEventsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = DeadEventsPurge), (status = 409, body = ErrorBody),
               (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn purge_dead_events(
    State(state): State<AdminState>,
    q: Result<Query<DeadEventsQuery>, QueryRejection>,
) -> OpsResult<Json<DeadEventsPurge>> {
    let q = query(q)?;
    Ok(Json(dead_events::purge(&state.settings, q.confirm.unwrap_or(false)).await?))
}

/// A conversation's timeline: events with verdicts, transitions, widget events,
/// webhook deliveries and their attempts, in time order.
#[utoipa::path(get, path = "/v1/conversations/{bot}/{conversation}", tag = "conversations",
    params(("bot" = String, Path, description = "The bot id"),
           ("conversation" = String, Path, description = "The platformConversationId")),
    security(("bearer" = [])),
    responses((status = 200, body = Timeline), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
               (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn conversation(
    State(state): State<AdminState>,
    Path((bot, conversation)): Path<(String, String)>,
) -> OpsResult<Json<Timeline>> {
    Ok(Json(timeline::show(&state.store, &bot, &conversation).await?))
}

/// Which worker holds which shard, and which workers are alive.
#[utoipa::path(get, path = "/v1/shards", tag = "shards", security(("bearer" = [])),
    responses((status = 200, body = Shards), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn shards(State(state): State<AdminState>) -> OpsResult<Json<Shards>> {
    Ok(Json(shards::shards(&state.settings, &state.store).await?))
}
