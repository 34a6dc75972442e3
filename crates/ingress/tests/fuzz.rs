//! Property-based fuzzing of every request parser and validator of the
//! ingress (issue 11): bodies as arbitrary bytes and as arbitrary JSON
//! values (near-valid events, any nesting, NUL and any other character),
//! and the headers (`Authorization`, `botid`, `Idempotency-Key`, `Prefer`,
//! `Last-Event-ID`, `Content-Type`) and widget tokens as arbitrary bytes and
//! mutations of genuine ones.
//!
//! For every input: no panic; a refusal is a 4xx (never a 5xx); whatever is
//! accepted is what the protocol allows (lengths, no control characters) and
//! can be stored (no U+0000 anywhere, docs/protocol.md §2); a credential is
//! accepted only when it is the genuine one.
//!
//! Cases per property: `FUZZ_CASES` (default 2,000, so 20,000 over the ten
//! properties, well under a minute in CI). docs/reliability.md records a run
//! of over a million and the command.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use domain::{
    BotId, ConversationId, DisplayValue, EscalationId, EventId, MessageId, parse_escalate_request,
    parse_visitor_message,
};
use ingress::auth::{authenticate_bot, authenticate_widget, authenticate_widget_stream};
use ingress::body::{Empty, is_json, read_json};
use ingress::routes::agent;
use ingress::routes::stream::last_event_id;
use ingress::routes::verdict::requested_wait;
use ingress::{ApiError, WidgetTokens};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};
use settings::Settings;

const KEY: &str = "fuzz-key-0123456789";
const OTHER_KEY: &str = "other-key-0123456789";
const TOKEN_SECRET: &str = "fuzz-widget-token-secret-of-32-bytes-or-more";

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() })
}

fn settings() -> Settings {
    let toml = format!(
        r#"
        [widget]
        token_secret = "{TOKEN_SECRET}"
        [[bots]]
        id = "fuzz"
        api_keys = ["{KEY}"]
        [[bots]]
        id = "other"
        api_keys = ["{OTHER_KEY}"]
        "#
    );
    Settings::from_sources(Some(&toml), Vec::new()).expect("settings")
}

/// A refusal is the caller's fault: a 4xx, never a 5xx.
fn assert_client_error(error: &ApiError) {
    let status = error.status();
    assert!(status.is_client_error(), "{status} for {error:?}");
}

/// Short strings: letters, NUL, other control characters, anything.
fn arb_string() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        6 => prop::char::range('a', 'e'),
        1 => Just('\u{0}'),
        1 => prop::char::range('\u{1}', '\u{1f}'),
        1 => Just('\u{7f}'),
        2 => any::<char>(),
    ];
    prop::collection::vec(c, 0..8).prop_map(|chars| chars.into_iter().collect())
}

/// Strings around the length limits (1, 128, 4096 characters…).
fn arb_long_string() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![0usize, 1, 32, 33, 124, 125, 126, 128, 129, 256, 257, 4096, 4097]),
        any::<char>(),
    )
        .prop_map(|(n, c)| std::iter::repeat_n(if c == '\u{0}' { 'x' } else { c }, n).collect())
}

/// Any JSON value, a few levels deep, keys as arbitrary as the values.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        arb_string().prop_map(Value::String),
        arb_long_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(arb_string(), inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// An object with some of `fields` set (mostly to plausible values, else to
/// anything), sometimes plus an unknown field; or, now and then, any value.
fn arb_body(fields: &'static [(&'static str, &'static [&'static str])]) -> impl Strategy<Value = Value> {
    let value = |choices: &'static [&'static str]| {
        prop_oneof![
            3 => prop::sample::select(choices).prop_map(|s| Value::String(s.to_owned())),
            2 => arb_string().prop_map(Value::String),
            1 => arb_long_string().prop_map(Value::String),
            2 => arb_json(),
        ]
    };
    let object = fields
        .iter()
        .map(|(name, choices)| prop::option::weighted(0.7, value(choices)).prop_map(move |v| (*name, v)))
        .collect::<Vec<_>>()
        .prop_map(|pairs| {
            let mut map = Map::new();
            for (name, value) in pairs {
                if let Some(value) = value {
                    map.insert(name.to_owned(), value);
                }
            }
            Value::Object(map)
        });
    prop_oneof![6 => object, 1 => arb_json()]
}

