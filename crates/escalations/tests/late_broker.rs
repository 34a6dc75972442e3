//! An ingress process started while RabbitMQ is out of its reach (issue 11):
//! it answers, not ready; once the broker can be reached, the same process
//! (no restart) becomes ready, answers `Prefer: wait` with the worker's
//! verdict, and answers a second `escalate` of a live escalation with the
//! live one's id, not one of its own invention. Both need its live hub,
//! which an ingress started without the broker never used to create. The
//! broker is kept out of reach by a TCP proxy of the test's
//! (`support/netcut.rs`), never by stopping the machine's RabbitMQ.

#[path = "support/deployment.rs"]
mod deployment;
#[path = "support/netcut.rs"]
mod netcut;

use std::path::Path;
use std::time::Duration;

use deployment::{BOT, Deployment, KEY, Layout, Sink, wait_for};
use netcut::{Proxy, target_of, through};
use serde_json::{Value, json};

async fn escalate(http: &reqwest::Client, base: &str, conversation: &str) -> String {
    let response = http
        .post(format!("{base}/widget/v1/conversations/{conversation}/escalate"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("botid", BOT)
        .json(&json!({"escalateTo": "sales"}))
        .send()
        .await
        .expect("escalate");
    assert_eq!(response.status(), 200, "escalate");
    let body: Value = response.json().await.expect("JSON");
    body["escalationId"].as_str().expect("an escalation id").to_owned()
}

async fn readyz(http: &reqwest::Client, base: &str) -> Option<u16> {
    http.get(format!("{base}/readyz")).send().await.ok().map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_started_without_the_broker_answers_verdicts_once_it_appears() {
    // An endpoint that takes the escalation's webhook: without one, the
    // undeliverable `widgetEscalate` ends the escalation before the agent connects.
    let sink = Sink::start().await;
    let layout =
        Layout { ingress: 1, workers: 2, shards: 4, webhook_url: Some(sink.url()), ..Layout::default() };
    let mut deployment = Deployment::start(Path::new(env!("CARGO_BIN_EXE_escalations")), &layout).await;
    let amqp = deployment.amqp_url();
    let proxy = Proxy::start(target_of(&amqp)).await;
    proxy.cut();
    let late = deployment.spawn_ingress(&[("ESCALATIONS__BROKER__URL", &through(&amqp, proxy.addr.port()))]);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");

    wait_for(Duration::from_secs(30), "the late ingress to listen", || async {
        readyz(&http, &late).await.is_some()
    })
    .await;
    assert_eq!(readyz(&http, &late).await, Some(503), "not ready without the broker");

    proxy.restore().await;
    wait_for(Duration::from_secs(60), "the late ingress to be ready", || async {
        readyz(&http, &late).await == Some(200)
    })
    .await;

    let conversation = format!("late-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let first = escalate(&http, &late, &conversation).await;
    let connect = json!({"eventType": "escalationSuccess", "platformConversationId": conversation,
        "eventId": format!("{conversation}-connect"), "agent": "Ann"});
    let response = http
        .post(format!("{late}/agent/converse/send-message-to-widget"))
        .header("authorization", KEY)
        .header("prefer", "wait=10")
        .json(&connect)
        .send()
        .await
        .expect("connect");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(
        (status, body["status"].as_str(), body["currentState"].as_str()),
        (200, Some("applied"), Some("connected")),
        "Prefer: wait is answered with the worker's verdict: {body}"
    );
    let again = escalate(&http, &late, &conversation).await;
    assert_eq!(again, first, "escalating a live escalation answers its id");

    drop(proxy);
    deployment.stop().await;
}
