//! The widget API against a real RabbitMQ: `escalate` (bot API key) returns a
//! token that opens exactly its conversation for `messages` and `end`; every
//! 4xx publishes nothing; a widget token never opens another conversation.

use std::time::Duration;

use crate::common::*;
use axum::body::Body;
use chrono::{DateTime, Utc};
use domain::{BotId, ConversationId, Envelope, Input};
use http::Request;
use ingress::WidgetTokens;
use serde_json::json;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Escalates `conversation` of the main bot and returns the widget token.
async fn escalate(app: &TestApp, conversation: &str) -> String {
    let reply =
        app.send(post_raw(&widget_uri(conversation, "escalate"), &[("authorization", KEY)], "")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json["widgetToken"].as_str().expect("widgetToken").to_owned()
}

fn envelope(delivery: &lapin::message::Delivery) -> Envelope {
    Envelope::from_bytes(&delivery.data).expect("the body is an Envelope")
}

#[tokio::test]
async fn escalate_then_message_then_end_publish_in_order() {
    let app = TestApp::start().await;
    let reply = app
        .send(post_json(
            &widget_uri("conv-w", "escalate"),
            &[("authorization", &bearer(KEY)), ("botid", BOT)],
            &json!({"escalateTo": "billing", "metadata": {"plan": "gold"}, "transcript": [{"from": "bot", "text": "hi"}]}),
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let escalation_id = reply.json["escalationId"].as_str().expect("escalationId").to_owned();
    assert_eq!(uuid::Uuid::parse_str(&escalation_id).expect("uuid").get_version_num(), 7);
    let token = reply.json["widgetToken"].as_str().expect("widgetToken").to_owned();
    let expires_at: DateTime<Utc> =
        reply.json["expiresAt"].as_str().expect("expiresAt").parse().expect("RFC 3339");
    let ttl = expires_at - Utc::now();
    assert!(ttl > chrono::Duration::seconds(3590) && ttl <= chrono::Duration::seconds(3600), "{ttl}");

    let uri = widget_uri("conv-w", "messages");
    let reply = app
        .send(post_json(
            &uri,
            &[("authorization", &bearer(&token))],
            &json!({"text": "hello", "clientMessageId": "m-1"}),
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json, json!({"status": "accepted", "eventId": "vm:m-1"}));
    // A retry of the same message carries the same event id: a duplicate for the worker.
    let reply = app
        .send(post_json(
            &uri,
            &[("authorization", &bearer(&token))],
            &json!({"text": "hello", "clientMessageId": "m-1"}),
        ))
        .await;
    assert_eq!(reply.json["eventId"], "vm:m-1");
    let reply =
        app.send(post_json(&uri, &[("authorization", &bearer(&token))], &json!({"text": "no id"}))).await;
    let generated = reply.json["eventId"].as_str().expect("eventId").to_owned();
    assert_eq!(uuid::Uuid::parse_str(&generated).expect("uuid").get_version_num(), 7);
    let reply =
        app.send(post_raw(&widget_uri("conv-w", "end"), &[("authorization", &bearer(&token))], "")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["status"], "accepted");

    let shard = app.shard(BOT, "conv-w");
    let mut expected = vec![0; usize::from(SHARDS)];
    expected[usize::from(shard)] = 5;
    assert_eq!(app.depths().await, expected);

    let deliveries = app.take_many(shard, 5).await;
    let types: Vec<String> = deliveries.iter().map(|d| header(&d.properties, "event-type")).collect();
    assert_eq!(types, ["escalate", "visitorMessage", "visitorMessage", "visitorMessage", "visitorEnd"]);
    for d in &deliveries {
        assert_eq!(header(&d.properties, "bot-id"), BOT);
        assert_eq!(header(&d.properties, "conversation-id"), "conv-w");
        let e = envelope(d);
        assert_eq!(
            d.properties.message_id().as_ref().map(|m| m.to_string()),
            Some(e.command.event_id.to_string())
        );
    }
    match envelope(&deliveries[0]).command.input {
        Input::Escalate { escalation_id: id, escalate_to, metadata, transcript } => {
            assert_eq!(id.as_str(), escalation_id);
            assert_eq!(escalate_to.as_deref(), Some("billing"));
            assert_eq!(metadata, Some(json!({"plan": "gold"})));
            assert_eq!(transcript, Some(json!([{"from": "bot", "text": "hi"}])));
        }
        other => panic!("{other:?}"),
    }
    match envelope(&deliveries[1]).command.input {
        Input::VisitorMessage { message_id, text } => {
            assert_eq!((message_id.as_str(), text.as_str()), ("m-1", "hello"));
        }
        other => panic!("{other:?}"),
    }
    let third = envelope(&deliveries[3]);
    match third.command.input {
        Input::VisitorMessage { message_id, .. } => {
            assert_eq!(message_id.as_str(), generated, "message id = event id")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn escalate_accepts_an_empty_body_or_an_empty_object() {
    let app = TestApp::start().await;
    let uri = widget_uri("conv-e", "escalate");
    let reply = app.send(post_raw(&uri, &[("authorization", KEY)], "")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = app.send(post_json(&uri, &[("authorization", KEY)], &json!({}))).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(app.depths().await.iter().sum::<u32>(), 2);
}

#[tokio::test]
async fn escalate_4xx_publish_nothing() {
    let app = TestApp::start().await;
    let uri = widget_uri("conv-x", "escalate");
    let body = json!({});
    for headers in [
        vec![],
        vec![("authorization", "nope-nope-nope-nope")],
        vec![("authorization", KEY), ("botid", OTHER_BOT)],
    ] {
        app.send(post_json(&uri, &headers, &body)).await.assert_error(401, "unauthorized");
    }
    // A widget token is not a bot API key.
    let token = WidgetTokens::new(TOKEN_SECRET.as_bytes(), Duration::from_secs(60));
    let issued = token.issue(
        &BotId::parse(BOT).expect("id"),
        &ConversationId::parse("conv-x").expect("id"),
        Utc::now(),
    );
    app.send(post_json(&uri, &[("authorization", &bearer(&issued.token))], &body))
        .await
        .assert_error(401, "unauthorized");

    let reply = app
        .send(post_json(
            &uri,
            &[("authorization", KEY)],
            &json!({"escalateTo": 1, "metadata": "x", "transcript": {}}),
        ))
        .await;
    reply.assert_error(400, "invalid_body");
    let expected: Vec<(String, String)> =
        [("escalateTo", "invalid_type"), ("metadata", "invalid_type"), ("transcript", "invalid_type")]
            .map(|(f, c)| (f.to_owned(), c.to_owned()))
            .into();
    assert_eq!(reply.details(), expected);

    // A bad path id is reported together with the body's problems.
    let long = "c".repeat(129);
    let reply = app
        .send(post_json(&widget_uri(&long, "escalate"), &[("authorization", KEY)], &json!({"metadata": 1})))
        .await;
    assert_eq!(
        reply.details(),
        [
            ("conversationId".to_owned(), "too_long".to_owned()),
            ("metadata".to_owned(), "invalid_type".to_owned())
        ]
    );
    let reply =
        app.send(post_raw(&uri, &[("authorization", KEY), ("content-type", "application/json")], "{")).await;
    assert_eq!(reply.details(), [("body".to_owned(), "invalid_json".to_owned())]);
    let reply =
        app.send(post_raw(&uri, &[("authorization", KEY), ("content-type", "text/plain")], "{}")).await;
    reply.assert_error(415, "unsupported_media_type");
    let reply = app.send(post_raw(&uri, &[("authorization", KEY)], "{}")).await;
    reply.assert_error(415, "unsupported_media_type");
    let big = json!({"metadata": {"x": "y".repeat(BODY_LIMIT)}});
    app.send(post_json(&uri, &[("authorization", KEY)], &big)).await.assert_error(413, "payload_too_large");
    app.send(Request::get(&uri).body(Body::empty()).expect("request"))
        .await
        .assert_error(405, "method_not_allowed");

    app.assert_nothing_published("escalate 4xx").await;
}

#[tokio::test]
async fn widget_token_opens_only_its_own_conversation() {
    let app = TestApp::start().await;
    let token = escalate(&app, "conv-a").await;
    let _other_token = escalate(&app, "conv-b").await;
    let escalations = app.depths().await;
    assert_eq!(escalations.iter().sum::<u32>(), 2);

    let tokens = WidgetTokens::new(TOKEN_SECRET.as_bytes(), Duration::from_secs(60));
    let bot = BotId::parse(BOT).expect("id");
    let conv_a = ConversationId::parse("conv-a").expect("id");
    let expired = tokens.issue(&bot, &conv_a, Utc::now() - chrono::Duration::seconds(61)).token;
    let foreign_key = WidgetTokens::new(b"another-secret-of-at-least-32-bytes!", Duration::from_secs(60));
    let forged = foreign_key.issue(&bot, &conv_a, Utc::now()).token;
    let (payload, signature) = token.split_once('.').expect("two parts");
    let mut tampered_signature = signature.to_owned();
    let last = if tampered_signature.ends_with('A') { 'B' } else { 'A' };
    tampered_signature.pop();
    tampered_signature.push(last);
    let tampered = format!("{payload}.{tampered_signature}");
    let of_unknown_bot = tokens.issue(&BotId::parse("ghost").expect("id"), &conv_a, Utc::now()).token;

    let message = json!({"text": "hi"});
    // (case, conversation, headers)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, String)>);
    let bad: [Case; 8] = [
        ("no token", "conv-a", vec![]),
        ("expired", "conv-a", vec![("authorization", bearer(&expired))]),
        ("signed with another key", "conv-a", vec![("authorization", bearer(&forged))]),
        ("tampered signature", "conv-a", vec![("authorization", bearer(&tampered))]),
        ("garbage", "conv-a", vec![("authorization", bearer("not.a-token"))]),
        ("bot API key instead of a token", "conv-a", vec![("authorization", KEY.to_owned())]),
        ("bot that does not exist", "conv-a", vec![("authorization", bearer(&of_unknown_bot))]),
        ("conv-a's token on conv-b", "conv-b", vec![("authorization", bearer(&token))]),
    ];
    for (case, conversation, headers) in bad {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for action in ["messages", "end"] {
            let reply = app.send(post_json(&widget_uri(conversation, action), &headers, &message)).await;
            assert_eq!(reply.status, 401, "{case} on {action}: {reply:?}");
            reply.assert_error(401, "unauthorized");
        }
    }
    // A conversation that was never escalated answers the same as one that was.
    let reply = app
        .send(post_json(
            &widget_uri("conv-never", "messages"),
            &[("authorization", &bearer(&token))],
            &message,
        ))
        .await;
    reply.assert_error(401, "unauthorized");

    // Valid token, invalid requests.
    let uri = widget_uri("conv-a", "messages");
    let auth = bearer(&token);
    let reply = app
        .send(post_json(&uri, &[("authorization", &auth)], &json!({"text": "", "clientMessageId": 5})))
        .await;
    assert_eq!(
        reply.details(),
        [
            ("text".to_owned(), "too_short".to_owned()),
            ("clientMessageId".to_owned(), "invalid_type".to_owned())
        ]
    );
    let long_id = json!({"text": "t", "clientMessageId": "c".repeat(126)});
    let reply = app.send(post_json(&uri, &[("authorization", &auth)], &long_id)).await;
    assert_eq!(reply.details(), [("clientMessageId".to_owned(), "too_long".to_owned())]);
    let multibyte_id = json!({"text": "t", "clientMessageId": "€".repeat(125)});
    let reply = app.send(post_json(&uri, &[("authorization", &auth)], &multibyte_id)).await;
    assert_eq!(reply.details(), [("clientMessageId".to_owned(), "too_long".to_owned())], "over 255 bytes");
    app.send(post_raw(&uri, &[("authorization", &auth)], "{\"text\":\"t\"}"))
        .await
        .assert_error(415, "unsupported_media_type");
    app.send(post_raw(&uri, &[("authorization", &auth), ("content-type", "application/json")], ""))
        .await
        .assert_error(400, "invalid_body");
    let big = json!({"text": "x".repeat(BODY_LIMIT)});
    app.send(post_json(&uri, &[("authorization", &auth)], &big)).await.assert_error(413, "payload_too_large");

    assert_eq!(app.depths().await, escalations, "nothing published after the two escalations");
}
