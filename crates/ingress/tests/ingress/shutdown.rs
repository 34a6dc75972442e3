//! Graceful shutdown: once the token is cancelled the server accepts no new
//! connection, a request already in flight still completes (and publishes),
//! and `run` returns after closing the publisher.

use std::time::Duration;

use crate::common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_completes_after_shutdown_begins_and_new_connections_are_refused() {
    let app = TestApp::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let token = CancellationToken::new();
    let server =
        tokio::spawn(ingress::serve(listener, app.router.clone(), Duration::from_secs(10), token.clone()));

    // Headers and half of the body, then shutdown begins.
    let body =
        json!({"eventType": "message", "platformConversationId": "conv-s", "text": "in flight"}).to_string();
    let (first, second) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {SEND} HTTP/1.1\r\nhost: {addr}\r\nauthorization: {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(first.as_bytes()).await.expect("write first half");
    tokio::time::sleep(Duration::from_millis(200)).await;
    token.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert!(TcpStream::connect(addr).await.is_err(), "no new connection once shutdown began");

    stream.write_all(second.as_bytes()).await.expect("write second half");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read until the server closes");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"accepted\""), "{response}");

    let served = tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve returns");
    served.expect("task").expect("clean shutdown");
    assert_eq!(app.depths().await.iter().sum::<u32>(), 1, "the in-flight event was published");
}

#[tokio::test]
async fn run_binds_serves_and_returns_when_cancelled() {
    let mut settings = test_settings();
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    settings.http.bind = probe.local_addr().expect("addr");
    // The address is taken: run reports it.
    let token = CancellationToken::new();
    let error = ingress::run(settings.clone(), token.clone()).await.expect_err("address in use");
    assert!(matches!(error.downcast_ref(), Some(ingress::Error::Bind { .. })), "{error}");
    drop(probe);

    // `run` declares the topology through its publisher; removed on drop.
    let _cleanup = TopologyGuard(ingress::publisher_config(&settings).topology);
    let bind = settings.http.bind;
    let running = tokio::spawn(ingress::run(settings, token.clone()));
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.get(format!("http://{bind}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "ready within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    token.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(15), running).await.expect("run returns");
    outcome.expect("task").expect("clean exit");
}

/// An open widget stream ends when shutdown begins (the widget resumes
/// elsewhere with `Last-Event-ID`), so `run` returns at once instead of at
/// the end of the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_end_when_shutdown_begins_instead_of_holding_the_grace_period() {
    let mut settings = test_settings();
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    settings.http.bind = probe.local_addr().expect("addr");
    drop(probe);
    settings.http.shutdown_grace_secs = 30;
    settings.database.url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    settings.database.schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let store = store::Store::connect(&settings.database.url, &settings.database.schema, 1).expect("store");
    store.migrate().await.expect("migrate");
    let _cleanup = TopologyGuard(ingress::publisher_config(&settings).topology);
    let tokens = ingress::WidgetTokens::new(TOKEN_SECRET.as_bytes(), Duration::from_secs(3600));
    let bot = domain::BotId::parse(BOT).expect("bot");
    let conversation = domain::ConversationId::parse("c-stream").expect("conversation");
    let token = tokens.issue(&bot, &conversation, chrono::Utc::now()).token;

    let bind = settings.http.bind;
    let token_run = CancellationToken::new();
    let running = tokio::spawn(ingress::run(settings, token_run.clone()));
    let client = reqwest::Client::new();
    let url = format!("http://{bind}/widget/v1/conversations/c-stream/events");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        if let Ok(response) = client.get(&url).bearer_auth(&token).send().await
            && response.status() == 200
        {
            break response;
        }
        assert!(tokio::time::Instant::now() < deadline, "a stream opens within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Open and idle: nothing ends it but the shutdown.
    let idle = tokio::time::timeout(Duration::from_millis(500), stream.chunk()).await;
    assert!(idle.is_err(), "the stream stays open while nothing happens: {idle:?}");

    let began = std::time::Instant::now();
    token_run.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ended when shutdown began");
    let outcome = tokio::time::timeout(Duration::from_secs(10), running).await.expect("run returns");
    outcome.expect("task").expect("clean exit");
    let took = began.elapsed();
    assert!(took < Duration::from_secs(10), "run returned {took:?} after shutdown began (grace 30 s)");
    store.drop_schema().await.expect("drop schema");
}
