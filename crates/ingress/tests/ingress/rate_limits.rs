//! Whose budget a request spends (issue 11, docs/protocol.md §3): the bot platform's
//! `escalate` and the agent API have the bot's; visitors' `messages` and `end`
//! are limited per conversation (one widget token's) and stream opens per
//! conversation and per instance, so one visitor never exhausts the bot's
//! budget or another visitor's.

use std::time::Duration;

use crate::common::{SLOW_BOT, SLOW_KEY, TOKEN_SECRET, TestApp, post_json, test_settings, widget_uri};
use axum::body::Body;
use chrono::Utc;
use domain::{BotId, ConversationId};
use http::Request;
use ingress::WidgetTokens;
use serde_json::json;

fn token(conversation: &str) -> String {
    let tokens = WidgetTokens::new(TOKEN_SECRET.as_bytes(), Duration::from_secs(3600));
    let bot = BotId::parse(SLOW_BOT).expect("id");
    tokens.issue(&bot, &ConversationId::parse(conversation).expect("id"), Utc::now()).token
}

async fn visitor_message(app: &TestApp, conversation: &str) -> u16 {
    let auth = format!("Bearer {}", token(conversation));
    let request =
        post_json(&widget_uri(conversation, "messages"), &[("authorization", &auth)], &json!({"text": "hi"}));
    app.send(request).await.status.as_u16()
}

async fn open_stream(app: &TestApp, conversation: &str) -> u16 {
    let request = Request::get(widget_uri(conversation, "events"))
        .header("authorization", format!("Bearer {}", token(conversation)))
        .body(Body::empty())
        .expect("request");
    app.send(request).await.status.as_u16()
}

#[tokio::test]
async fn visitors_spend_their_own_budget_not_the_bots() {
    let mut settings = test_settings();
    // The slow bot's own budget is 1/s, burst 2 (see `common`).
    settings.widget.visitor_rate_per_sec = 1;
    settings.widget.visitor_rate_burst = 3;
    settings.widget.stream_opens_per_sec = 1;
    settings.widget.stream_open_burst = 1;
    settings.widget.instance_stream_opens_per_sec = 1;
    settings.widget.instance_stream_open_burst = 2;
    let app = TestApp::start_with(settings).await;

    // One visitor uses up its own bucket...
    for _ in 0..3 {
        assert_eq!(visitor_message(&app, "v1").await, 200);
    }
    let refused = app
        .send(post_json(
            &widget_uri("v1", "messages"),
            &[("authorization", &format!("Bearer {}", token("v1")))],
            &json!({"text": "one too many"}),
        ))
        .await;
    refused.assert_error(429, "rate_limited");
    assert!(refused.headers.contains_key("retry-after"));

    // ...and neither the bot platform nor another visitor notices.
    let escalate = post_json(
        &widget_uri("e1", "escalate"),
        &[("authorization", &format!("Bearer {SLOW_KEY}")), ("botid", SLOW_BOT)],
        &json!({}),
    );
    let reply = app.send(escalate).await;
    assert_eq!(reply.status.as_u16(), 200, "escalate spent a visitor's budget: {reply:?}");
    assert_eq!(visitor_message(&app, "v2").await, 200, "another visitor was throttled");

    // Stream opens: one per conversation here (this ingress has no live hub,
    // so an allowed open answers 503), then the instance's two are spent.
    assert_eq!(open_stream(&app, "s1").await, 503);
    assert_eq!(open_stream(&app, "s1").await, 429, "per conversation");
    assert_eq!(open_stream(&app, "s2").await, 503);
    assert_eq!(open_stream(&app, "s3").await, 429, "per instance");
}
