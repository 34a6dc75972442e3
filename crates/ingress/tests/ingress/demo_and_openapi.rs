//! `/openapi.json` documents every public route the router serves, and
//! `/demo` is served only when `[demo]` enables it, handing the demo bot's key
//! to the page only on a loopback bind.

use crate::common::{BOT, KEY, TestApp, test_settings};
use axum::body::Body;
use http::Request;
use serde_json::Value;

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

#[tokio::test]
async fn the_document_covers_every_public_route_with_its_credentials() {
    let app = TestApp::start().await;
    let reply = app.send(get("/openapi.json")).await;
    assert_eq!(reply.status, 200);
    let doc = &reply.json;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{doc}");
    let operations = [
        ("/agent/converse/send-message-to-widget", "post", Some("botApiKey")),
        ("/agent/converse/conversations/{id}", "get", Some("botApiKey")),
        ("/agent/converse/events/{id}", "get", Some("botApiKey")),
        ("/widget/v1/conversations/{id}/escalate", "post", Some("botApiKey")),
        ("/widget/v1/conversations/{id}/events", "get", Some("widgetToken")),
        ("/widget/v1/conversations/{id}/messages", "post", Some("widgetToken")),
        ("/widget/v1/conversations/{id}/end", "post", Some("widgetToken")),
        ("/healthz", "get", None),
        ("/readyz", "get", None),
        ("/openapi.json", "get", None),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method, credential) in operations {
        let operation = &paths.get(path).unwrap_or_else(|| panic!("{path} is documented"))[method];
        assert!(operation.is_object(), "{method} {path} is documented");
        assert!(operation["responses"]["200"].is_object(), "{method} {path} documents its 200");
        let security = operation["security"][0].as_object().map(|s| s.keys().cloned().collect::<Vec<_>>());
        assert_eq!(security, credential.map(|c| vec![c.to_owned()]), "{method} {path}");
        if credential.is_some() {
            assert!(operation["responses"]["401"].is_object(), "{method} {path} documents its 401");
        }
        // Each documented route is served (an unauthenticated call is a 401, not a 404).
        let uri = path.replace("{id}", "c1");
        let request = Request::builder().method(method.to_uppercase().as_str()).uri(&uri).body(Body::empty());
        let reply = app.send(request.expect("request")).await;
        assert_ne!(reply.status, 404, "{method} {uri} is served: {reply:?}");
        assert_ne!(reply.status, 405, "{method} {uri} is served: {reply:?}");
    }
    // Nothing served is left out (besides /metrics and the demo page).
    assert_eq!(paths.len(), operations.len(), "{:?}", paths.keys().collect::<Vec<_>>());
    let example = &doc["components"]["schemas"]["AgentEventRequest"]["example"];
    assert_eq!(example["eventType"], "escalationQueueUpdate", "schemas carry examples");
}

#[tokio::test]
async fn the_demo_is_off_unless_enabled() {
    let app = TestApp::start().await;
    app.send(get("/demo")).await.assert_error(404, "not_found");
    app.send(get("/demo/config")).await.assert_error(404, "not_found");
}

fn demo_settings(bind: &str) -> settings::Settings {
    let mut settings = test_settings();
    settings.http.bind = bind.parse().expect("bind");
    settings.demo = settings::DemoConfig { enabled: true, bot: Some(BOT.to_owned()) };
    settings.validate().expect("valid");
    settings
}

#[tokio::test]
async fn the_demo_page_gets_the_key_only_on_a_loopback_bind() {
    let app = TestApp::start_with(demo_settings("127.0.0.1:8080")).await;
    let page = app.send(get("/demo")).await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].to_str().is_ok_and(|t| t.starts_with("text/html")));
    assert!(page.json.as_str().is_some_and(|html| html.contains("Talk to a human")));
    let config = app.send(get("/demo/config")).await;
    assert_eq!(config.json["botId"], BOT);
    assert_eq!(config.json["apiKey"], KEY);

    let exposed = TestApp::start_with(demo_settings("0.0.0.0:8080")).await;
    let config = exposed.send(get("/demo/config")).await;
    assert_eq!(config.json["botId"], BOT);
    assert_eq!(config.json["apiKey"], Value::Null, "no key off loopback");
}

/// What schemathesis generates: an id that does not percent-decode to UTF-8
/// (or a query that does not decode) was axum's plain-text `400`, which the
/// document cannot describe; it is now the JSON answer of an id that names
/// nothing (or of a bad query).
#[tokio::test]
async fn undecodable_paths_and_queries_answer_json() {
    let app = TestApp::start().await;
    let with_key =
        |uri: &str| Request::get(uri).header("authorization", KEY).body(Body::empty()).expect("request");
    app.send(with_key("/agent/converse/conversations/%FF")).await.assert_error(404, "unknown_conversation");
    app.send(with_key("/agent/converse/events/%FF")).await.assert_error(404, "unknown_event");
    app.send(get("/widget/v1/conversations/%FF/events")).await.assert_error(401, "unauthorized");
    let query = app.send(get("/widget/v1/conversations/c1/events?lastEventId=%FF")).await;
    assert!(query.status == 400 || query.status == 401, "{query:?}");
    assert!(query.json["error"].is_string(), "a JSON error: {query:?}");
}
