//! RabbitMQ stopped under a running ingress: requests get a fast `503` with
//! `Retry-After` and `/readyz` says not ready; once RabbitMQ is back the same
//! ingress (no restart) answers `200` again, and every event that got a `200`
//! is in its queue, in order.
//!
//! The broker stopped is a private node of the test's own
//! ([`PrivateRabbit`]: own name, ports, cookie and folders, removed when
//! dropped, also while a failed test unwinds), never the machine's RabbitMQ,
//! which other tests use meanwhile. The harness is the chaos scenarios'
//! (`crates/escalations/tests/support/nodes.rs`), included by path.

mod common;
#[path = "../../escalations/tests/support/nodes.rs"]
mod nodes;

use std::time::{Duration, Instant};

use common::*;
use nodes::PrivateRabbit;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_get_503_while_the_broker_is_down_and_200_after_it_is_back() {
    // Declared first so it drops last: the app's connections and topology
    // cleanup go before the node is stopped and removed.
    let mut rabbit = tokio::task::block_in_place(PrivateRabbit::start);
    let mut app = TestApp::start_with(test_settings_on(&rabbit.url())).await;
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

    // The whole node goes: every connection is closed, as in a crash or an
    // upgrade.
    tokio::task::block_in_place(|| rabbit.stop());

    // The node is gone, so nothing can be confirmed: the first request is a
    // 503 already (the publisher may need a moment, up to the confirm
    // timeout, to notice), and so is every later one, fast.
    let reply = send(1).await.expect("the ingress still answers");
    assert_eq!(reply.status(), 503, "a request while the broker is stopped");
    assert_eq!(reply.headers()["retry-after"], "1");
    let body: serde_json::Value = reply.json().await.expect("JSON body");
    assert_eq!(body["error"], "broker_unavailable");
    let mut i = 2;
    for _ in 0..5 {
        let started = Instant::now();
        let reply = send(i).await.expect("request");
        i += 1;
        assert_eq!(reply.status(), 503);
        assert!(started.elapsed() < Duration::from_secs(1), "503s are fast: {:?}", started.elapsed());
    }
    assert_eq!(ready().await.expect("readyz").status(), 503);

    // Same node (its durable queues and their messages), started again.
    tokio::task::block_in_place(|| rabbit.start_again());

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
        assert!(Instant::now() < deadline, "no 200 within 90 s of the start");
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
    drop(app);
    drop(rabbit);
}
