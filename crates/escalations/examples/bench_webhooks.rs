//! Webhook delivery, measured as users deploy the service: every role is the
//! real `escalations` binary in a process of its own (2 ingress, 2 workers
//! with their dispatchers), and this process is the client and the one
//! webhook endpoint (a sink that verifies every signature). Printed beside
//! the raw limits measured in the same run: reqwest posting the same bodies
//! to the same sink, and PostgreSQL's commit rate.
//!
//! - drain: `BENCH_DRAIN` (10,000) conversations escalated while the workers
//!   do not know the bot's endpoint, so their `widgetEscalate`s wait pending;
//!   then workers that know it start, and the backlog drains to the sink.
//! - sustained: `BENCH_CONVERSATIONS` (2,000) connected conversations, their
//!   visitors posting messages at a fixed 500, 1,000 and 2,000 per second for
//!   `BENCH_SECS` (10) s each (other rates: `BENCH_RATES=100,500`):
//!   delivered/s, POST → `widgetMessage` p50/p99,
//!   and order, signatures and counts checked.
//! - recovery: 500 messages/s; the endpoint answers 503 for 10 s, then 200
//!   again: seconds until the backlog is gone.
//!
//! ```text
//! cargo build --release -p escalations
//! cargo run --release -p escalations --example bench_webhooks
//! ```

#[path = "../tests/support/deployment.rs"]
mod deployment;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use deployment::{
    Arrival, BOT, Deployment, KEY, Layout, Sink, database_url, sequences_by_conversation, wait_for,
};
use futures::StreamExt;
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    // target/release/examples/bench_webhooks → target/release/escalations
    let path = exe.parent().and_then(|p| p.parent()).expect("target dir").join("escalations");
    assert!(path.exists(), "{} is missing: run `cargo build --release -p escalations` first", path.display());
    path
}

#[tokio::main]
async fn main() {
    let binary = binary();
    let drain = env("BENCH_DRAIN", 10_000);
    let conversations = env("BENCH_CONVERSATIONS", 2_000);
    let secs = env("BENCH_SECS", 10);
    println!(
        "bench_webhooks: 2 ingress + 2 worker processes, one endpoint; drain {drain}, sustained over {conversations} conversations for {secs} s per rate"
    );
    raw_limits().await;
    if drain > 0 {
        bench_drain(&binary, drain).await;
    }
    bench_sustained(&binary, conversations, secs).await;
}

/// A `widgetMessage` body as the dispatcher posts it, for the raw HTTP rate.
fn sample_body(n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "botId": BOT, "channel": "chat",
        "data": {"eventType": "widgetMessage", "platformConversationId": format!("raw-{n}"),
                 "escalationId": "01JZ8Y2V7Q3W5E6R7T8Y9U0I1O", "sequence": 2,
                 "timestamp": "2026-12-01T10:00:00.000Z", "messageId": format!("m-{n}"), "text": format!("m-{n}")}
    }))
    .expect("json")
}

async fn raw_limits() {
    // reqwest → the same sink, signed the same way, 64 at a time.
    let sink = Sink::start().await;
    let http = reqwest::Client::new();
    let n = 20_000;
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let (http, url) = (http.clone(), sink.url());
            async move {
                let body = sample_body(i);
                let id = format!("msg_raw{i}");
                let ts = chrono::Utc::now().timestamp();
                let signature = delivery::signature_header(&[vec![7u8; 32]], &id, ts, &body);
                let response = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("webhook-id", id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", signature)
                    .body(body)
                    .send()
                    .await
                    .expect("post");
                assert!(response.status().is_success());
            }
        })
        .await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let signed = sink.arrivals().iter().filter(|a| a.signed).count();
    println!("raw reqwest -> sink: {n} signed posts, 64 in flight: {rate:.0} req/s ({signed} verified)");

    // PostgreSQL: one-row commits, 16 connections.
    let (setup, connection) =
        tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await.expect("pg");
    tokio::spawn(connection);
    setup
        .batch_execute("DROP TABLE IF EXISTS bench_commit_rate; CREATE TABLE bench_commit_rate (x bigint)")
        .await
        .expect("table");
    let started = Instant::now();
    let window = Duration::from_secs(3);
    let counts = futures::future::join_all((0..16).map(|_| async move {
        let (client, connection) =
            tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await.expect("pg");
        tokio::spawn(connection);
        let statement = client.prepare("INSERT INTO bench_commit_rate VALUES ($1)").await.expect("prepare");
        let mut n = 0i64;
        while started.elapsed() < window {
            client.execute(&statement, &[&n]).await.expect("insert");
            n += 1;
        }
        n
    }))
    .await;
    let commits: i64 = counts.iter().sum();
    setup.batch_execute("DROP TABLE bench_commit_rate").await.expect("drop");
    println!(
        "raw PostgreSQL: {:.0} single-row commits/s with 16 in flight",
        commits as f64 / started.elapsed().as_secs_f64()
    );
}

