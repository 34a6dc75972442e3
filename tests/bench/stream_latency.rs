//! Latency of the widget stream: agent event POSTed → the same event read on
//! its conversation's SSE stream, through a whole system (ingress on a real
//! socket, worker, RabbitMQ, PostgreSQL).
//!
//! Two processes, so that both ends of 10,000 streams fit the machine's
//! 20,000 file descriptors: this one runs the system and escalates `CONVS`
//! conversations (default 10,000), then starts itself again as the client,
//! which opens every conversation's stream and POSTs `RATE` events per
//! second (default 1,000) for `SECS` seconds (default 10), round-robin over
//! the conversations, and prints p50/p90/p99/max of POST sent → event read.
//! The client also splits each latency at the event's `timestamp` (when the
//! worker applied it; one clock, one machine): before it, ingress + broker
//! + worker pickup; after it, the commit, the live fan-out and the stream.
//!
//! `cargo run --release -p e2e --example stream_latency`

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use e2e::{BOT, KEY, SseStream, System};
use futures::StreamExt;
use serde_json::json;

/// The allocator the product's binary runs with (crates/escalations/src/main.rs), so
/// the roles in this process allocate as they do in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in the client process: the file with the base URL and the tokens.
const CLIENT_ENV: &str = "STREAM_LATENCY_CLIENT";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    match std::env::var(CLIENT_ENV) {
        Ok(file) => client(&file).await,
        Err(_) => server().await,
    }
}

/// Runs the system, escalates the conversations, and runs the client against it.
async fn server() {
    let convs = env("CONVS", 10_000);
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
    // Every escalation applied, so the measured events meet a settled system.
    let client = sys.store.client().await.expect("database");
    loop {
        let row = client.query_one("SELECT count(*) FROM widget_events", &[]).await.expect("count");
        if usize::try_from(row.get::<_, i64>(0)).unwrap_or(0) >= convs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(client);
    println!("setup: {convs} conversations escalated and applied in {:.1?}", setup.elapsed());

    let file = std::env::temp_dir().join(format!("stream-latency-{}.txt", std::process::id()));
    let mut text = format!("{}\n", sys.base);
    for (name, token) in names.iter().zip(&tokens) {
        text.push_str(&format!("{name} {token}\n"));
    }
    std::fs::write(&file, text).expect("write the client's file");
    let exe = std::env::current_exe().expect("own path");
    let client_file = file.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe).env(CLIENT_ENV, client_file).status()
    })
    .await
    .expect("client process")
    .expect("client process starts");
    let _ = std::fs::remove_file(&file);
    assert!(status.success(), "client failed: {status}");

    // The stages the worker and the ingress measure (one process, one recorder).
    if let Ok(response) = sys.http.get(format!("{}/metrics", sys.base)).send().await
        && let Ok(text) = response.text().await
    {
        const SHOWN: [&str; 5] =
            ["live_messages_total", "commit_seconds", "batch_size", "confirm_seconds", "request_duration"];
        text.lines()
            .filter(|l| !l.starts_with('#') && SHOWN.iter().any(|s| l.contains(s)))
            .filter(|l| !l.contains("_bucket") || l.contains("quantile"))
            .for_each(|l| println!("{l}"));
    }
    if let Ok(sys) = Arc::try_unwrap(sys) {
        sys.stop().await;
    }
}

/// One event: (conversation index, sequence).
type Event = (usize, u64);

/// When each event was sent and read (and applied, from its timestamp).
#[derive(Default)]
struct Times {
    sent: HashMap<Event, (Instant, DateTime<Utc>)>,
    received: HashMap<Event, (Instant, Option<DateTime<Utc>>)>,
}

type Shared = Arc<Mutex<Times>>;

