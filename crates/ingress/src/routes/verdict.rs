//! `Prefer: wait=N` on `send-message-to-widget` (SPEC §2): answer with the
//! worker's verdict instead of a bare `accepted`.
//!
//! The caller subscribes to the conversation's live updates *before* the
//! event is published, so the worker's announcement (which follows its
//! commit) cannot slip by unseen. Then: `200 {"status":"applied"|"duplicate"|
//! "ignored"}` or `409 {"error": CODE, "currentState": phase}`; when no
//! verdict came within `N` seconds (or a live message was lost), the event
//! log is checked once, and failing that `202 {"status":"accepted"}`: the
//! event is safe with the broker and will be decided. When the live hub
//! reconnected meanwhile (its messages in the gap are lost), the event log is
//! checked at once, and if it has no verdict yet the wait goes on.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::live::LiveUpdate;
use domain::{BotId, ConversationId, EventId, Phase, Verdict};
use serde_json::json;

use super::query::verdict_parts;
use crate::app::AppState;
use crate::live::{LiveSignal, Subscription};

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

/// Subscribes for a waiting caller; `None` (answer without waiting) if this
/// ingress has no live hub or the broker refused.
pub async fn subscribe(app: &AppState, bot: &BotId, conversation: &ConversationId) -> Option<Subscription> {
    let hub = app.live().ok()?;
    match hub.subscribe(bot.as_str(), conversation.as_str()).await {
        Ok(subscription) => Some(subscription),
        Err(error) => {
            tracing::warn!(%error, "cannot wait for a verdict; answering accepted");
            None
        }
    }
}

/// Waits up to `wait` for `event_id`'s verdict and renders the answer.
pub async fn await_verdict(
    app: &AppState,
    subscription: Subscription,
    bot: &BotId,
    event_id: &EventId,
    wait: Duration,
) -> Response {
    match wait_for(app, subscription, bot, event_id, wait).await {
        Some((verdict, phase)) => render(event_id, verdict, phase),
        None => (StatusCode::ACCEPTED, Json(json!({"status": "accepted", "eventId": event_id.as_str()})))
            .into_response(),
    }
}

/// Waits up to `wait` for `event_id`'s verdict and the conversation's phase
/// after it; `None` if it was not decided in time.
pub async fn wait_for(
    app: &AppState,
    mut subscription: Subscription,
    bot: &BotId,
    event_id: &EventId,
    wait: Duration,
) -> Option<(Verdict, Phase)> {
    let deadline = tokio::time::Instant::now() + wait;
    // Ends when lagging, closed or out of time: then the event log may know.
    while let Ok(Ok(signal)) = tokio::time::timeout_at(deadline, subscription.receiver.recv()).await {
        match signal {
            LiveSignal::Update(update) => {
                if let Some(found) = find(&update, event_id) {
                    return Some(found);
                }
            }
            // The hub reconnected and the verdict's message may be lost:
            // decided by now means in the event log; if not, it comes live.
            LiveSignal::Resync => {
                if let Some(found) = recorded(app, bot, event_id).await {
                    return Some(found);
                }
            }
        }
    }
    drop(subscription);
    recorded(app, bot, event_id).await
}

/// `event_id`'s verdict and the phase after it, if the event log has them.
pub async fn recorded(app: &AppState, bot: &BotId, event_id: &EventId) -> Option<(Verdict, Phase)> {
    let store = app.store().ok()?;
    let record = store.event(bot, event_id).await.ok()??;
    Some((record.verdict, record.phase_after))
}

fn find(update: &LiveUpdate, event_id: &EventId) -> Option<(Verdict, Phase)> {
    update.verdicts.iter().find(|v| &v.event_id == event_id).map(|v| (v.verdict, update.phase))
}

fn render(event_id: &EventId, verdict: Verdict, phase: Phase) -> Response {
    match verdict_parts(verdict) {
        (_, Some(code)) => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": code,
                "message": "the event was refused by the conversation's state",
                "currentState": phase.as_str(),
                "eventId": event_id.as_str(),
            })),
        )
            .into_response(),
        (status, None) => Json(json!({
            "status": status,
            "eventId": event_id.as_str(),
            "currentState": phase.as_str(),
        }))
        .into_response(),
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
