//! A corpus of bad requests against the real router (issue 11): malformed
//! JSON, wrong types, huge and deeply nested bodies, invalid UTF-8, NUL,
//! doubled and missing headers, wrong credentials and tokens, on every
//! route that takes input. In process (`tower::ServiceExt::oneshot`) and,
//! for what only a socket can carry (broken framing, doubled
//! `Content-Length`), over a real connection.
//!
//! Every one gets a 4xx other than 429 (no panic, no 5xx, no 2xx; limits are
//! lifted so each case meets the check it is about), and nothing reaches the
//! broker: the shard queues of the test's private prefix stay empty
//! (docs/protocol.md §6: bad input publishes nothing).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{BODY_LIMIT, BOT, KEY, OTHER_KEY, SEND, TOKEN_SECRET, TestApp, widget_uri};
use axum::body::Body;
use chrono::Utc;
use domain::{BotId, ConversationId};
use http::Request;
use ingress::WidgetTokens;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONV: &str = "c-bad";

type Headers = Vec<(&'static str, Vec<u8>)>;

/// One bad request.
struct Case {
    name: String,
    method: &'static str,
    uri: String,
    headers: Headers,
    body: Vec<u8>,
}

impl Case {
    fn request(&self) -> Request<Body> {
        let mut request = Request::builder().method(self.method).uri(&self.uri);
        for (name, value) in &self.headers {
            request =
                request.header(*name, http::HeaderValue::from_bytes(value).expect("a valid header value"));
        }
        request.body(Body::from(self.body.clone())).expect("request")
    }
}

fn token(bot: &str, conversation: &str, key: &str, issued_secs_ago: i64) -> String {
    let tokens = WidgetTokens::new(key.as_bytes(), Duration::from_secs(3600));
    let now = Utc::now() - chrono::Duration::seconds(issued_secs_ago);
    let (bot, conversation) =
        (BotId::parse(bot).expect("id"), ConversationId::parse(conversation).expect("id"));
    tokens.issue(&bot, &conversation, now).token
}

/// Bodies no route may accept, whatever its schema: not JSON, not UTF-8,
/// too big, too deep.
fn broken_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let deep = |open: &str, close: &str| {
        format!("{{\"text\":\"a\",\"x\":{}1{}}}", open.repeat(600), close.repeat(600))
    };
    vec![
        ("truncated", b"{\"text\":".to_vec()),
        ("missing value", b"{\"text\":}".to_vec()),
        ("trailing comma", b"{\"text\":\"a\",}".to_vec()),
        ("single quotes", b"{'text':'a'}".to_vec()),
        ("two documents", b"{\"text\":\"a\"} {}".to_vec()),
        ("trailing garbage", b"{\"text\":\"a\"}}".to_vec()),
        ("bare word", b"nul".to_vec()),
        ("byte order mark", b"\xef\xbb\xbf{\"text\":\"a\"}".to_vec()),
        ("invalid UTF-8 in a string", b"{\"text\":\"\xff\xfe\"}".to_vec()),
        ("overlong UTF-8", b"{\"text\":\"\xc0\xaf\"}".to_vec()),
        ("lone surrogate escape", b"{\"text\":\"\\ud800\"}".to_vec()),
        ("raw NUL byte in a string", b"{\"text\":\"a\x00b\"}".to_vec()),
        ("raw control character", b"{\"text\":\"a\x01b\"}".to_vec()),
        ("number too large", b"{\"text\":\"a\",\"n\":1e999}".to_vec()),
        ("deeply nested arrays", deep("[", "]").into_bytes()),
        ("deeply nested objects", deep("{\"a\":", "}").into_bytes()),
        ("over the size limit", format!("{{\"text\":\"{}\"}}", "a".repeat(BODY_LIMIT + 1)).into_bytes()),
    ]
}

fn json_case(name: String, uri: &str, auth: &[u8], body: &Value) -> Case {
    Case {
        name,
        method: "POST",
        uri: uri.to_owned(),
        headers: vec![("content-type", b"application/json".to_vec()), ("authorization", auth.to_vec())],
        body: body.to_string().into_bytes(),
    }
}

fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    let good_token = format!("Bearer {}", token(BOT, CONV, TOKEN_SECRET, 0));
    let messages = widget_uri(CONV, "messages");
    let escalate = widget_uri(CONV, "escalate");
    let routes: [(&str, &str, &[u8]); 3] = [
        ("send", SEND, KEY.as_bytes()),
        ("escalate", &escalate, KEY.as_bytes()),
        ("messages", &messages, good_token.as_bytes()),
    ];

    // Broken bodies, with every acceptable media type; and good-looking
    // bodies with a wrong or missing media type.
    for (route, uri, auth) in routes {
        for (what, body) in broken_bodies() {
            for media in ["application/json", "application/problem+json; charset=utf-8"] {
                cases.push(Case {
                    name: format!("{route}: {what} ({media})"),
                    method: "POST",
                    uri: uri.to_owned(),
                    headers: vec![
                        ("content-type", media.as_bytes().to_vec()),
                        ("authorization", auth.to_vec()),
                    ],
                    body: body.clone(),
                });
            }
        }
        let body = br#"{"eventType":"message","platformConversationId":"c-bad","text":"a"}"#.to_vec();
        for (what, media) in [
            ("missing", None),
            ("text/plain", Some("text/plain")),
            ("form", Some("application/x-www-form-urlencoded")),
            ("jsonx", Some("application/jsonx")),
        ] {
            let mut headers = vec![("authorization", auth.to_vec())];
            headers.extend(media.map(|m| ("content-type", m.as_bytes().to_vec())));
            cases.push(Case {
                name: format!("{route}: content-type {what}"),
                method: "POST",
                uri: uri.to_owned(),
                headers,
                body: body.clone(),
            });
        }
        // Declared bigger than the limit, whatever follows.
        cases.push(Case {
            name: format!("{route}: declared content-length over the limit"),
            method: "POST",
            uri: uri.to_owned(),
            headers: vec![
                ("content-type", b"application/json".to_vec()),
                ("authorization", auth.to_vec()),
                ("content-length", (BODY_LIMIT + 1).to_string().into_bytes()),
            ],
            body: vec![b' '; BODY_LIMIT + 1],
        });
    }

    // Wrong types and values, field by field, in an otherwise valid event.
    let wrong: Vec<Value> =
        vec![json!(true), json!(1), json!(-1), json!(1.5), json!([]), json!({}), json!("")];
    let base = |event_type: &str| -> Value {
        let mut event = json!({"eventType": event_type, "platformConversationId": CONV});
        match event_type {
            "message" => event["text"] = json!("hello"),
            "escalationSuccess" => event["agent"] = json!("Ann"),
            _ => {}
        }
        event
    };
    let fields: [(&str, &str); 6] = [
        ("message", "eventType"),
        ("message", "platformConversationId"),
        ("message", "text"),
        ("message", "eventId"),
        ("escalationSuccess", "agent"),
        ("escalationQueueUpdate", "queuePosition"),
    ];
    for (event_type, field) in fields {
        for value in wrong.iter().chain(&[json!("a".repeat(129)), json!("\u{0}"), json!("a\u{0}b")]) {
            // Values the schema allows are not bad input.
            let allowed = matches!((field, value), ("queuePosition", Value::Number(n)) if n.is_u64())
                || (field == "agent" && value == &json!(""))
                || (field == "text" && value == &json!("a".repeat(129)));
            if allowed {
                continue;
            }
            let mut event = base(event_type);
            event[field] = value.clone();
            cases.push(json_case(format!("send: {field} = {value:.20}"), SEND, KEY.as_bytes(), &event));
        }
    }
    for value in ["sales", "Sales"] {
        let mut event = base("message");
        event["eventType"] = json!(value);
        cases.push(json_case(format!("send: eventType {value}"), SEND, KEY.as_bytes(), &event));
    }
    cases.push(json_case("send: not an object".into(), SEND, KEY.as_bytes(), &json!([base("message")])));
    cases.push(json_case("send: null".into(), SEND, KEY.as_bytes(), &Value::Null));
    cases.push(json_case("send: nothing".into(), SEND, KEY.as_bytes(), &json!({})));
    for body in [
        json!({"escalateTo": ""}),
        json!({"escalateTo": 7}),
        json!({"escalateTo": "a\u{0}"}),
        json!({"metadata": []}),
        json!({"metadata": "x"}),
        json!({"metadata": {"k\u{0}": 1}}),
        json!({"metadata": {"k": ["\u{0}"]}}),
        json!({"transcript": {}}),
        json!({"transcript": [{"text": "a\u{0}"}]}),
        json!("escalate"),
        json!([]),
    ] {
        cases.push(json_case(format!("escalate: {body}"), &escalate, KEY.as_bytes(), &body));
    }
    for body in [
        json!({}),
        json!({"text": ""}),
        json!({"text": 1}),
        json!({"text": "a\u{0}"}),
        json!({"text": "a", "clientMessageId": ""}),
        json!({"text": "a", "clientMessageId": "\u{1}"}),
        json!({"text": "a", "clientMessageId": "a".repeat(126)}),
        json!({"text": "a", "clientMessageId": 5}),
        json!({"text": null}),
    ] {
        cases.push(json_case(format!("messages: {body}"), &messages, good_token.as_bytes(), &body));
    }

    // Idempotency-Key: empty, too long, control characters, not ASCII, in
    // conflict with eventId, given twice.
    let message = base("message");
    for (what, key) in [
        ("empty", b"".to_vec()),
        ("too long", vec![b'k'; 129]),
        ("tab inside", b"a\tb".to_vec()),
        ("not ASCII", b"caf\xc3\xa9".to_vec()),
        ("a Latin-1 byte", b"caf\xe9".to_vec()),
    ] {
        let mut case = json_case(format!("send: Idempotency-Key {what}"), SEND, KEY.as_bytes(), &message);
        case.headers.push(("idempotency-key", key));
        cases.push(case);
    }
    let mut with_id = message.clone();
    with_id["eventId"] = json!("ev-1");
    let mut case =
        json_case("send: Idempotency-Key differs from eventId".into(), SEND, KEY.as_bytes(), &with_id);
    case.headers.push(("idempotency-key", b"ev-2".to_vec()));
    cases.push(case);

    // Credentials: missing, wrong, another bot's with this botid, doubled.
    let wrong_auth: Vec<(&str, Headers)> = vec![
        ("no Authorization", vec![]),
        ("empty Authorization", vec![("authorization", b"".to_vec())]),
        ("Bearer alone", vec![("authorization", b"Bearer".to_vec())]),
        ("wrong key", vec![("authorization", b"Bearer nope-0123456789".to_vec())]),
        ("key with a suffix", vec![("authorization", format!("{KEY}x").into_bytes())]),
        ("Basic scheme", vec![("authorization", format!("Basic {KEY}").into_bytes())]),
        ("not ASCII", vec![("authorization", b"Bearer \xe9t\xe9".to_vec())]),
        (
            "botid of another bot",
            vec![("authorization", KEY.as_bytes().to_vec()), ("botid", b"other".to_vec())],
        ),
        (
            "other bot's key, our botid",
            vec![("authorization", OTHER_KEY.as_bytes().to_vec()), ("botid", BOT.as_bytes().to_vec())],
        ),
        ("a widget token as API key", vec![("authorization", good_token.as_bytes().to_vec())]),
        (
            "wrong key, then the right one",
            vec![("authorization", b"nope".to_vec()), ("authorization", KEY.as_bytes().to_vec())],
        ),
        (
            "right key, then a wrong one",
            vec![("authorization", KEY.as_bytes().to_vec()), ("authorization", b"nope".to_vec())],
        ),
        (
            "botid twice",
            vec![
                ("authorization", KEY.as_bytes().to_vec()),
                ("botid", BOT.as_bytes().to_vec()),
                ("botid", b"other".to_vec()),
            ],
        ),
    ];
    for (what, headers) in &wrong_auth {
        for (route, uri) in [("send", SEND), ("escalate", escalate.as_str())] {
            let mut all = vec![("content-type", b"application/json".to_vec())];
            all.extend(headers.iter().cloned());
            let body = if route == "send" { message.to_string() } else { "{}".into() };
            cases.push(Case {
                name: format!("{route}: {what}"),
                method: "POST",
                uri: uri.to_owned(),
                headers: all,
                body: body.into_bytes(),
            });
        }
        let query_uri = format!("/agent/converse/conversations/{CONV}");
        cases.push(Case {
            name: format!("query: {what}"),
            method: "GET",
            uri: query_uri,
            headers: headers.clone(),
            body: Vec::new(),
        });
    }

    // Widget tokens: missing, forged, expired, for another conversation or
    // an unknown bot, the API key, doubled; on messages, end and the stream.
    let wrong_tokens: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("no token", vec![]),
        ("Bearer alone", vec![b"Bearer".to_vec()]),
        ("garbage", vec![b"Bearer x.y".to_vec()]),
        (
            "another conversation's",
            vec![format!("Bearer {}", token(BOT, "c-other", TOKEN_SECRET, 0)).into_bytes()],
        ),
        ("an unknown bot's", vec![format!("Bearer {}", token("ghost", CONV, TOKEN_SECRET, 0)).into_bytes()]),
        (
            "signed with another key",
            vec![
                format!("Bearer {}", token(BOT, CONV, "another-secret-of-at-least-32-bytes!!", 0))
                    .into_bytes(),
            ],
        ),
        ("expired", vec![format!("Bearer {}", token(BOT, CONV, TOKEN_SECRET, 7200)).into_bytes()]),
        ("the API key", vec![format!("Bearer {KEY}").into_bytes()]),
        ("a forged one, then the genuine one", vec![b"Bearer x.y".to_vec(), good_token.as_bytes().to_vec()]),
        ("the genuine one, then a forged one", vec![good_token.as_bytes().to_vec(), b"Bearer x.y".to_vec()]),
    ];
    for (what, values) in &wrong_tokens {
        let auth: Vec<(&'static str, Vec<u8>)> =
            values.iter().map(|v| ("authorization", v.clone())).collect();
        for action in ["messages", "end"] {
            let mut headers = vec![("content-type", b"application/json".to_vec())];
            headers.extend(auth.iter().cloned());
            cases.push(Case {
                name: format!("{action}: {what}"),
                method: "POST",
                uri: widget_uri(CONV, action),
                headers,
                body: br#"{"text":"a"}"#.to_vec(),
            });
        }
        cases.push(Case {
            name: format!("stream: {what}"),
            method: "GET",
            uri: widget_uri(CONV, "events"),
            headers: auth.clone(),
            body: Vec::new(),
        });
    }
    let genuine = token(BOT, CONV, TOKEN_SECRET, 0);
    cases.push(Case {
        name: "stream: a token for another conversation in the query".into(),
        method: "GET",
        uri: format!(
            "{}?access_token={}",
            widget_uri(CONV, "events"),
            token(BOT, "c-other", TOKEN_SECRET, 0)
        ),
        headers: Vec::new(),
        body: Vec::new(),
    });
    for bad in ["abc", "-1", "1.5", "18446744073709551616", "0x10"] {
        cases.push(Case {
            name: format!("stream: Last-Event-ID {bad}"),
            method: "GET",
            uri: widget_uri(CONV, "events"),
            headers: vec![
                ("authorization", format!("Bearer {genuine}").into_bytes()),
                ("last-event-id", bad.as_bytes().to_vec()),
            ],
            body: Vec::new(),
        });
        cases.push(Case {
            name: format!("stream: ?lastEventId={bad}"),
            method: "GET",
            uri: format!("{}?access_token={genuine}&lastEventId={bad}", widget_uri(CONV, "events")),
            headers: Vec::new(),
            body: Vec::new(),
        });
    }
    // Conversation ids in the path the schema refuses.
    for id in ["%00", "a%01b", &"a".repeat(129), "%ff%fe"] {
        cases.push(json_case(
            format!("escalate: path id {id:.20}"),
            &widget_uri(id, "escalate"),
            KEY.as_bytes(),
            &json!({}),
        ));
    }
    cases
}