const AGENT_FIELDS: &[(&str, &[&str])] = &[
    (
        "eventType",
        &[
            "escalationQueueUpdate",
            "escalationSuccess",
            "message",
            "escalationFailed",
            "agentDisconnect",
            "Message",
        ],
    ),
    ("platformConversationId", &["c-1", "123456789", ""]),
    ("eventId", &["ev-1", "timer:x", "vm:y", ""]),
    ("escalationId", &["01938a3c-7d1e-7c4a-9f0e-2b5d8c1a4e77", "nope"]),
    ("queuePosition", &["3", "5-10", "", "12.5"]),
    ("waitingTime", &["12", "3rd"]),
    ("agent", &["Ann", ""]),
    ("agentAvatar", &["https://example.com/a.png", "http://example.com/a.png", "https://", "javascript:x"]),
    ("text", &["hello", ""]),
];
const ESCALATE_FIELDS: &[(&str, &[&str])] =
    &[("escalateTo", &["sales", ""]), ("metadata", &["{}"]), ("transcript", &["[]"])];
const VISITOR_FIELDS: &[(&str, &[&str])] = &[("text", &["hi", ""]), ("clientMessageId", &["m-1", ""])];

/// A header value as bytes a client could send (what `HeaderValue` takes).
fn arb_header_value() -> impl Strategy<Value = Option<HeaderValue>> {
    let bytes = prop_oneof![
        3 => arb_string().prop_map(String::into_bytes),
        2 => prop::collection::vec(any::<u8>(), 0..24),
        2 => prop::sample::select(vec![
            "Bearer", "bearer ", "Bearer  x", "BEARER fuzz-key-0123456789", "fuzz-key-0123456789",
            " fuzz-key-0123456789 ", "Basic fuzz-key-0123456789", "wait=5", "wait=\"3\"", "respond-async, wait=99",
            "wait=-1", "wait=18446744073709551616", "wait", "=", "0", "00042", "+1", "-0", "1e3", " 7 ",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    bytes.prop_map(|bytes| HeaderValue::from_bytes(&bytes).ok())
}

/// Headers: each of `names` absent, once, or twice.
fn arb_headers(names: &'static [&'static str]) -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec((prop::sample::select(names), arb_header_value()), 0..5).prop_map(|pairs| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            if let Some(value) = value {
                headers.append(HeaderName::from_static(name), value);
            }
        }
        headers
    })
}

/// An accepted value serializes to JSON PostgreSQL's `jsonb` takes: no
/// U+0000 (serialized as `\u0000`) anywhere, keys included.
fn assert_storable(value: &impl serde::Serialize) {
    let text = serde_json::to_string(value).expect("serializes");
    assert!(!text.contains("\\u0000"), "accepted a NUL: {text}");
}

fn assert_text(text: &str, min: usize, max: usize) {
    let n = text.chars().count();
    assert!((min..=max).contains(&n), "{n} characters accepted");
    assert!(!text.contains('\u{0}'), "NUL accepted");
}

#[test]
fn agent_events_from_any_json_and_idempotency_key() {
    let strategy = (arb_body(AGENT_FIELDS), arb_headers(&["idempotency-key"]));
    runner()
        .run(&strategy, |(body, headers)| {
            match agent::validate(&body, &headers) {
                Ok((event, id)) => {
                    assert!(!id.as_str().is_empty() && id.as_str().len() <= 255, "event id {id:?}");
                    assert!(!id.as_str().chars().any(char::is_control));
                    assert_storable(&event);
                    // The canonical form reads back as the same event.
                    let again: domain::AgentEvent =
                        serde_json::from_value(serde_json::to_value(&event).expect("to json"))
                            .expect("from json");
                    assert_eq!(again.platform_conversation_id, event.platform_conversation_id);
                    assert_eq!(again.action, event.action);
                }
                Err(error) => {
                    assert_client_error(&error);
                    let ApiError::InvalidBody(errors) = &error else { panic!("not a 400: {error:?}") };
                    assert!(!errors.is_empty(), "a 400 names at least one problem");
                    assert!(errors.details().iter().all(|d| !d.field.is_empty()));
                }
            }
            Ok(())
        })
        .expect("agent events");
}

#[test]
fn escalate_bodies_from_any_json() {
    runner()
        .run(&arb_body(ESCALATE_FIELDS), |body| {
            if let Ok(request) = parse_escalate_request(&body) {
                if let Some(to) = &request.escalate_to {
                    assert_text(to, 1, 256);
                    assert!(!to.chars().any(char::is_control));
                }
                assert!(request.metadata.as_ref().is_none_or(Value::is_object));
                assert!(request.transcript.as_ref().is_none_or(Value::is_array));
                assert_storable(&request.metadata);
                assert_storable(&request.transcript);
            }
            Ok(())
        })
        .expect("escalate bodies");
}

