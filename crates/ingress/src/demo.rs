//! The demo widget page (`[demo]`, off by default): `GET /demo`, a visitor's
//! widget in plain HTML and JavaScript compiled into the binary, and `GET
//! /demo/config`, what the page needs to escalate.
//!
//! Escalating takes a bot API key (docs/protocol.md §3). The page is given the
//! demo bot's key only when the ingress listens on loopback, where nobody but
//! the person at this machine can fetch it (see
//! [`settings::DemoConfig::exposed_key`]); on any other bind it answers
//! `apiKey: null` and the page asks for a key. The built-in development
//! configuration binds `127.0.0.1`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppState;
use crate::error::ApiError;

/// The page.
pub const PAGE: &str = include_str!("../assets/demo.html");

/// `GET /demo`: the widget page, or `404` unless `demo.enabled`.
pub async fn page(State(app): State<AppState>) -> Response {
    if !app.settings().demo.enabled {
        return ApiError::NotFound.into_response();
    }
    // The page runs only its own inline script and talks only to this origin.
    let policy = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                  connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, policy),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /demo/config`: `{"botId", "apiKey"}`, the key only on a loopback bind;
/// `404` unless `demo.enabled`.
pub async fn config(State(app): State<AppState>) -> Response {
    let settings = app.settings();
    if !settings.demo.enabled {
        return ApiError::NotFound.into_response();
    }
    let key = settings.demo.exposed_key(&settings.http, &settings.bots);
    ([(header::CACHE_CONTROL, "no-store")], Json(json!({"botId": settings.demo.bot, "apiKey": key})))
        .into_response()
}
