//! The HTTP load generator and the closed-loop driver shared with the raw run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::{Args, KEY, SEND};

/// The request body of event `i`: an agent `message` in conversation `i % conversations`.
pub(crate) fn body(i: usize, args: &Args) -> serde_json::Value {
    serde_json::json!({
        "eventType": "message",
        "platformConversationId": format!("conv-{}", i % args.conversations),
        "text": text(args),
    })
}

/// The message text, `--text-bytes` long.
pub(crate) fn text(args: &Args) -> String {
    "x".repeat(args.text_bytes)
}

/// Outcome of one closed-loop run.
pub(crate) struct RunResult {
    pub(crate) ok: usize,
    pub(crate) failed: usize,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
}

impl RunResult {
    pub(crate) fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Latencies must be sorted (`drive` does).
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `clients` tasks pulling indices from `0..events`, each through `send`.
pub(crate) async fn drive<F, Fut>(events: usize, clients: usize, send: F) -> RunResult
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let send = Arc::new(send);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let next = next.clone();
            let send = send.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= events {
                        return (ok, failed, latencies);
                    }
                    let t = Instant::now();
                    if send(client, i).await {
                        ok += 1;
                        latencies.push(t.elapsed());
                    } else {
                        failed += 1;
                    }
                }
            })
        })
        .collect();
    let mut result =
        RunResult { ok: 0, failed: 0, elapsed: Duration::ZERO, latencies: Vec::with_capacity(events) };
    for task in tasks {
        let (ok, failed, latencies) = task.await.expect("client task");
        result.ok += ok;
        result.failed += failed;
        result.latencies.extend(latencies);
    }
    result.elapsed = started.elapsed();
    result.latencies.sort_unstable();
    result
}

/// `events` agent events through the ingress at `addr`.
pub(crate) async fn run_ingress(addr: std::net::SocketAddr, args: Args, events: usize) -> RunResult {
    if args.reqwest {
        return run_ingress_reqwest(addr, args, events).await;
    }
    // One HTTP/1.1 keep-alive connection per client, each used by one task.
    let mut senders = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(connection);
        senders.push(tokio::sync::Mutex::new(sender));
    }
    let senders = Arc::new(senders);
    let host = addr.to_string();
    drive(events, args.clients, move |client, i| {
        let senders = senders.clone();
        let request = http::Request::post(SEND)
            .header(http::header::HOST, host.as_str())
            .header(http::header::AUTHORIZATION, KEY)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body(i, &args).to_string())))
            .expect("request");
        async move {
            let mut sender = senders[client].lock().await;
            if sender.ready().await.is_err() {
                return false;
            }
            match sender.send_request(request).await {
                Ok(response) => {
                    let ok = response.status() == 200;
                    ok && response.into_body().collect().await.is_ok()
                }
                Err(_) => false,
            }
        }
    })
    .await
}

pub(crate) async fn run_ingress_reqwest(addr: std::net::SocketAddr, args: Args, events: usize) -> RunResult {
    // Parsed once: reqwest would parse a string URL on every request.
    let url = reqwest::Url::parse(&format!("http://{addr}{SEND}")).expect("url");
    let clients: Vec<reqwest::Client> = (0..args.clients)
        .map(|_| reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client"))
        .collect();
    let clients = Arc::new(clients);
    drive(events, args.clients, move |client, i| {
        let request =
            clients[client].post(url.clone()).header("authorization", KEY).json(&body(i, &args)).send();
        async move { matches!(request.await, Ok(r) if r.status() == 200) }
    })
    .await
}
