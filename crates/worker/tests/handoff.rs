//! Deliveries a batch claims at insert are handed to the webhook dispatcher
//! of the same process and sent without a claim round; what it cannot claim
//! (an earlier delivery of the conversation still pending, no room at the
//! endpoint) is left to the claim rounds, and nothing is sent out of order.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use chrono::Utc;
use delivery::{Dispatcher, DispatcherConfig, Handoff};
use support::{TestEnv, envelope, escalate, key, success, visitor_message, with_env};
use tokio_util::sync::CancellationToken;
use worker::{BatchOutcome, BotRules, apply_handing};

type Arrivals = Arc<Mutex<Vec<(String, u64)>>>;

/// An endpoint that answers 200 and records `(conversation, sequence)`.
async fn sink() -> (String, Arrivals) {
    let arrivals: Arrivals = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(|State(arrivals): State<Arrivals>, body: axum::body::Bytes| async move {
                let payload: serde_json::Value = serde_json::from_slice(&body).expect("json");
                let conversation = payload["data"]["platformConversationId"].as_str().expect("id").to_owned();
                let sequence = payload["data"]["sequence"].as_u64().expect("sequence");
                arrivals.lock().expect("lock").push((conversation, sequence));
                "ok"
            }),
        )
        .with_state(arrivals.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (url, arrivals)
}

fn bots(url: &str, concurrency: u32) -> String {
    format!(
        r#"
[webhooks]
allow_loopback = true
max_concurrency_per_endpoint = {concurrency}

[[bots]]
id = "acme"
api_keys = ["acme-key-0123456789abcdef"]
webhook_url = "{url}"
webhook_secrets = ["whsec_BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="]
"#
    )
}

/// A dispatcher that claims once at start and then only every minute: within
/// a test, a delivery it sends was handed to it (or woken for, which the
/// tests below check is not needed).
fn dispatcher(
    env: &TestEnv,
    handoff: &Handoff,
) -> (CancellationToken, tokio::task::JoinHandle<delivery::Result<()>>) {
    let config = DispatcherConfig {
        poll_interval: Duration::from_secs(60),
        listen: false,
        handoff: Some(handoff.clone()),
        ..DispatcherConfig::default()
    };
    let dispatcher = Dispatcher::new(&env.settings, env.store.clone(), None, config).expect("dispatcher");
    let stop = CancellationToken::new();
    let task = dispatcher.spawn(stop.clone());
    (stop, task)
}

/// Applies one batch as the worker does, handing over what it claimed.
async fn apply(env: &TestEnv, handoff: &Handoff, batch: &[domain::Envelope]) -> (usize, u64) {
    let rules = BotRules::from_settings(&env.settings);
    let outcome: BatchOutcome =
        apply_handing(&env.store, &rules, batch, Utc::now(), None, Some(handoff)).await.expect("applied");
    let handed = outcome.handed.len();
    for (delivery, slot) in outcome.handed {
        handoff.hand(delivery, slot);
    }
    (handed, outcome.unclaimed_heads)
}

