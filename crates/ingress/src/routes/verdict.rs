//! `Prefer: wait=N` on `send-message-to-widget` (docs/protocol.md §2): answer with the
//! worker's verdict instead of a bare `accepted`.
//!
//! The caller registers a wait for the event's verdict *before* the event is
//! published with this instance's live queue as its `reply_to`; after its
//! commit, the worker sends the verdict straight to that queue (no binding,
//! so waiting costs the broker nothing per conversation). Then: `200
//! {"status":"applied"|"duplicate"|"ignored"}` or `409 {"error": CODE,
//! "currentState": phase}`; when no verdict came within `N` seconds (or the
//! reply was lost because the live hub reconnected), the event log is checked
//! once, and failing that `202 {"status":"accepted"}`: the event is safe with
//! the broker and will be decided. Each answer carries the event's
//! `warnings`, when it has any.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::{Envelope, EventId, FieldWarning, IdSpace, Phase, ScopedEventId, Verdict};
use serde_json::{Value, json};
use store::ConvKey;

use super::Accepted;
use super::query::verdict_parts;
use crate::app::AppState;
use crate::error::ApiError;

/// How long the caller asked to wait, clamped to `http.verdict_wait_max_secs`
/// (and to 10 s); `None` without a `wait` preference.
pub fn requested_wait(headers: &HeaderMap, max_secs: u64) -> Option<Duration> {
    let secs = headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split([',', ';']))
        .find_map(|pref| {
            let (name, value) = pref.split_once('=')?;
            (name.trim().eq_ignore_ascii_case("wait"))
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())?
        })?;
    let secs = secs.min(max_secs).min(10);
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// What came of publishing an event and waiting for its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No wait was asked for, or this instance has no live hub to hear one.
    NotWaited,
    /// Confirmed by the broker, not decided within the wait.
    Undecided,
    /// The worker's verdict, and the conversation's phase after it.
    Decided(Verdict, Phase),
}

/// Publishes `envelope` (an error unless the broker confirmed it) and, with
/// a `wait` and a live hub, waits that long for the worker's verdict on the
/// event, as `space`'s id. The wait is registered before publishing, so the
/// verdict cannot arrive unseen; one that does not come in time (or was lost
/// because the hub reconnected) is looked up once in the conversation's
/// event log. Used by `send-message-to-widget` with `Prefer: wait` and by
/// `escalate`.
pub async fn publish_and_wait(
    app: &AppState,
    envelope: &Envelope,
    space: IdSpace,
    wait: Option<Duration>,
) -> Result<Outcome, ApiError> {
    let event_id = ScopedEventId(space, envelope.command.event_id.clone());
    let waiter = match (wait, app.live()) {
        (Some(wait), Ok(hub)) if !wait.is_zero() => Some((
            wait,
            hub.expect_verdict(envelope.bot_id.as_str(), envelope.conversation_id.as_str(), &event_id),
        )),
        _ => None,
    };
    let reply_to = waiter.as_ref().and_then(|(_, waiter)| waiter.queue().map(str::to_owned));
    app.publish_replying(envelope, reply_to).await?;
    let Some((wait, waiter)) = waiter else { return Ok(Outcome::NotWaited) };
    let decided = match waiter.wait(wait).await {
        Some(decided) => Some(decided),
        None => {
            let key = ConvKey::new(envelope.bot_id.clone(), envelope.conversation_id.clone());
            recorded(app, &key, &event_id).await
        }
    };
    Ok(decided.map_or(Outcome::Undecided, |(verdict, phase)| Outcome::Decided(verdict, phase)))
}

/// The answer of `send-message-to-widget` for `outcome`: `200 accepted`
/// without a wait, `202 accepted` when undecided, else the verdict (`200`, or
/// `409` with `currentState`). Each carries the event's `warnings`, if any.
pub fn respond(event_id: &EventId, outcome: Outcome, warnings: Vec<FieldWarning>) -> Response {
    let (status, mut body) = match outcome {
        Outcome::NotWaited => {
            return Json(Accepted::with_warnings(event_id.clone(), warnings)).into_response();
        }
        Outcome::Undecided => {
            (StatusCode::ACCEPTED, json!({"status": "accepted", "eventId": event_id.as_str()}))
        }
        Outcome::Decided(verdict, phase) => render(event_id, verdict, phase),
    };
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    (status, Json(body)).into_response()
}

/// The verdict on `event_id` of the conversation `key` and the phase after
/// it, if the event log has them; the same id in another conversation (of
/// this bot or another) is never read.
pub async fn recorded(app: &AppState, key: &ConvKey, event_id: &ScopedEventId) -> Option<(Verdict, Phase)> {
    let store = app.store().ok()?;
    let record = store.conversation_event(key, event_id).await.ok()??;
    Some((record.verdict, record.phase_after))
}

fn render(event_id: &EventId, verdict: Verdict, phase: Phase) -> (StatusCode, Value) {
    match verdict_parts(verdict) {
        (_, Some(code)) => (
            StatusCode::CONFLICT,
            json!({
                "error": code,
                "message": "the event was refused by the conversation's state",
                "currentState": phase.as_str(),
                "eventId": event_id.as_str(),
            }),
        ),
        (status, None) => (
            StatusCode::OK,
            json!({
                "status": status,
                "eventId": event_id.as_str(),
                "currentState": phase.as_str(),
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn prefer(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("prefer", HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn wait_is_parsed_and_clamped() {
        assert_eq!(requested_wait(&prefer("wait=3"), 10), Some(Duration::from_secs(3)));
        assert_eq!(requested_wait(&prefer("respond-async, wait=30"), 10), Some(Duration::from_secs(10)));
        assert_eq!(requested_wait(&prefer("wait=5"), 2), Some(Duration::from_secs(2)));
        assert_eq!(requested_wait(&prefer("wait=5"), 0), None);
        assert_eq!(requested_wait(&prefer("wait=abc"), 10), None);
        assert_eq!(requested_wait(&HeaderMap::new(), 10), None);
    }
}
