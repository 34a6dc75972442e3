//! [`AppState`], what every handler shares, and [`router`], the routes.
//!
//! Tests and benchmarks build the router in-process from any [`Settings`] and
//! [`Publisher`]: `router(AppState::new(settings, publisher))`. The query
//! endpoints (docs/protocol.md §2) also need a [`Store`]: `AppState::with_store`. The
//! write path reads it in two places only: `escalate` answers the live escalation's id
//! after a `duplicate`, and a `Prefer: wait` whose verdict did not arrive looks in the
//! event log; neither ever writes, and both answer without it when it is down.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use broker::Publisher;
use domain::{Envelope, EventId};
use metrics_exporter_prometheus::PrometheusHandle;
use settings::Settings;
use store::Store;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::live::LiveHub;

use crate::error::ApiError;
use crate::rate_limit::{RateLimiter, Scope, retry_after_secs};
use crate::routes::{agent, health, query, stream, widget};
use crate::token::WidgetTokens;
use crate::{demo, keep_alive, metrics, openapi};

/// Shared, read-only state of the ingress; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    settings: Settings,
    publisher: Arc<Publisher>,
    limiter: RateLimiter,
    tokens: WidgetTokens,
    metrics: PrometheusHandle,
    /// For the read-only query endpoints; `None` answers them with `503`.
    store: Option<Store>,
    /// For widget streams; `None` answers them with `503`.
    live: Option<LiveHub>,
    /// Cancelled when shutdown begins: open widget streams end (the widget
    /// resumes elsewhere with `Last-Event-ID`) instead of holding the grace period.
    closing: CancellationToken,
}

impl AppState {
    /// State for `settings` (validated) publishing through `publisher`, whose
    /// topology must have `settings.broker.shards` shards. Installs the
    /// process's metrics recorder if not done yet.
    pub fn new(settings: Settings, publisher: Arc<Publisher>) -> Self {
        Self::build(settings, publisher, None, None)
    }

    /// Like [`AppState::new`], with the store the query endpoints read.
    pub fn with_store(settings: Settings, publisher: Arc<Publisher>, store: Store) -> Self {
        Self::build(settings, publisher, Some(store), None)
    }

    /// Like [`AppState::with_store`], with the live hub widget streams need.
    pub fn with_live(settings: Settings, publisher: Arc<Publisher>, store: Store, live: LiveHub) -> Self {
        Self::build(settings, publisher, Some(store), Some(live))
    }

    fn build(
        settings: Settings,
        publisher: Arc<Publisher>,
        store: Option<Store>,
        live: Option<LiveHub>,
    ) -> Self {
        let tokens = WidgetTokens::new(
            settings.widget.token_secret.expose().as_bytes(),
            Duration::from_secs(settings.widget.token_ttl_secs),
        );
        let limiter = RateLimiter::new(&settings);
        let metrics = metrics::install();
        let closing = CancellationToken::new();
        Self(Arc::new(Inner { settings, publisher, limiter, tokens, metrics, store, live, closing }))
    }

    /// Ends every open widget stream, now and from now on: called when
    /// shutdown begins, so streams do not hold it for the grace period.
    pub fn close_streams(&self) {
        self.0.closing.cancel();
    }

    /// Cancelled once [`AppState::close_streams`] was called.
    pub fn streams_closing(&self) -> &CancellationToken {
        &self.0.closing
    }

    /// The settings the ingress runs with.
    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// The publisher (for readiness).
    pub fn publisher(&self) -> &Publisher {
        &self.0.publisher
    }

    /// Widget token issuing and checking.
    pub fn tokens(&self) -> &WidgetTokens {
        &self.0.tokens
    }

    /// The store of the query endpoints, or `503` if this ingress has none.
    pub fn store(&self) -> Result<&Store, ApiError> {
        self.0.store.as_ref().ok_or(ApiError::QueryUnavailable)
    }

