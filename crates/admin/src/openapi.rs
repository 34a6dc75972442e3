//! The operations API's OpenAPI document, generated from the handlers'
//! annotations and the types they answer with (served at `/openapi.json` on
//! the admin listener; the public API has a document of its own).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::routes;

/// The document's definition.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Widget escalations admin API", description = "Operations on dead letters, dead events, \
        conversation timelines and shard ownership: what the `escalations` CLI does, over HTTP. Every \
        `/v1` route needs `Authorization: Bearer <admin.token>`."),
    paths(
        routes::list_dead_letters, routes::show_dead_letter, routes::replay_dead_letter,
        routes::skip_dead_letter, routes::replay_dead_letters, routes::purge_dead_letters,
        routes::list_dead_events, routes::replay_dead_events, routes::purge_dead_events,
        routes::conversation, routes::shards,
    ),
    modifiers(&BearerToken),
)]
pub struct AdminApi;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    AdminApi::openapi()
}
