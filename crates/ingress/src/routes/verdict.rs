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
use domain::{EventId, FieldWarning, IdSpace, Phase, ScopedEventId, Verdict};
use serde_json::{Value, json};
use store::ConvKey;

use super::query::verdict_parts;
use crate::app::AppState;
use crate::live::VerdictWaiter;

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

/// Waits up to `wait` for the verdict on `event_id` of the conversation `key`
/// and renders the answer.
pub async fn await_verdict(
    app: &AppState,
    waiter: VerdictWaiter,
    key: &ConvKey,
    event_id: &EventId,
    warnings: &[FieldWarning],
    wait: Duration,
) -> Response {
    let decided = match waiter.wait(wait).await {
        Some(decided) => Some(decided),
        // Not in time, or the reply was lost (the hub reconnected meanwhile):
        // decided by now means in the event log.
        None => recorded(app, key, &ScopedEventId(IdSpace::Agent, event_id.clone())).await,
    };
    let (status, mut body) = match decided {
        Some((verdict, phase)) => render(event_id, verdict, phase),
        None => (StatusCode::ACCEPTED, json!({"status": "accepted", "eventId": event_id.as_str()})),
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