/// Escalates `names` (64 at a time) through the ingress processes; returns
/// each conversation's widget token.
async fn escalate_all(deployment: &Deployment, names: &[String]) -> HashMap<String, String> {
    let http = reqwest::Client::new();
    let bases = deployment.ingress.clone();
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let (http, base) = (http.clone(), bases[i % bases.len()].clone());
            async move {
                let response = http
                    .post(format!("{base}/widget/v1/conversations/{name}/escalate"))
                    .bearer_auth(KEY)
                    .header("botid", BOT)
                    .json(&json!({}))
                    .send()
                    .await
                    .expect("escalate");
                assert_eq!(response.status(), 200);
                let body: serde_json::Value = response.json().await.expect("json");
                (name.clone(), body["widgetToken"].as_str().expect("token").to_owned())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

async fn pending(deployment: &Deployment) -> i64 {
    let client = deployment.store.client().await.expect("db");
    client
        .query_one("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'", &[])
        .await
        .expect("count")
        .get(0)
}

async fn bench_drain(binary: &std::path::Path, n: usize) {
    let sink = Sink::start().await;
    // The workers do not know the endpoint yet: the backlog waits, pending.
    let layout = Layout {
        ingress: 2,
        workers: 2,
        webhook_url: Some(sink.url()),
        workers_know_endpoint: false,
        ..Layout::default()
    };
    let mut deployment = Deployment::start(binary, &layout).await;
    let names: Vec<String> = (0..n).map(|i| format!("drain-{i}")).collect();
    escalate_all(&deployment, &names).await;
    wait_for(Duration::from_secs(120), "the backlog", || async { pending(&deployment).await >= n as i64 })
        .await;
    deployment.stop_workers();
    println!("drain: {n} widgetEscalate pending; starting 2 workers that know the endpoint");
    let started = Instant::now();
    deployment.start_workers(2, "worker.toml").await;
    wait_for(Duration::from_secs(300), "the drain", || async { sink.count() >= n }).await;
    let elapsed = started.elapsed();
    let arrivals = sink.arrivals();
    let first = arrivals.iter().map(|a| a.at).min().expect("arrivals");
    let last = arrivals.iter().map(|a| a.at).max().expect("arrivals");
    let signed = arrivals.iter().filter(|a| a.signed).count();
    println!(
        "drain: {} delivered ({signed} signed) {:.2} s after the workers were started = {:.0}/s; first to last arrival {:.2} s = {:.0}/s",
        arrivals.len(),
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        (last - first).as_secs_f64(),
        n as f64 / (last - first).as_secs_f64().max(1e-9),
    );
    deployment.stop().await;
}

/// Posts visitor messages at `rate`/s for `secs` s, round-robin over the
/// conversations and the ingress processes; returns each text's send time.
async fn post_at_rate(
    deployment: &Deployment,
    tokens: &[(String, String)],
    rate: usize,
    secs: usize,
    label: &str,
    during: impl Fn(Duration),
) -> HashMap<String, Instant> {
    let http = reqwest::Client::new();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let total = rate * secs;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        during(started.elapsed());
        let (name, token) = &tokens[i % tokens.len()];
        let base = &deployment.ingress[i % deployment.ingress.len()];
        let text = format!("{label}-{i}");
        let request = http
            .post(format!("{base}/widget/v1/conversations/{name}/messages"))
            .bearer_auth(token)
            .json(&json!({"text": text}));
        let (sent, failures) = (sent.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            sent.lock().unwrap_or_else(PoisonError::into_inner).insert(text, Instant::now());
            match request.send().await {
                Ok(response) if response.status().is_success() => {}
                _ => {
                    failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("post");
    }
    let failures = failures.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(failures, 0, "{failures} posts were not accepted");
    Arc::try_unwrap(sent).map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner)).unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// Latencies and checks of the arrivals of one run.
fn report(label: &str, rate: usize, sent: &HashMap<String, Instant>, arrivals: &[Arrival]) {
    let ours: Vec<&Arrival> =
        arrivals.iter().filter(|a| a.text.as_deref().is_some_and(|t| sent.contains_key(t))).collect();
    let mut latencies: Vec<Duration> =
        ours.iter().map(|a| a.at.duration_since(sent[a.text.as_deref().unwrap_or_default()])).collect();
    latencies.sort();
    let first_sent = sent.values().min().copied().expect("sent");
    let last = ours.iter().map(|a| a.at).max().expect("arrivals");
    let unique: std::collections::HashSet<&str> = ours.iter().filter_map(|a| a.text.as_deref()).collect();
    let signed = ours.iter().filter(|a| a.signed).count();
    let owned: Vec<Arrival> = ours.iter().map(|a| (*a).clone()).collect();
    let in_order = sequences_by_conversation(&owned).values().all(|s| s.windows(2).all(|w| w[0] < w[1]));
    let mut after: Vec<Duration> = ours.iter().filter_map(|a| a.after_apply).collect();
    after.sort();
    let split = if after.is_empty() {
        String::new()
    } else {
        format!(
            " (of which after the worker's apply: p50 {:.1} ms, p99 {:.1} ms)",
            percentile(&after, 0.50).as_secs_f64() * 1e3,
            percentile(&after, 0.99).as_secs_f64() * 1e3
        )
    };
    println!(
        "{label} {rate}/s: {} of {} delivered ({} distinct, {signed} signed, order {}), {:.0} delivered/s; POST -> webhook p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms{split}",
        ours.len(),
        sent.len(),
        unique.len(),
        if in_order { "kept" } else { "BROKEN" },
        ours.len() as f64 / (last - first_sent).as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

async fn bench_sustained(binary: &std::path::Path, conversations: usize, secs: usize) {
    let sink = Sink::start().await;
    let log_filter = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into());
    let layout =
        Layout { ingress: 2, workers: 2, webhook_url: Some(sink.url()), log_filter, ..Layout::default() };
    let deployment = Deployment::start(binary, &layout).await;
    let names: Vec<String> = (0..conversations).map(|i| format!("chat-{i}")).collect();
    let tokens = escalate_all(&deployment, &names).await;
    let http = reqwest::Client::new();
    futures::stream::iter(names.iter())
        .for_each_concurrent(64, |name| {
            let (http, base) = (http.clone(), deployment.ingress[0].clone());
            async move {
                let response = http
                    .post(format!("{base}/agent/converse/send-message-to-widget"))
                    .header("authorization", KEY)
                    .header("botid", BOT)
                    .json(&json!({"eventType": "escalationSuccess", "platformConversationId": name, "agent": "Ann"}))
                    .send()
                    .await
                    .expect("connect");
                assert_eq!(response.status(), 200);
            }
        })
        .await;
    wait_for(Duration::from_secs(120), "the escalations' webhooks", || async {
        sink.count() >= conversations
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tokens: Vec<(String, String)> = names.iter().map(|n| (n.clone(), tokens[n].clone())).collect();

    let rates: Vec<usize> = std::env::var("BENCH_RATES")
        .ok()
        .map(|list| list.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![500, 1_000, 2_000]);
    for rate in rates {
        sink.clear();
        let label = format!("r{rate}");
        let sent = post_at_rate(&deployment, &tokens, rate, secs, &label, |_| {}).await;
        let total = sent.len();
        let deadline = Instant::now() + Duration::from_secs(120);
        while sink.count() < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        report("sustained", rate, &sent, &sink.arrivals());
    }

    // Recovery: the endpoint down for 10 s under 500/s, then back.
    sink.clear();
    let (down_at, up_at) = (Duration::from_secs(3), Duration::from_secs(13));
    let back: Arc<Mutex<Option<Instant>>> = Arc::default();
    let flip = {
        let (sink, back) = (sink.clone(), back.clone());
        move |elapsed: Duration| {
            let mut back = back.lock().unwrap_or_else(PoisonError::into_inner);
            if elapsed >= up_at {
                if back.is_none() {
                    sink.answer(200);
                    *back = Some(Instant::now());
                }
            } else if elapsed >= down_at {
                sink.answer(503);
            }
        }
    };
    let sent = post_at_rate(&deployment, &tokens, 500, 16, "rec", flip).await;
    let back = back.lock().unwrap_or_else(PoisonError::into_inner).expect("the endpoint came back");
    let before_back: Vec<&String> = sent.iter().filter(|(_, at)| **at < back).map(|(t, _)| t).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink.count() < sent.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = sink.arrivals();
    let arrived: HashMap<&str, Instant> =
        arrivals.iter().filter_map(|a| a.text.as_deref().map(|t| (t, a.at))).collect();
    let backlog_gone = before_back
        .iter()
        .filter_map(|t| arrived.get(t.as_str()))
        .max()
        .map(|at| at.duration_since(back).as_secs_f64());
    let missing = before_back.iter().filter(|t| !arrived.contains_key(t.as_str())).count();
    println!(
        "recovery: endpoint down 10 s under 500/s; {} messages posted before it came back ({missing} missing); backlog gone {:.2} s after it was back",
        before_back.len(),
        backlog_gone.unwrap_or(f64::NAN),
    );
    report("recovery run", 500, &sent, &arrivals);
    deployment.stop().await;
}
