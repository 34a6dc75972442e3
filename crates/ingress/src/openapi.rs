//! The OpenAPI 3 document of the public HTTP API, generated from the handlers'
//! `#[utoipa::path]` annotations and the body types, and served at
//! `GET /openapi.json`. CI runs schemathesis against a live ingress with it
//! (`.ci/schemathesis`): no 5xx, and every answer as documented.
//!
//! Two credentials (docs/protocol.md §2, §3): the bot's API key
//! (`Authorization: <key>` or `Bearer <key>`, with an optional `botid` header)
//! for the agent API and `escalate`, and the widget token `escalate` returns
//! (`Authorization: Bearer <token>`) for the visitor's routes.

pub mod responses;
pub mod schemas;
mod sse;

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{self, agent, health, query, stream, widget};

/// Security scheme of the bot's API key.
pub const BOT_KEY: &str = "botApiKey";
/// Security scheme of the widget token.
pub const WIDGET_TOKEN: &str = "widgetToken";

/// The document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Widget escalations",
        description = "The relay between a chatbot's web widget and the human agents of a contact \
                       centre. The bot platform escalates a conversation; the contact centre posts \
                       agent events; the visitor's widget reads a resumable event stream and posts \
                       messages. Webhooks to the contact centre are described in docs/protocol.md §4.",
        license(name = "Apache-2.0"),
    ),
    paths(
        agent::send_message_to_widget,
        query::conversation,
        query::event,
        widget::escalate,
        widget::post_message,
        widget::end,
        stream::events,
        health::healthz,
        health::readyz,
        serve,
    ),
    components(schemas(
        schemas::ErrorBody,
        schemas::FieldProblem,
        schemas::DisplayValue,
        schemas::AgentEventType,
        schemas::AgentEventRequest,
        schemas::VerdictBody,
        schemas::RefusedBody,
        schemas::EscalateRequest,
        schemas::VisitorMessageRequest,
        schemas::EventView,
        schemas::ConversationView,
        schemas::StatusBody,
        routes::Accepted,
        widget::Escalated,
    )),
    modifiers(&Credentials),
    tags(
        (name = "agent", description = "The contact centre's API (bot API key)."),
        (name = "widget", description = "The bot platform's escalate (bot API key) and the visitor's widget (widget token)."),
        (name = "operations", description = "Health, readiness and this document."),
    )
)]
pub struct ApiDoc;

/// Adds the two credentials.
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut key = Http::new(HttpAuthScheme::Bearer);
        key.description = Some(
            "The bot's API key: `Authorization: Bearer <key>`, or the bare key as in the original API."
                .to_owned(),
        );
        components.add_security_scheme(BOT_KEY, SecurityScheme::Http(key));
        let mut token = Http::new(HttpAuthScheme::Bearer);
        token.description = Some(
            "The widget token `escalate` returned, for that conversation only. The event stream also \
             takes it as `?access_token=`."
                .to_owned(),
        );
        components.add_security_scheme(WIDGET_TOKEN, SecurityScheme::Http(token));
    }
}

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        sse::describe_events(&mut doc);
        serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".to_owned())
    })
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3 document of this API.", content_type = "application/json")))]
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}
