//! The admin listener's HTTP surface: [`router`] over an [`AdminState`].
//!
//! Without a token: `GET /healthz`, `GET /readyz`, `GET /metrics`,
//! `GET /openapi.json`. Behind `Authorization: Bearer <admin.token>`: the
//! operations API under `/v1` ([`routes`]), the same operations as the CLI's.

pub mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;
use settings::{Role, Settings};
use store::Store;
use utoipa::ToSchema;

use crate::error::OpsError;
use crate::gauges::Gauges;
use crate::probes::Probes;

/// What the admin handlers share; cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub(crate) settings: Arc<Settings>,
    pub(crate) role: Role,
    pub(crate) store: Store,
    pub(crate) probes: Probes,
    pub(crate) gauges: Option<Gauges>,
    pub(crate) metrics: PrometheusHandle,
}

impl AdminState {
    /// State for a process of `role`; `probes` must be running for `/readyz`
    /// to turn ready. Workers and `all` read the deployment gauges on scrape.
    pub fn new(settings: Arc<Settings>, role: Role, store: Store, probes: Probes) -> Self {
        let gauges = match role {
            Role::Ingress => None,
            Role::Worker | Role::All => Some(Gauges::new(settings.clone(), store.clone(), probes.clone())),
        };
        Self { settings, role, store, probes, gauges, metrics: crate::metrics::install() }
    }
}

/// An operation's failure as JSON: `{"error": "not_found", "message": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// `invalid`, `unauthorized`, `not_found`, `refused` or `unavailable`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

impl IntoResponse for OpsError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody { error: self.code().to_owned(), message: self.message };
        (status, axum::Json(body)).into_response()
    }
}

/// Every admin route.
pub fn router(state: AdminState) -> Router {
    let operations = Router::new()
        .route("/v1/dead-letters", get(routes::list_dead_letters))
        .route("/v1/dead-letters/replay", post(routes::replay_dead_letters))
        .route("/v1/dead-letters/purge", post(routes::purge_dead_letters))
        .route("/v1/dead-letters/{id}", get(routes::show_dead_letter))
        .route("/v1/dead-letters/{id}/replay", post(routes::replay_dead_letter))
        .route("/v1/dead-letters/{id}/skip", post(routes::skip_dead_letter))
        .route("/v1/dead-events", get(routes::list_dead_events))
        .route("/v1/dead-events/replay", post(routes::replay_dead_events))
        .route("/v1/dead-events/purge", post(routes::purge_dead_events))
        .route("/v1/conversations/{bot}/{conversation}", get(routes::conversation))
        .route("/v1/shards", get(routes::shards))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(operations)
        .fallback(|| async { OpsError::not_found("no such admin route") })
        .with_state(state)
}

/// `Authorization: Bearer <admin.token>`, compared in constant time. An
/// unset token disables the operations API.
async fn authorize(
    State(state): State<AdminState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let token = &state.settings.admin.token;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let problem = match given {
        _ if token.is_empty() => Some("the operations API is disabled: set admin.token"),
        None => Some("missing Authorization: Bearer <admin token>"),
        Some(given) if !token.ct_eq(given) => Some("wrong admin token"),
        Some(_) => None,
    };
    match problem {
        None => next.run(request).await,
        Some(message) => {
            let body = ErrorBody { error: "unauthorized".to_owned(), message: message.to_owned() };
            (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], axum::Json(body))
                .into_response()
        }
    }
}

/// `GET /healthz`: the process is up. Always `200`.
async fn healthz(State(state): State<AdminState>) -> Response {
    axum::Json(json!({"status": "ok", "role": state.role.as_str()})).into_response()
}

/// `GET /readyz`: `200` when every dependency of the role answered its last
/// probe (worker: PostgreSQL and RabbitMQ; ingress: RabbitMQ), else `503`;
/// either way each check's result.
async fn readyz(State(state): State<AdminState>) -> Response {
    let results = state.probes.results();
    let ready = results.values().all(Result::is_ok);
    let checks: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .map(|(name, result)| (name.to_owned(), json!(result.err().unwrap_or_else(|| "ok".to_owned()))))
        .collect();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let word = if ready { "ready" } else { "not_ready" };
    (status, axum::Json(json!({"status": word, "role": state.role.as_str(), "checks": checks})))
        .into_response()
}

/// `GET /metrics`: Prometheus text, the deployment gauges refreshed if due.
async fn metrics(State(state): State<AdminState>) -> Response {
    if let Some(gauges) = &state.gauges {
        gauges.refresh_if_due().await;
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
        .into_response()
}

/// `GET /openapi.json`: the operations API's OpenAPI document.
async fn openapi() -> Response {
    axum::Json(crate::openapi::document()).into_response()
}