    /// The live hub of widget streams, or `503` if this ingress has none.
    pub fn live(&self) -> Result<&LiveHub, ApiError> {
        self.0.live.as_ref().ok_or(ApiError::QueryUnavailable)
    }

    /// The process's Prometheus handle (the admin listener's `/metrics` renders it).
    pub fn metrics(&self) -> &PrometheusHandle {
        &self.0.metrics
    }

    /// Takes a token from `bot`'s bucket for `scope`, or answers `429`.
    pub fn check_rate(&self, bot: &str, scope: Scope) -> Result<(), ApiError> {
        self.0.limiter.check(bot, scope).map_err(|wait| {
            tracing::debug!(bot, ?scope, ?wait, "rate limited");
            ApiError::RateLimited { retry_after_secs: retry_after_secs(wait) }
        })
    }

    /// Takes a token from the visitor bucket of `conversation` (`messages`,
    /// `end`), or answers `429`; the bot's budget is not touched (docs/protocol.md §3).
    pub fn check_visitor_rate(&self, bot: &str, conversation: &str) -> Result<(), ApiError> {
        self.0.limiter.check_visitor(bot, conversation).map_err(|wait| {
            tracing::debug!(bot, ?wait, "visitor rate limited");
            ApiError::RateLimited { retry_after_secs: retry_after_secs(wait) }
        })
    }

    /// Takes a stream open from `conversation`'s and the instance's buckets,
    /// or answers `429`.
    pub fn check_stream_open(&self, bot: &str, conversation: &str) -> Result<(), ApiError> {
        self.0.limiter.check_stream_open(bot, conversation).map_err(|wait| {
            tracing::debug!(bot, ?wait, "stream opens rate limited");
            ApiError::RateLimited { retry_after_secs: retry_after_secs(wait) }
        })
    }

    /// Publishes `envelope` to its conversation's shard queue and returns once
    /// the broker confirmed it (docs/protocol.md §2: no `200` for an event that could still
    /// be lost). Events of one conversation go to one queue over one channel,
    /// so they are stored in the order their publishes were confirmed.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), ApiError> {
        self.publish_replying(envelope, None).await
    }

    /// [`AppState::publish`], naming `reply_to` as the queue the worker sends
    /// the verdict to (see [`crate::LiveHub::expect_verdict`]).
    pub async fn publish_replying(
        &self,
        envelope: &Envelope,
        reply_to: Option<String>,
    ) -> Result<(), ApiError> {
        self.0.publisher.publish_envelope(envelope, reply_to).await.map_err(ApiError::broker)
    }
}

/// A fresh, time-ordered event id (UUID v7).
pub fn new_event_id() -> Result<EventId, ApiError> {
    // A UUID is always a valid id; the error path exists only to avoid a panic.
    EventId::parse(uuid::Uuid::now_v7().to_string())
        .map_err(|e| ApiError::internal(format!("generated id: {e}")))
}

/// Every route of the ingress, with request metrics and tracing.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/agent/converse/send-message-to-widget", post(agent::send_message_to_widget))
        .route("/agent/converse/conversations/{id}", get(query::conversation))
        .route("/agent/converse/events/{id}", get(query::event))
        .route("/widget/v1/conversations/{id}/escalate", post(widget::escalate))
        .route("/widget/v1/conversations/{id}/events", get(stream::events))
        .route("/widget/v1/conversations/{id}/messages", post(widget::post_message))
        .route("/widget/v1/conversations/{id}/end", post(widget::end))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/demo", get(demo::page))
        .route("/demo/config", get(demo::config))
        .route("/openapi.json", get(openapi::serve))
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(axum::middleware::from_fn(keep_alive::close_unless_drained))
        // A 5xx's cause is logged once by the handler (see `error`); the
        // layer's own failure log would only repeat the status.
        .layer(TraceLayer::new_for_http().make_span_with(request_span).on_failure(()))
        .with_state(state)
}

/// The span of one request: its method and path, never its query string,
/// which may carry a widget token (`?access_token=`, for `EventSource`).
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
}
