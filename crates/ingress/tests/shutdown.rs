//! Graceful shutdown: once the token is cancelled the server accepts no new
//! connection, a request already in flight still completes (and publishes),
//! and `run` returns after closing the publisher.

mod common;

use std::time::Duration;

use common::*;
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
