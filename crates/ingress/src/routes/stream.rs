//! `GET /widget/v1/conversations/{id}/events` (docs/protocol.md §3): the widget's
//! resumable `text/event-stream`.
//!
//! Order of work on connect, so nothing is lost or repeated:
//! 1. subscribe to the conversation's live updates (bound before returning);
//! 2. read the backlog after `Last-Event-ID` from PostgreSQL and send it;
//! 3. send live events, skipping any sequence already sent (the overlap of
//!    1 and 2), and when a live event shows a gap (a missed or late message,
//!    or a lagging subscriber), read the gap from PostgreSQL first; after the
//!    hub reconnected to the broker ([`LiveSignal::Resync`]), read everything
//!    after the last sequence sent, since messages of the gap are lost.
//!
//! The database is the source of truth; live messages only say "now". Every
//! event carries `id: <sequence>`, so a reconnect to any instance resumes.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use domain::FieldCode;
use domain::widget::WidgetEnvelope;
use serde::Deserialize;
use store::{ConvKey, Store};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::auth::authenticate_widget_stream;
use crate::error::ApiError;
use crate::live::{LiveSignal, Subscription};
use crate::openapi::schemas::ErrorBody;

/// The header a reconnecting `EventSource` sends.
pub const LAST_EVENT_ID: &str = "last-event-id";

/// Events buffered per stream between the pump task and the socket.
const BUFFER: usize = 64;

/// `?lastEventId=` and `?access_token=`, for a browser's `EventSource` (it
/// cannot set headers).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamQuery {
    /// Resume after this sequence.
    pub last_event_id: Option<String>,
    /// The widget token, used only without an `Authorization` header (RFC 6750 §2.3).
    #[serde(rename = "access_token")]
    pub access_token: Option<String>,
}

/// Never prints the token.
impl std::fmt::Debug for StreamQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamQuery")
            .field("last_event_id", &self.last_event_id)
            .field("access_token", &self.access_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Opens the stream of the conversation the widget token is for; the token
/// comes from `Authorization: Bearer`, or without that header from `?access_token=`.
#[utoipa::path(get, path = "/widget/v1/conversations/{id}/events", tag = "widget", operation_id = "widgetEvents",
    summary = "The visitor's resumable event stream (widget token)",
    description = "Server-sent events: each has `id:` (the conversation's widget sequence), `event:` (its type: \
                   escalationRequested, escalationQueueUpdate, escalationSuccess, agentChanged, message, \
                   escalationFailed, agentDisconnect, sessionEnded, visitorRejected) and `data:` (JSON with \
                   `sequence`, `timestamp`, `escalationId`, `type` and the event's fields). Reconnect with \
                   `Last-Event-ID` to get exactly what was missed.",
    params(("id" = String, Path, description = "The conversation (platformConversationId), 1–128 characters."),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this sequence."),
        ("lastEventId" = Option<String>, Query, description = "Resume after this sequence (without the header)."),
        ("access_token" = Option<String>, Query, description = "The widget token, for `EventSource`, without an `Authorization` header."),
    ),
    responses(
        (status = 200, description = "The stream.", content_type = "text/event-stream", body = String),
        (status = 400, description = "`Last-Event-ID` is not a sequence number.", body = ErrorBody),
        (status = 401, description = "Missing or invalid widget token, or one for another conversation.", body = ErrorBody),
        (status = 429, description = "Too many stream opens; see `Retry-After`.", body = ErrorBody),
        (status = 503, description = "Live delivery or the database is unavailable: retry.", body = ErrorBody),
    ),
    security(("widgetToken" = [])))]
