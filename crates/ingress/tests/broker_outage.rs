//! RabbitMQ stopped under a running ingress: requests get a fast `503` with
//! `Retry-After` and `/readyz` says not ready; once RabbitMQ is back the same
//! ingress (no restart) answers `200` again, and every event that got a `200`
//! is in its queue.
//!
//! This stops the broker for everyone, so it lives in its own test binary
//! (test binaries run one after another) and holds a single test. The broker
//! is restarted by a drop guard whatever happens.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Runs `rabbitmqctl start_app` and `await_startup` when dropped.
struct RestoreBroker;

impl Drop for RestoreBroker {
    fn drop(&mut self) {
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup", "--timeout", "120"]);
    }
}

fn rabbitmqctl(args: &[&str]) -> bool {
    match Command::new("rabbitmqctl").args(args).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!("rabbitmqctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
            false
        }
        Err(error) => {
            eprintln!("cannot run rabbitmqctl {args:?}: {error}");
            false
        }
    }
}

async fn rabbitmqctl_async(args: &'static [&'static str]) -> bool {
    tokio::task::spawn_blocking(move || rabbitmqctl(args)).await.expect("rabbitmqctl task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_get_503_while_the_broker_is_down_and_200_after_it_is_back() {
    // Declared before the guard so it drops after it: the topology is
    // deleted once the broker is back.
    let mut app = TestApp::start().await;
    let (addr, _server) = app.serve().await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("client");
    let send = |i: usize| {
        let body = json!({"eventType": "message", "platformConversationId": "conv-outage", "text": i.to_string(),
                          "eventId": format!("outage-{i}")});
        client.post(format!("http://{addr}{SEND}")).header("authorization", KEY).json(&body).send()
    };
    let ready = || client.get(format!("http://{addr}/readyz")).send();

    let mut accepted = Vec::new();
    let reply = send(0).await.expect("request");
    assert_eq!(reply.status(), 200);
    accepted.push("outage-0".to_owned());

    let _restore = RestoreBroker;
    assert!(rabbitmqctl_async(&["stop_app"]).await, "rabbitmqctl stop_app");

    // The publisher notices within a moment; from then on every request is a
    // fast 503. (One in flight at the very moment of the stop may also get
    // a 503 after the confirm timeout.)
    let mut i = 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = send(i).await.expect("the ingress still answers");
        i += 1;
        match reply.status().as_u16() {
            200 => accepted.push(format!("outage-{}", i - 1)),
            503 => {
                assert_eq!(reply.headers()["retry-after"], "1");
                let body: serde_json::Value = reply.json().await.expect("JSON body");
                assert_eq!(body["error"], "broker_unavailable");
                break;
            }
            other => panic!("unexpected status {other}"),
        }
        assert!(Instant::now() < deadline, "no 503 within 30 s of stop_app");
    }
    for _ in 0..5 {
        let started = Instant::now();
        let reply = send(i).await.expect("request");
        i += 1;
        assert_eq!(reply.status(), 503);
        assert!(started.elapsed() < Duration::from_secs(1), "503s are fast: {:?}", started.elapsed());
    }
    assert_eq!(ready().await.expect("readyz").status(), 503);

    assert!(rabbitmqctl_async(&["start_app"]).await, "rabbitmqctl start_app");
    assert!(rabbitmqctl_async(&["await_startup", "--timeout", "120"]).await);

    // Same ingress, no restart: the publisher reconnects by itself.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let reply = send(i).await.expect("request");
        i += 1;
        match reply.status().as_u16() {
            200 => {
                accepted.push(format!("outage-{}", i - 1));
                break;
            }
            503 => {}
            other => panic!("unexpected status {other}"),
        }
        assert!(Instant::now() < deadline, "no 200 within 90 s of start_app");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..3 {
        let reply = send(i).await.expect("request");
        assert_eq!(reply.status(), 200);
        accepted.push(format!("outage-{i}"));
        i += 1;
    }
    assert_eq!(ready().await.expect("readyz").status(), 200);

    // Every 200 survived the outage, in order (a 503 may have been stored
    // too: at-least-once; the worker drops such duplicates by event id).
    app.reconnect_inspector().await;
    let shard = app.shard(BOT, "conv-outage");
    let depth = app.depths().await[usize::from(shard)] as usize;
    let stored: Vec<String> = app
        .take_many(shard, depth)
        .await
        .iter()
        .filter_map(|d| d.properties.message_id().as_ref().map(|m| m.to_string()))
        .collect();
    let mut position = 0;
    for id in &accepted {
        let found = stored[position..].iter().position(|s| s == id);
        let offset = found.unwrap_or_else(|| panic!("{id} got a 200 but is not in order in {stored:?}"));
        position += offset + 1;
    }
}