/// Opens the streams, offers the load, prints the figures.
async fn client(file: &str) {
    let rate = env("RATE", 1_000);
    let secs = env("SECS", 10);
    let total = rate * secs;
    let text = std::fs::read_to_string(file).expect("client file");
    let mut lines = text.lines();
    let base = lines.next().expect("base URL").to_owned();
    let convs: Vec<(String, String)> =
        lines.filter_map(|line| line.split_once(' ').map(|(c, t)| (c.to_owned(), t.to_owned()))).collect();
    let count = convs.len();
    let http = reqwest::Client::new();
    let opened = Instant::now();
    let streams: Vec<SseStream> = futures::stream::iter(convs.iter())
        .map(|(conv, token)| {
            let request = http
                .get(format!("{base}/widget/v1/conversations/{conv}/events"))
                .bearer_auth(token)
                .header("Last-Event-ID", "1");
            async move {
                let response = request.send().await.expect("stream opens");
                assert_eq!(response.status(), 200, "stream status");
                SseStream::new(response)
            }
        })
        .buffered(64)
        .collect()
        .await;
    println!("client: {count} streams open in {:.1?}", opened.elapsed());

    let times: Shared = Arc::default();
    let expected_per_conv = total.div_ceil(count);
    let mut readers = Vec::with_capacity(count);
    for (i, mut stream) in streams.into_iter().enumerate() {
        let times = times.clone();
        readers.push(tokio::spawn(async move {
            let mut got = 0;
            while got < expected_per_conv {
                let Some(event) = stream.next(Duration::from_secs(30)).await else { break };
                let applied = event.data["timestamp"].as_str().and_then(|t| t.parse().ok());
                let mut times = times.lock().unwrap_or_else(PoisonError::into_inner);
                times.received.insert((i, event.id), (Instant::now(), applied));
                got += 1;
            }
        }));
    }

    let mut ticker = tokio::time::interval(Duration::from_secs(1) / u32::try_from(rate).unwrap_or(1000));
    let started = Instant::now();
    let mut posts = Vec::with_capacity(total);
    for n in 0..total {
        ticker.tick().await;
        let i = n % count;
        // Sequence 1 is escalationRequested; round r brings sequence r + 2.
        let sequence = u64::try_from(n / count).unwrap_or(0) + 2;
        let conv = convs[i].0.clone();
        let request = http
            .post(format!("{base}/agent/converse/send-message-to-widget"))
            .header("Authorization", KEY)
            .header("botid", BOT)
            .json(&json!({"eventType": "escalationQueueUpdate", "platformConversationId": conv, "queuePosition": sequence}));
        let times = times.clone();
        posts.push(tokio::spawn(async move {
            times
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sent
                .insert((i, sequence), (Instant::now(), Utc::now()));
            let response = request.send().await.expect("post");
            assert_eq!(response.status(), 200, "post status");
        }));
    }
    for post in posts {
        post.await.expect("post");
    }
    let offered = started.elapsed();
    for reader in readers {
        reader.await.expect("reader");
    }

    let times = times.lock().unwrap_or_else(PoisonError::into_inner);
    let mut total_latency = Vec::new();
    let (mut before_apply, mut after_apply) = (Vec::new(), Vec::new());
    for (key, (sent_at, sent_wall)) in &times.sent {
        let Some((got_at, applied)) = times.received.get(key) else { continue };
        let latency = got_at.saturating_duration_since(*sent_at);
        total_latency.push(latency);
        if let Some(applied) = applied
            && let Ok(before) = (*applied - *sent_wall).to_std()
        {
            before_apply.push(before);
            after_apply.push(latency.saturating_sub(before));
        }
    }
    println!(
        "events: {total} offered at {rate}/s over {count} conversations in {offered:.1?}; received {} of {}",
        total_latency.len(),
        times.sent.len()
    );
    println!("POST -> SSE latency: {}", summary(total_latency));
    println!("  POST -> applied:   {}", summary(before_apply));
    println!("  applied -> SSE:    {}", summary(after_apply));
}

fn summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    let pick = |q: f64| {
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(index).copied().unwrap_or_default()
    };
    format!("p50 {:.1?}  p90 {:.1?}  p99 {:.1?}  max {:.1?}", pick(0.50), pick(0.90), pick(0.99), pick(1.0))
}