#[tracing::instrument(skip_all, fields(conversation_id))]
pub async fn events(
    State(app): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    // An undecodable path cannot match any token: the same 401 as a wrong one.
    let Ok(Path(id)) = path else { return Err(ApiError::Unauthorized) };
    let Ok(Query(query)) = query else {
        return Err(ApiError::invalid(
            "query",
            FieldCode::InvalidFormat,
            "the query string cannot be decoded",
        ));
    };
    tracing::Span::current().record("conversation_id", id.as_str());
    let token = query.access_token.as_deref();
    let (bot, conversation) =
        authenticate_widget_stream(app.settings(), app.tokens(), &headers, token, &id, Utc::now())?;
    app.check_stream_open(bot.as_str(), conversation.as_str())?;
    let after = last_event_id(&headers, query.last_event_id.as_deref())?;
    let store = app.store()?.clone();
    let hub = app.live()?;
    let subscription = hub.subscribe(bot.as_str(), conversation.as_str()).await.map_err(|error| {
        tracing::warn!(%error, "live subscribe failed; answering 503");
        ApiError::QueryUnavailable
    })?;
    let key = ConvKey::new(bot, conversation);
    // Read before answering, so a database outage is a 503, not an empty stream.
    let backlog = store.widget_events(&key, after).await.map_err(ApiError::store)?;
    let (sender, receiver) = mpsc::channel(BUFFER);
    let closing = app.streams_closing().clone();
    tokio::spawn(pump(Pump { store, key, subscription, sender, last: after, closing }, backlog));
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok::<Event, Infallible>(event), receiver))
    });
    let heartbeat = Duration::from_secs(app.settings().http.sse_heartbeat_secs.max(1));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat)).into_response())
}

/// `Last-Event-ID` (header first, then the query): `0` when absent.
pub fn last_event_id(headers: &HeaderMap, query: Option<&str>) -> Result<u64, ApiError> {
    let raw = match headers.get(LAST_EVENT_ID) {
        Some(value) => Some(value.to_str().map_err(|_| bad_last_event_id())?),
        None => query,
    };
    match raw.map(str::trim) {
        None | Some("") => Ok(0),
        Some(text) => text.parse().map_err(|_| bad_last_event_id()),
    }
}

fn bad_last_event_id() -> ApiError {
    ApiError::invalid("Last-Event-ID", FieldCode::InvalidFormat, "Last-Event-ID must be a sequence number")
}

/// One stream's sending side: what it sent last and where to read gaps.
struct Pump {
    store: Store,
    key: ConvKey,
    subscription: Subscription,
    sender: mpsc::Sender<Event>,
    /// The last sequence sent (or the client's `Last-Event-ID`).
    last: u64,
    /// Shutdown began: end the stream (the widget resumes elsewhere).
    closing: CancellationToken,
}

/// Why a stream ends: the client left, or it must reconnect (resuming loses nothing).
struct Closed;

/// Sends the backlog, then live events, until the client goes away or the
/// instance shuts down.
async fn pump(mut pump: Pump, backlog: Vec<WidgetEnvelope>) {
    if pump.send_all(backlog).await.is_err() {
        return;
    }
    loop {
        let update = tokio::select! {
            () = pump.sender.closed() => return,
            () = pump.closing.cancelled() => return,
            update = pump.subscription.receiver.recv() => update,
        };
        let outcome = match update {
            Ok(LiveSignal::Update(update)) => pump.send_live(&update.events).await,
            // Fell behind the broadcast, or live messages were lost while the
            // hub reconnected: the database has everything.
            Ok(LiveSignal::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => pump.catch_up().await,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if outcome.is_err() {
            return;
        }
    }
}

impl Pump {
    /// Sends the live `events` that follow the last one sent; at the first
    /// gap, reads the rest from the database instead.
    async fn send_live(&mut self, events: &[WidgetEnvelope]) -> Result<(), Closed> {
        for envelope in events {
            if envelope.sequence <= self.last {
                continue;
            }
            if envelope.sequence != self.last + 1 {
                // Committed before it was published, so the database has the gap and this.
                return self.catch_up().await;
            }
            self.send(envelope).await?;
        }
        Ok(())
    }

    /// Sends everything the database has after the last sequence sent.
    async fn catch_up(&mut self) -> Result<(), Closed> {
        match self.store.widget_events(&self.key, self.last).await {
            Ok(events) => self.send_all(events).await,
            Err(error) => {
                // The widget reconnects with its Last-Event-ID and loses nothing.
                tracing::warn!(%error, "reading a stream's gap failed; closing the stream");
                Err(Closed)
            }
        }
    }

    async fn send_all(&mut self, events: Vec<WidgetEnvelope>) -> Result<(), Closed> {
        for envelope in &events {
            if envelope.sequence > self.last {
                self.send(envelope).await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, envelope: &WidgetEnvelope) -> Result<(), Closed> {
        let data = serde_json::to_string(envelope).map_err(|error| {
            tracing::error!(%error, "widget event not serializable");
            Closed
        })?;
        let event =
            Event::default().id(envelope.sequence.to_string()).event(envelope.event.name()).data(data);
        self.sender.send(event).await.map_err(|_| Closed)?;
        self.last = envelope.sequence;
        Ok(())
    }
}
