//! Health, readiness, and JSON answers for unknown routes and methods. Metrics
//! are served by the admin listener, never on the public port.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppState;
use crate::error::ApiError;
use crate::openapi::schemas::{ErrorBody, StatusBody};

/// `GET /healthz`: the process is up and serving HTTP. Always `200`.
#[utoipa::path(get, path = "/healthz", tag = "operations", operation_id = "healthz",
    responses((status = 200, description = "The process is up.", body = StatusBody)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: `200` when publishing and live delivery both work: the
/// publisher has a usable broker connection (a `200` from the agent API is
/// possible) and so has the live hub, if this ingress has one (streams open,
/// `Prefer: wait` gets verdicts); `503` otherwise (the load balancer should
/// send traffic elsewhere).
#[utoipa::path(get, path = "/readyz", tag = "operations", operation_id = "readyz",
    responses(
        (status = 200, description = "Publishing and live delivery work.", body = StatusBody),
        (status = 503, description = "Not ready: the message says why.", body = ErrorBody),
    ))]
pub async fn readyz(State(app): State<AppState>) -> Response {
    let problem = if !app.publisher().is_connected() {
        Some("no broker connection for publishing")
    } else if app.live().is_ok_and(|hub| !hub.is_connected()) {
        Some("no broker connection for live delivery")
    } else {
        None
    };
    match problem {
        None => Json(json!({"status": "ready"})).into_response(),
        Some(message) => {
            let body = json!({"error": "not_ready", "message": message});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// Any unknown route: JSON `404`.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// A known route with the wrong method: JSON `405`.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
