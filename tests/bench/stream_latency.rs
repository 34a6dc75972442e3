//! Latency of the widget stream: agent event POSTed → the same event read on
//! its conversation's SSE stream, with a whole system (ingress on a real
//! socket, worker, RabbitMQ, PostgreSQL) in this process.
//!
//! `CONVS` conversations (default 5,000: this process holds both ends of
//! every stream, two sockets each, under a 20,000 file descriptor limit),
//! `RATE` events per second (default 1,000) for `SECS` seconds (default 10),
//! spread round-robin over the conversations. Prints p50/p90/p99/max.
//!
//! `cargo run --release -p e2e --example stream_latency`

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use e2e::System;
use futures::StreamExt;
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

type Times = Arc<Mutex<HashMap<(usize, u64), Instant>>>;

#[tokio::main]
async fn main() {
    let convs = env("CONVS", 5_000);
    let rate = env("RATE", 1_000);
    let secs = env("SECS", 10);
    let total = rate * secs;
    let sys = Arc::new(System::start().await);
    let setup = Instant::now();

    let names: Vec<String> = (0..convs).map(|i| format!("bench-{i}")).collect();
    let tokens: Vec<String> = futures::stream::iter(names.iter())
        .map(|conv| {
            let sys = sys.clone();
            async move { sys.escalate(conv).await.1 }
        })
        .buffered(64)
        .collect()
        .await;
    sys.wait_events(&names[convs - 1], 1).await;

    let sent: Times = Arc::default();
    let received: Times = Arc::default();
    let mut readers = Vec::with_capacity(convs);
    let streams: Vec<_> = futures::stream::iter(names.iter().zip(&tokens))
        .map(|(conv, token)| {
            let sys = sys.clone();
            async move { sys.stream(&sys.base, conv, token, Some(1)).await.expect("stream opens") }
        })
        .buffered(64)
        .collect()
        .await;
    let expected_per_conv = total.div_ceil(convs);
    for (i, mut stream) in streams.into_iter().enumerate() {
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            let mut got = 0;
            while got < expected_per_conv {
                let Some(event) = stream.next(Duration::from_secs(30)).await else { break };
                received.lock().unwrap_or_else(PoisonError::into_inner).insert((i, event.id), Instant::now());
                got += 1;
            }
        }));
    }
    println!("setup: {convs} conversations escalated and streaming in {:.1?}", setup.elapsed());

    let mut ticker = tokio::time::interval(Duration::from_secs(1) / u32::try_from(rate).unwrap_or(1000));
    let started = Instant::now();
    let mut posts = Vec::with_capacity(total);
    for n in 0..total {
        ticker.tick().await;
        let i = n % convs;
        // Sequence 1 is escalationRequested; round r brings sequence r + 2.
        let sequence = u64::try_from(n / convs).unwrap_or(0) + 2;
        let (sys, sent, conv) = (sys.clone(), sent.clone(), names[i].clone());
        posts.push(tokio::spawn(async move {
            sent.lock().unwrap_or_else(PoisonError::into_inner).insert((i, sequence), Instant::now());
            let body = json!({"eventType": "escalationQueueUpdate", "platformConversationId": conv, "queuePosition": sequence});
            let (status, body) = sys.agent(body).await;
            assert_eq!(status, 200, "{body}");
        }));
    }
    for post in posts {
        post.await.expect("post");
    }
    let offered = started.elapsed();
    for reader in readers {
        reader.await.expect("reader");
    }

    // A block, so the guards are gone before the system stops.
    {
        let sent = sent.lock().unwrap_or_else(PoisonError::into_inner);
        let received = received.lock().unwrap_or_else(PoisonError::into_inner);
        let mut latencies: Vec<Duration> = sent
            .iter()
            .filter_map(|(key, at)| received.get(key).map(|got| got.saturating_duration_since(*at)))
            .collect();
        latencies.sort();
        let pick = |q: f64| {
            let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies.get(index).copied().unwrap_or_default()
        };
        println!(
            "events: {total} offered at {rate}/s over {convs} conversations in {offered:.1?}; received {} of {}",
            latencies.len(),
            sent.len()
        );
        println!(
            "POST -> SSE latency: p50 {:.1?}  p90 {:.1?}  p99 {:.1?}  max {:.1?}",
            pick(0.50),
            pick(0.90),
            pick(0.99),
            pick(1.0)
        );
    }
    // The worker's and the ingress's live counters (one process, one recorder).
    if let Ok(response) = sys.http.get(format!("{}/metrics", sys.base)).send().await
        && let Ok(text) = response.text().await
    {
        text.lines().filter(|l| l.contains("live_messages_total")).for_each(|l| println!("{l}"));
    }
    if let Ok(sys) = Arc::try_unwrap(sys) {
        sys.stop().await;
    }
}
