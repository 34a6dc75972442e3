//! An ingress started while RabbitMQ is unreachable (issue 11): `/readyz` is
//! not ready and streams answer `503`; once the broker appears, the same
//! process (no restart) becomes ready and streams open. The machine's broker
//! is never stopped: the ingress reaches it through a TCP proxy in the test
//! that refuses connections at first and forwards to it later.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{TOKEN_SECRET, TopologyGuard, test_settings};
use chrono::Utc;
use domain::{BotId, ConversationId};
use ingress::WidgetTokens;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A proxy to the real broker that forwards only once `open` is set.
async fn proxy(open: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if !open.load(Ordering::Acquire) {
                // As a broker that is not there yet: the connection just ends.
                drop(client);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut broker) = TcpStream::connect("127.0.0.1:5672").await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                }
            });
        }
    });
    addr
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_started_without_a_broker_gets_ready_once_it_appears() {
    let open = Arc::new(AtomicBool::new(false));
    let via = proxy(open.clone()).await;
    let mut settings = test_settings();
    settings.broker.url = format!("amqp://guest:guest@{via}/%2f");
    settings.http.bind = free_port();
    settings.database.url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    settings.database.schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let store = store::Store::connect(&settings.database.url, &settings.database.schema, 2).expect("store");
    store.migrate().await.expect("migrate");
    let _topology = TopologyGuard(ingress::publisher_config(&settings).topology);

    let base = format!("http://{}", settings.http.bind);
    let prefix = settings.broker.prefix.clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(ingress::run(settings, shutdown.clone()));
    let http = reqwest::Client::new();
    let tokens = WidgetTokens::new(TOKEN_SECRET.as_bytes(), Duration::from_secs(3600));
    let token = tokens
        .issue(&BotId::parse("acme").expect("id"), &ConversationId::parse("c1").expect("id"), Utc::now())
        .token;
    let ready = || async { http.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16()) };
    let stream = || async {
        let url = format!("{base}/widget/v1/conversations/c1/events");
        http.get(url).bearer_auth(&token).send().await.map(|r| r.status().as_u16())
    };

    // Up, but without the broker: not ready, and no streams.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready().await.is_err() {
        assert!(Instant::now() < deadline, "the ingress did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready().await.ok(), Some(503));
    assert_eq!(stream().await.ok(), Some(503));

    // The broker appears: the same process becomes ready and streams open.
    open.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready().await.ok() != Some(200) {
        assert!(Instant::now() < deadline, "not ready 30 s after the broker appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stream().await.ok(), Some(200), "streams work without a restart");

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    store.drop_schema().await.expect("drop schema");
    if let Ok(connection) =
        lapin::Connection::connect(&crate::common::amqp_url(), lapin::ConnectionProperties::default()).await
        && let Ok(channel) = connection.create_channel().await
    {
        let live = broker::live_exchange(&prefix);
        let _ = channel.exchange_delete(live.as_str().into(), Default::default()).await;
        let _ = connection.close(200, "bye".into()).await;
    }
}