/// Limits out of the way, so every case reaches the check it is about
/// (a 429 would hide it).
fn unlimited() -> settings::Settings {
    let mut settings = crate::common::test_settings();
    settings.widget.visitor_rate_per_sec = 1_000_000;
    settings.widget.visitor_rate_burst = 1_000_000;
    settings.widget.stream_opens_per_sec = 1_000_000;
    settings.widget.stream_open_burst = 1_000_000;
    settings
}

#[tokio::test]
async fn every_bad_request_gets_a_4xx_and_publishes_nothing() {
    let app = TestApp::start_with(unlimited()).await;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    let cases = corpus();
    for case in &cases {
        let reply = app.send(case.request()).await;
        *statuses.entry(reply.status.as_u16()).or_default() += 1;
        if !reply.status.is_client_error() || reply.status == 429 {
            wrong.push(format!("{}: {} {}", case.name, reply.status, reply.json));
        }
    }
    println!("{} bad requests in process: statuses {statuses:?}", cases.len());
    assert!(wrong.is_empty(), "{} bad requests not answered 4xx:\n{}", wrong.len(), wrong.join("\n"));
    app.assert_nothing_published("after the bad-input corpus").await;
}

/// What only a socket carries: broken HTTP framing. Each gets a 4xx status
/// line (from hyper or from us) or a closed connection, never a 2xx or 5xx;
/// the server keeps serving; nothing is published.
#[tokio::test]
async fn broken_framing_over_a_socket_gets_a_4xx_and_publishes_nothing() {
    let app = TestApp::start().await;
    let (addr, _server) = app.serve().await;
    let body = r#"{"eventType":"message","platformConversationId":"c-bad","text":"a"}"#;
    let head = format!(
        "POST {SEND} HTTP/1.1\r\nhost: x\r\nauthorization: {KEY}\r\ncontent-type: application/json\r\n"
    );
    let requests: Vec<(&str, Vec<u8>)> = vec![
        (
            "two different Content-Length",
            format!("{head}content-length: 3\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes(),
        ),
        ("Content-Length not a number", format!("{head}content-length: ten\r\n\r\n{body}").into_bytes()),
        ("negative Content-Length", format!("{head}content-length: -1\r\n\r\n{body}").into_bytes()),
        (
            "broken chunk size",
            format!("{head}transfer-encoding: chunked\r\n\r\nzz\r\n{body}\r\n0\r\n\r\n").into_bytes(),
        ),
        (
            "chunk longer than said",
            format!("{head}transfer-encoding: chunked\r\n\r\n2\r\n{body}\r\n0\r\n\r\n").into_bytes(),
        ),
        ("NUL in a header value", [head.as_bytes(), b"x-a: a\x00b\r\ncontent-length: 2\r\n\r\n{}"].concat()),
        ("header without a colon", format!("{head}oops\r\ncontent-length: 2\r\n\r\n{{}}").into_bytes()),
        (
            "a 64 KiB header",
            format!("{head}x-big: {}\r\ncontent-length: 2\r\n\r\n{{}}", "a".repeat(65_536)).into_bytes(),
        ),
        ("body shorter than Content-Length", format!("{head}content-length: 500\r\n\r\n{body}").into_bytes()),
    ];
    for (what, bytes) in requests {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(&bytes).await.expect("write");
        // A body shorter than announced waits for the rest: end our side.
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        let status = text.split(' ').nth(1).unwrap_or("");
        println!("{what}: {}", if status.is_empty() { "connection closed" } else { status });
        assert!(status.is_empty() || status.starts_with('4'), "{what}: {text:.200}");
    }
    // Still serving.
    let reply = reqwest::get(format!("http://{addr}/healthz")).await.expect("healthz");
    assert_eq!(reply.status(), 200);
    app.assert_nothing_published("after broken framing").await;
}
