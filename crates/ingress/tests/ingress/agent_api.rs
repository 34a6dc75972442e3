//! `POST /agent/converse/send-message-to-widget` against a real RabbitMQ: what
//! a 200 publishes (queue, headers, body), and every 4xx, each checked to
//! publish nothing. Also health, readiness, metrics, 404 and 405.

use crate::common::*;
use axum::body::Body;
use chrono::{DateTime, Utc};
use domain::{AgentAction, Envelope, Input, parse_agent_event};
use futures::stream;
use http::{Request, header};
use serde_json::json;

fn message(conversation: &str, text: &str) -> serde_json::Value {
    json!({"eventType": "message", "platformConversationId": conversation, "text": text})
}

#[tokio::test]
async fn accepted_event_is_in_its_shard_queue_with_headers_and_envelope() {
    let app = TestApp::start().await;
    let before = Utc::now();
    let reply = app
        .send(post_json(
            SEND,
            &[("authorization", &format!("Bearer {KEY}")), ("botid", BOT)],
            &json!({"eventType": "escalationQueueUpdate", "platformConversationId": "conv-1",
                    "queuePosition": "3", "waitingTime": 12, "escalationId": "esc-1"}),
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["status"], "accepted");
    let event_id = reply.json["eventId"].as_str().expect("eventId").to_owned();
    assert_eq!(uuid::Uuid::parse_str(&event_id).expect("a UUID").get_version_num(), 7);

    let shard = app.shard(BOT, "conv-1");
    let mut expected_depths = vec![0; usize::from(SHARDS)];
    expected_depths[usize::from(shard)] = 1;
    assert_eq!(app.depths().await, expected_depths, "exactly one message, in shard {shard}");

    let delivery = app.take(shard).await;
    let p = &delivery.properties;
    assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some(event_id.as_str()));
    assert_eq!(p.delivery_mode(), &Some(2), "persistent");
    assert_eq!(header(p, "bot-id"), BOT);
    assert_eq!(header(p, "conversation-id"), "conv-1");
    assert_eq!(header(p, "event-type"), "escalationQueueUpdate");
    let received_at: DateTime<Utc> = header(p, "received-at").parse().expect("RFC 3339");
    assert!(received_at >= before && received_at <= Utc::now());

    let envelope = Envelope::from_bytes(&delivery.data).expect("the body is an Envelope");
    assert_eq!(envelope.bot_id.as_str(), BOT);
    assert_eq!(envelope.conversation_id.as_str(), "conv-1");
    assert_eq!(envelope.received_at, received_at);
    assert_eq!(envelope.command.event_id.as_str(), event_id);
    match envelope.command.input {
        Input::Agent { escalation_id, action, warnings } => {
            assert_eq!(escalation_id.as_ref().map(|e| e.as_str()), Some("esc-1"));
            // Display values are published as given: the string stays a string.
            assert_eq!(
                action,
                AgentAction::QueueUpdate {
                    queue_position: Some("3".into()),
                    waiting_time: Some(12u32.into())
                }
            );
            assert!(warnings.is_empty());
        }
        other => panic!("expected an agent input, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_avatar_is_dropped_and_the_event_published_with_a_warning() {
    let app = TestApp::start().await;
    let reply = app
        .send(post_json(
            SEND,
            &[("authorization", KEY)],
            &json!({"eventType": "escalationSuccess", "platformConversationId": "conv-av", "agent": "Ann",
                    "agentAvatar": "http://cdn.example/ann.png"}),
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["status"], "accepted");
    assert_eq!(reply.json["warnings"][0]["field"], "agentAvatar");
    assert_eq!(reply.json["warnings"][0]["code"], "not_https");
    let delivery = app.take(app.shard(BOT, "conv-av")).await;
    let envelope = Envelope::from_bytes(&delivery.data).expect("the body is an Envelope");
    match envelope.command.input {
        Input::Agent { action, warnings, .. } => {
            assert_eq!(action, AgentAction::Success { agent: Some("Ann".into()), agent_avatar: None });
            assert_eq!(warnings.len(), 1, "the worker records the warning with the verdict");
        }
        other => panic!("expected an agent input, got {other:?}"),
    }
    // A good avatar: no warnings key at all (the seed's answer, unchanged).
    let reply = app
        .send(post_json(
            SEND,
            &[("authorization", KEY)],
            &json!({"eventType": "escalationSuccess", "platformConversationId": "conv-av",
                    "agentAvatar": "https://cdn.example/ann.png"}),
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.json.get("warnings").is_none(), "{reply:?}");
}

#[tokio::test]
async fn raw_key_without_botid_and_idempotency_key_as_event_id() {
    let app = TestApp::start().await;
    let reply = app
        .send(post_json(
            SEND,
            &[("authorization", KEY), ("idempotency-key", "idem-1")],
            &message("conv-2", "hi"),
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["eventId"], "idem-1");
    // Body eventId equal to the header is fine too.
    let mut body = message("conv-2", "again");
    body["eventId"] = json!("idem-2");
    let reply = app
        .send(post_json(
            SEND,
            &[("authorization", KEY), ("idempotency-key", "idem-2"), ("botid", BOT)],
            &body,
        ))
        .await;
    assert_eq!(reply.json["eventId"], "idem-2", "{reply:?}");

    let shard = app.shard(BOT, "conv-2");
    let first = app.take(shard).await;
    let second = app.take(shard).await;
    assert_eq!(first.properties.message_id().as_ref().map(|s| s.to_string()), Some("idem-1".into()));
    assert_eq!(second.properties.message_id().as_ref().map(|s| s.to_string()), Some("idem-2".into()));
}

#[tokio::test]
async fn bad_credentials_get_401_and_publish_nothing() {
    let app = TestApp::start().await;
    let body = message("conv-1", "hi");
    let bearer_other = format!("Bearer {OTHER_KEY}");
    let cases: [(&str, &[(&str, &str)]); 8] = [
        ("no Authorization", &[]),
        ("empty Authorization", &[("authorization", "")]),
        ("Bearer without key", &[("authorization", "Bearer ")]),
        ("unknown key", &[("authorization", "not-a-key-0123456789")]),
        ("unknown key as Bearer", &[("authorization", "Bearer not-a-key-0123456789")]),
        ("botid of another bot", &[("authorization", KEY), ("botid", OTHER_BOT)]),
        ("botid of no bot", &[("authorization", KEY), ("botid", "ghost")]),
        ("another bot's key for this bot", &[("authorization", &bearer_other), ("botid", BOT)]),
    ];
    for (case, headers) in cases {
        let reply = app.send(post_json(SEND, headers, &body)).await;
        reply.assert_error(401, "unauthorized");
        assert!(reply.headers.contains_key(header::WWW_AUTHENTICATE), "{case}");
    }
    app.assert_nothing_published("401s").await;
}

#[tokio::test]
async fn non_json_media_types_get_415_and_publish_nothing() {
    let app = TestApp::start().await;
    let body = message("conv-1", "hi").to_string();
    for content_type in
        [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("text/json")]
    {
        let mut headers = vec![("authorization", KEY)];
        headers.extend(content_type.map(|ct| ("content-type", ct)));
        let reply = app.send(post_raw(SEND, &headers, body.clone())).await;
        reply.assert_error(415, "unsupported_media_type");
    }
    app.assert_nothing_published("415s").await;
    // With parameters it is still JSON.
    let reply = app
        .send(post_raw(
            SEND,
            &[("authorization", KEY), ("content-type", "application/json; charset=utf-8")],
            body,
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(app.depths().await.iter().sum::<u32>(), 1);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_and_publish_nothing() {
    let app = TestApp::start().await;
    let big = message("conv-1", &"x".repeat(BODY_LIMIT));
    let reply = app.send(post_json(SEND, &[("authorization", KEY)], &big)).await;
    reply.assert_error(413, "payload_too_large");

    // Chunked, without Content-Length: caught while reading.
    let chunks: Vec<Result<String, std::io::Error>> =
        vec![Ok(big.to_string()[..1000].to_owned()), Ok(big.to_string()[1000..].to_owned())];
    let request = Request::post(SEND)
        .header("authorization", KEY)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream::iter(chunks)))
        .expect("request");
    app.send(request).await.assert_error(413, "payload_too_large");
    app.assert_nothing_published("413s").await;
}

#[tokio::test]
async fn malformed_json_gets_400_invalid_json_and_publishes_nothing() {
    let app = TestApp::start().await;
    for body in ["{", "", "{\"eventType\": \"message\",}", "nul"] {
        let reply = app
            .send(post_raw(SEND, &[("authorization", KEY), ("content-type", "application/json")], body))
            .await;
        reply.assert_error(400, "invalid_body");
        assert_eq!(reply.details(), [("body".to_owned(), "invalid_json".to_owned())], "{body:?}");
    }
    app.assert_nothing_published("invalid JSON").await;
}

#[tokio::test]
async fn schema_problems_get_400_with_every_detail_and_publish_nothing() {
    let app = TestApp::start().await;
    let bodies = [
        json!({"eventType": "message", "platformConversationId": "", "text": "", "eventId": 3}),
        json!({"eventType": "escalationQueueUpdate", "queuePosition": "", "waitingTime": -1}),
        json!({"eventType": "escalationQueueUpdate", "platformConversationId": "c", "queuePosition": true,
               "waitingTime": "x".repeat(33)}),
        json!({"eventType": "agentTyping", "platformConversationId": "c"}),
        // The bad avatar alone would only be dropped; the bad agent name fails the event.
        json!({"eventType": "escalationSuccess", "platformConversationId": "c", "agent": 7,
               "agentAvatar": "http://x/a.png"}),
        json!([1, 2]),
        json!({}),
    ];
    for body in bodies {
        let reply = app.send(post_json(SEND, &[("authorization", KEY)], &body)).await;
        reply.assert_error(400, "invalid_body");
        let expected = parse_agent_event(&body).expect_err("invalid").to_body();
        assert_eq!(reply.json["details"], expected["details"], "all problems of {body}");
    }
    let reply = app.send(post_json(SEND, &[("authorization", KEY)], &bodies_with_many_problems())).await;
    assert!(reply.details().len() >= 3, "{reply:?}");
    app.assert_nothing_published("schema 400s").await;
}

fn bodies_with_many_problems() -> serde_json::Value {
    json!({"eventType": "message", "platformConversationId": "c".repeat(129), "text": 5, "escalationId": ""})
}

#[tokio::test]
async fn event_id_and_idempotency_key_problems_get_400_and_publish_nothing() {
    let app = TestApp::start().await;
    let mut body = message("conv-1", "hi");
    body["eventId"] = json!("a");
    let reply = app.send(post_json(SEND, &[("authorization", KEY), ("idempotency-key", "b")], &body)).await;
    reply.assert_error(400, "invalid_body");
    assert_eq!(reply.details(), [("eventId".to_owned(), "conflict".to_owned())]);

    let long_key = "k".repeat(129);
    let reply = app
        .send(post_json(SEND, &[("authorization", KEY), ("idempotency-key", &long_key)], &message("c", "")))
        .await;
    assert_eq!(
        reply.details(),
        [("text".to_owned(), "too_short".to_owned()), ("Idempotency-Key".to_owned(), "too_long".to_owned())]
    );
    app.assert_nothing_published("id 400s").await;
}

#[tokio::test]
async fn over_the_rate_limit_gets_429_with_retry_after_and_publishes_nothing() {
    let app = TestApp::start().await;
    // The slow bot's bucket holds 2: two accepted, the third refused.
    for text in ["one", "two"] {
        let reply = app.send(post_json(SEND, &[("authorization", SLOW_KEY)], &message("conv-1", text))).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let reply = app.send(post_json(SEND, &[("authorization", SLOW_KEY)], &message("conv-1", "three"))).await;
    reply.assert_error(429, "rate_limited");
    let retry_after: u64 =
        reply.headers[header::RETRY_AFTER].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    // Other bots have buckets of their own.
    let reply = app.send(post_json(SEND, &[("authorization", OTHER_KEY)], &message("conv-1", "x"))).await;
    assert_eq!(reply.status, 200, "{reply:?}");

    // The 429 added nothing: two messages of the slow bot, one of the other.
    let slow = app.shard(SLOW_BOT, "conv-1");
    let other = app.shard(OTHER_BOT, "conv-1");
    let mut expected = vec![0; usize::from(SHARDS)];
    expected[usize::from(slow)] += 2;
    expected[usize::from(other)] += 1;
    assert_eq!(app.depths().await, expected);

    let texts: Vec<String> = [app.take(slow).await, app.take(slow).await]
        .iter()
        .map(|d| Envelope::from_bytes(&d.data).expect("envelope"))
        .map(|e| match e.command.input {
            Input::Agent { action: AgentAction::Message { text }, .. } => text,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(texts, ["one", "two"]);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_404_and_405() {
    let app = TestApp::start().await;
    let reply = app.send(Request::get("/nope").body(Body::empty()).expect("request")).await;
    reply.assert_error(404, "not_found");
    let reply =
        app.send(Request::get(SEND).header("authorization", KEY).body(Body::empty()).expect("request")).await;
    reply.assert_error(405, "method_not_allowed");
    let reply = app
        .send(post_json("/widget/v1/conversations/c/unknown", &[("authorization", KEY)], &json!({})))
        .await;
    reply.assert_error(404, "not_found");
    app.assert_nothing_published("404/405").await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::start().await;
    let get = |uri: &str| Request::get(uri).body(Body::empty()).expect("request");
    assert_eq!(app.send(get("/healthz")).await.status, 200);
    let ready = app.send(get("/readyz")).await;
    assert_eq!(ready.status, 200, "{ready:?}");

    app.send(post_json(SEND, &[("authorization", KEY)], &message("conv-m", "hi"))).await;
    app.send(post_json(SEND, &[], &message("conv-m", "hi"))).await;
    // Metrics name bots: they are served by the admin listener only.
    assert_eq!(app.send(get("/metrics")).await.status, 404);
    let text = &ingress::metrics::install().render();
    let route = "route=\"/agent/converse/send-message-to-widget\"";
    for status in ["200", "401"] {
        assert!(
            text.lines().any(|l| l.starts_with("escalations_http_requests_total{")
                && l.contains(route)
                && l.contains(&format!("status=\"{status}\""))),
            "{status} counted by route template:\n{text}"
        );
    }
    assert!(text.contains("escalations_publish_confirm_seconds"), "publisher metrics exported:\n{text}");
}
