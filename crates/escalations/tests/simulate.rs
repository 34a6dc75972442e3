//! `escalations simulate` against a real deployment (the binary's ingress and
//! worker on the machine's RabbitMQ and PostgreSQL): the widget's stream shows
//! what the simulated contact centre plays, and the simulator refuses
//! webhooks whose signature does not verify.

#[path = "support/deployment.rs"]
mod deployment;
#[path = "support/sse.rs"]
mod sse;

use std::path::Path;
use std::time::Duration;

use deployment::{BOT, Deployment, KEY, Layout, free_port, wait_for};
use serde_json::{Value, json};
use sse::Stream;

const AGENT: &str = "Sam Tester";
const WAIT: Duration = Duration::from_secs(30);

/// A deployment whose bot's webhooks go to a simulator process.
async fn with_simulator(queue_interval_ms: u64) -> (Deployment, String) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let layout =
        Layout { ingress: 1, workers: 1, webhook_url: Some(format!("{url}/webhooks")), ..Layout::default() };
    let mut deployment = Deployment::start(Path::new(env!("CARGO_BIN_EXE_escalations")), &layout).await;
    let interval = queue_interval_ms.to_string();
    let ingress = deployment.ingress[0].clone();
    deployment.spawn_extra(
        "simulate",
        &[
            "--bot",
            BOT,
            "--ingress",
            &ingress,
            "--agent",
            AGENT,
            "--queue-interval-ms",
            &interval,
            "--reply-delay-ms",
            "50",
            "--session-secs",
            "0",
        ],
    );
    let http = reqwest::Client::new();
    wait_for(WAIT, "the simulator to listen", || async { http.get(&url).send().await.is_ok() }).await;
    (deployment, url)
}

async fn escalate(base: &str, conversation: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{base}/widget/v1/conversations/{conversation}/escalate"))
        .header("authorization", KEY)
        .json(&json!({}))
        .send()
        .await
        .expect("escalate");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["widgetToken"].as_str().expect("token").to_owned()
}

async fn say(base: &str, conversation: &str, token: &str, text: &str) {
    let response = reqwest::Client::new()
        .post(format!("{base}/widget/v1/conversations/{conversation}/messages"))
        .bearer_auth(token)
        .json(&json!({"text": text}))
        .send()
        .await
        .expect("message");
    assert_eq!(response.status(), 200, "visitor message");
}

async fn play(base: &str) {
    let conversation = "sim-1";
    let token = escalate(base, conversation).await;
    let mut stream = Stream::open(base, conversation, &token).await;
    let first = stream.until(WAIT, "queue position 2", |e| e.name == "escalationQueueUpdate").await;
    assert_eq!(first.data["queuePosition"], 2);
    assert_eq!(first.data["waitingTime"], 4);
    let second = stream.until(WAIT, "queue position 1", |e| e.name == "escalationQueueUpdate").await;
    assert_eq!(second.data["queuePosition"], 1);
    let connected = stream.until(WAIT, "the agent", |e| e.name == "escalationSuccess").await;
    assert_eq!(connected.data["agent"], AGENT);
    let greeting = stream.until(WAIT, "the greeting", |e| e.name == "message").await;
    assert!(greeting.data["text"].as_str().is_some_and(|t| t.contains(AGENT)), "{greeting:?}");

    say(base, conversation, &token, "my order is late").await;
    let echo = stream.until(WAIT, "the echo", |e| e.name == "message").await;
    assert_eq!(echo.data["text"], "You said: my order is late");

    say(base, conversation, &token, "Bye!").await;
    let goodbye = stream.until(WAIT, "the goodbye", |e| e.name == "message").await;
    assert!(goodbye.data["text"].as_str().is_some_and(|t| t.starts_with("Goodbye")), "{goodbye:?}");
    let left = stream.until(WAIT, "the disconnect", |e| e.name == "agentDisconnect").await;
    assert_eq!(left.data["reason"], "agent_disconnect");
    // In order, each once: the stream's ids count up from 1.
    let ids: Vec<u64> = stream.seen.iter().map(|e| e.id.parse().expect("id")).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "{:#?}", stream.seen);
}

async fn refuses_unsigned(simulator: &str) {
    let http = reqwest::Client::new();
    let body = json!({"botId": BOT, "channel": "chat", "data": {"eventType": "widgetEscalate",
        "platformConversationId": "forged", "sequence": 1, "timestamp": "2025-01-01T00:00:00Z"}});
    let unsigned = http.post(format!("{simulator}/webhooks")).json(&body).send().await.expect("post");
    assert_eq!(unsigned.status(), 401);
    let now = chrono::Utc::now().timestamp().to_string();
    let forged = http
        .post(format!("{simulator}/webhooks"))
        .header("webhook-id", "msg_forged")
        .header("webhook-timestamp", now)
        .header("webhook-signature", "v1,bm90IGEgc2lnbmF0dXJl")
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(forged.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_plays_queue_agent_echo_and_disconnect() {
    let (deployment, simulator) = with_simulator(300).await;
    let base = deployment.ingress[0].clone();
    let outcome = tokio::spawn(async move {
        refuses_unsigned(&simulator).await;
        play(&base).await;
    })
    .await;
    if outcome.is_err() {
        eprintln!("{}", deployment.logs());
    }
    deployment.stop().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}