#[test]
fn visitor_messages_from_any_json() {
    runner()
        .run(&arb_body(VISITOR_FIELDS), |body| {
            if let Ok(message) = parse_visitor_message(&body) {
                assert_text(&message.text, 1, 4096);
                if let Some(id) = &message.client_message_id {
                    assert_text(id, 1, 125);
                    assert!(!id.chars().any(char::is_control));
                }
            }
            Ok(())
        })
        .expect("visitor messages");
}

/// Bytes as a body: random, JSON with a byte flipped, invalid UTF-8 in a
/// string, deep nesting; any `Content-Type` and `Content-Length`.
fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    let json_text = || arb_body(AGENT_FIELDS).prop_map(|v| serde_json::to_vec(&v).expect("json"));
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..64),
        3 => (json_text(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut bytes, at, byte)| {
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            bytes
        }),
        2 => json_text(),
        1 => prop::sample::select(vec![&b"{\"text\":\"\xff\xfe\"}"[..], b"{\"a\":\"\\ud800\"}", b"\xef\xbb\xbf{}", b"{\"text\":\"a\0b\"}", b"{} {}", b"", b" ", b"null", b"[]", b"1e999"])
            .prop_map(<[u8]>::to_vec),
        1 => (1usize..3000, prop::bool::ANY).prop_map(|(depth, object)| {
            let (open, close) = if object { ("{\"a\":", "}") } else { ("[", "]") };
            format!("{}1{}", open.repeat(depth), close.repeat(depth)).into_bytes()
        }),
    ]
}

#[test]
fn bodies_from_any_bytes_through_every_validator() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let content_types = prop::sample::select(vec![
        Some("application/json"),
        Some("application/cloudevents+json; charset=utf-8"),
        Some("text/plain"),
        Some("APPLICATION/JSON"),
        Some("application/jsonx"),
        Some(""),
        None,
    ]);
    let limit = 2048;
    let strategy = (arb_bytes(), content_types, prop::option::of(0u64..5000), any::<bool>());
    runner()
        .run(&strategy, |(bytes, content_type, declared, empty_as_null)| {
            let mut headers = HeaderMap::new();
            if let Some(content_type) = content_type {
                headers.insert("content-type", HeaderValue::from_static(content_type));
                let _ = is_json(content_type);
            }
            if let Some(declared) = declared {
                headers.insert("content-length", HeaderValue::from(declared));
            }
            let empty = if empty_as_null { Empty::AsNull } else { Empty::Invalid };
            let read = runtime.block_on(read_json(&headers, Body::from(bytes), limit, empty));
            match read {
                Ok(value) => {
                    for error in [
                        agent::validate(&value, &HeaderMap::new()).err(),
                        parse_escalate_request(&value).err().map(ApiError::InvalidBody),
                        parse_visitor_message(&value).err().map(ApiError::InvalidBody),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        assert_client_error(&error);
                    }
                }
                Err(error) => assert_client_error(&error),
            }
            Ok(())
        })
        .expect("bodies");
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("time")
}

/// A genuine token, then bytes of it changed, cut, or repeated; or anything.
fn arb_token(genuine: String) -> impl Strategy<Value = String> {
    let mutate = (any::<prop::sample::Index>(), any::<char>(), 0u8..4).prop_map(move |(at, c, how)| {
        let mut chars: Vec<char> = genuine.chars().collect();
        let i = at.index(chars.len());
        match how {
            0 => chars[i] = c,
            1 => chars.truncate(i),
            2 => chars.insert(i, c),
            _ => chars.extend(genuine.chars()),
        }
        chars.into_iter().collect::<String>()
    });
    prop_oneof![4 => mutate, 1 => arb_string(), 1 => "[A-Za-z0-9_.-]{0,80}"]
}

#[test]
fn widget_tokens_verify_only_when_genuine() {
    let tokens = WidgetTokens::new(TOKEN_SECRET.as_bytes(), Duration::from_secs(3600));
    let (bot, conversation) = (BotId::parse("fuzz").expect("id"), ConversationId::parse("c-1").expect("id"));
    let genuine = tokens.issue(&bot, &conversation, at(1_000_000)).token;
    let settings = settings();
    let strategy = (
        arb_token(genuine.clone()),
        arb_headers(&["authorization"]),
        prop::option::of(arb_token(genuine.clone())),
    );
    runner()
        .run(&strategy, |(token, headers, query)| {
            if let Ok(claims) = tokens.verify(&token, at(1_000_100)) {
                assert_eq!(
                    (claims.bot.as_str(), claims.conv.as_str()),
                    ("fuzz", "c-1"),
                    "forged claims accepted"
                );
            }
            let mut with_token = headers.clone();
            if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
                with_token.append("authorization", value);
            }
            for result in [
                authenticate_widget(&settings, &tokens, &with_token, "c-1", at(1_000_100)),
                authenticate_widget_stream(
                    &settings,
                    &tokens,
                    &headers,
                    query.as_deref(),
                    "c-1",
                    at(1_000_100),
                ),
                authenticate_widget(&settings, &tokens, &with_token, "c-2", at(1_000_100)),
            ] {
                match result {
                    Ok((bot, conversation)) => {
                        assert_eq!((bot.as_str(), conversation.as_str()), ("fuzz", "c-1"))
                    }
                    Err(error) => assert!(matches!(error, ApiError::Unauthorized), "{error:?}"),
                }
            }
            Ok(())
        })
        .expect("widget tokens");
}