async fn arrived(arrivals: &Arrivals, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while arrivals.lock().expect("lock").len() < count {
        assert!(tokio::time::Instant::now() < deadline, "{count} webhooks: {:?}", arrivals.lock());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn claimed_at_insert_and_sent_without_a_claim_round() {
    let (url, arrivals) = sink().await;
    with_env(1, &bots(&url, 8), move |env| async move {
        let handoff = Handoff::new();
        let (stop, task) = dispatcher(&env, &handoff);
        // The dispatcher's first round has run (nothing was due): from here
        // on it claims only when woken, or in a minute.
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Three conversations escalate in one batch, and in the first one
        // the agent connects and the visitor writes: three new heads, all
        // claimed at insert and handed over (nobody needs waking); the
        // message waits behind its conversation's head and follows it once
        // that is settled.
        let mut batch: Vec<_> =
            (1..=3).map(|i| envelope(&format!("h{i}"), "e-1", escalate(&format!("esc-{i}")))).collect();
        batch.push(envelope("h1", "e-2", success("Ann")));
        batch.push(envelope("h1", "e-3", visitor_message("v-1", "hello")));
        assert_eq!(apply(&env, &handoff, &batch).await, (3, 0));
        arrived(&arrivals, 4).await;
        let h1: Vec<u64> =
            arrivals.lock().expect("lock").iter().filter(|(c, _)| c == "h1").map(|(_, s)| *s).collect();
        assert_eq!(h1, [1, 2], "in sequence order");

        // A redelivered batch queues nothing and claims nothing.
        assert_eq!(apply(&env, &handoff, &batch).await, (0, 0));

        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while env.count("SELECT count(*) FROM webhook_heads").await != 0 {
            assert!(tokio::time::Instant::now() < deadline, "every head settled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let undelivered =
            env.count("SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'").await;
        assert_eq!(undelivered, 0);
        assert_eq!(arrivals.lock().expect("lock").len(), 4, "each sent once");
        stop.cancel();
        task.await.expect("joined").expect("stopped");
    })
    .await;
}

#[tokio::test]
async fn without_a_serving_dispatcher_nothing_is_claimed_at_insert() {
    with_env(1, &bots("http://127.0.0.1:9/hook", 8), move |env| async move {
        let handoff = Handoff::new();
        let batch = [envelope("n1", "e-1", escalate("esc-1"))];
        assert_eq!(apply(&env, &handoff, &batch).await, (0, 1), "a new head left to the claim rounds");
        assert_eq!(env.count("SELECT count(*) FROM webhook_heads WHERE claimed_by IS NULL").await, 1);
        assert!(env.store.conversation(&key("n1")).await.expect("read").is_some());
    })
    .await;
}

#[tokio::test]
async fn no_more_is_claimed_at_insert_than_the_endpoint_has_room_for() {
    let (url, arrivals) = sink().await;
    with_env(1, &bots(&url, 2), move |env| async move {
        let handoff = Handoff::new();
        let (stop, task) = dispatcher(&env, &handoff);
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Five new heads, two slots: two handed, three left to claim rounds
        // (woken for), and all five arrive.
        let batch: Vec<_> =
            (1..=5).map(|i| envelope(&format!("r{i}"), "e-1", escalate(&format!("esc-{i}")))).collect();
        assert_eq!(apply(&env, &handoff, &batch).await, (2, 3));
        handoff.wake();
        arrived(&arrivals, 5).await;
        stop.cancel();
        task.await.expect("joined").expect("stopped");
    })
    .await;
}

#[tokio::test]
async fn a_stopped_dispatcher_gives_handed_claims_back() {
    let (url, arrivals) = sink().await;
    with_env(1, &bots(&url, 8), move |env| async move {
        let handoff = Handoff::new();
        let (stop, task) = dispatcher(&env, &handoff);
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Claimed at insert, but the dispatcher stops before it is handed.
        let rules = BotRules::from_settings(&env.settings);
        let batch = [envelope("s1", "e-1", escalate("esc-1"))];
        let outcome = apply_handing(&env.store, &rules, &batch, Utc::now(), None, Some(&handoff))
            .await
            .expect("applied");
        assert_eq!(outcome.handed.len(), 1);
        stop.cancel();
        task.await.expect("joined").expect("stopped");
        for (delivery, slot) in outcome.handed {
            handoff.hand(delivery, slot);
        }
        // Given back (due now, unclaimed), not held for the lease.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while env
            .count("SELECT count(*) FROM webhook_heads WHERE claimed_by IS NULL AND due_at <= now()")
            .await
            != 1
        {
            assert!(tokio::time::Instant::now() < deadline, "the claim was not given back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Another dispatcher sends it at its first round.
        let other = Handoff::new();
        let (stop, task) = dispatcher(&env, &other);
        arrived(&arrivals, 1).await;
        stop.cancel();
        task.await.expect("joined").expect("stopped");
    })
    .await;
}