#[test]
fn api_keys_authenticate_only_their_bot() {
    let settings = settings();
    runner()
        .run(&arb_headers(&["authorization", "botid"]), |headers| {
            match authenticate_bot(&settings, &headers) {
                Ok(bot) => {
                    let authorization =
                        headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
                    assert!(bot.api_keys.iter().any(|k| authorization.contains(k.expose())), "{headers:?}");
                }
                Err(error) => assert!(matches!(error, ApiError::Unauthorized), "{error:?}"),
            }
            Ok(())
        })
        .expect("api keys");
}

#[test]
fn prefer_wait_is_bounded() {
    runner()
        .run(&(arb_headers(&["prefer"]), 0u64..30), |(headers, max)| {
            if let Some(wait) = requested_wait(&headers, max) {
                assert!(wait > Duration::ZERO && wait <= Duration::from_secs(max.min(10)), "{wait:?}");
                let raw: Vec<&[u8]> = headers.get_all("prefer").iter().map(HeaderValue::as_bytes).collect();
                assert!(raw.iter().any(|v| v.to_ascii_lowercase().windows(4).any(|w| w == b"wait")));
            }
            Ok(())
        })
        .expect("prefer");
}

#[test]
fn last_event_id_is_a_number_or_a_400() {
    let strategy = (arb_headers(&["last-event-id"]), prop::option::of(arb_string()));
    runner()
        .run(&strategy, |(headers, query)| {
            match last_event_id(&headers, query.as_deref()) {
                Ok(n) => {
                    let raw = match headers.get("last-event-id") {
                        Some(value) => value.to_str().expect("parsed").to_owned(),
                        None => query.clone().unwrap_or_default(),
                    };
                    let raw = raw.trim();
                    assert!(
                        if raw.is_empty() { n == 0 } else { raw.parse::<u64>() == Ok(n) },
                        "{raw:?} → {n}"
                    );
                }
                Err(error) => assert_eq!(error.status(), 400, "{error:?}"),
            }
            Ok(())
        })
        .expect("last event id");
}

#[test]
fn ids_and_display_values_hold_their_rules() {
    let strategy = (prop_oneof![arb_string(), arb_long_string()], arb_json());
    runner()
        .run(&strategy, |(text, value)| {
            fn ok(text: &str, parsed: bool, max: usize) {
                if parsed {
                    assert_text(text, 1, max);
                    assert!(!text.chars().any(char::is_control));
                }
            }
            ok(&text, BotId::parse(text.clone()).is_ok(), BotId::MAX_CHARS);
            ok(&text, ConversationId::parse(text.clone()).is_ok(), ConversationId::MAX_CHARS);
            ok(&text, EventId::parse(text.clone()).is_ok(), EventId::MAX_CHARS);
            ok(&text, MessageId::parse(text.clone()).is_ok(), MessageId::MAX_CHARS);
            ok(&text, EscalationId::parse(text.clone()).is_ok(), EscalationId::MAX_CHARS);
            if let Ok(display) = DisplayValue::from_json(&value) {
                assert_storable(&display);
                assert!(
                    value.is_u64() || value.as_str().is_some_and(|s| (1..=32).contains(&s.chars().count()))
                );
            }
            let _ = json!({"queuePosition": value});
            Ok(())
        })
        .expect("ids");
}

/// A response for each refusal renders without panicking (the JSON body of
/// a 400 with many details, a 413, …): rendering is part of parsing's output.
#[test]
fn refusals_render() {
    runner()
        .run(&arb_body(AGENT_FIELDS), |body| {
            if let Err(error) = agent::validate(&body, &HeaderMap::new()) {
                let response = error.into_response();
                assert!(response.status().is_client_error());
            }
            Ok(())
        })
        .expect("refusals");
}
