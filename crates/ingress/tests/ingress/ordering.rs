//! docs/protocol.md §6: per conversation, events are applied in the order the contact
//! centre got its 200s. 1,000 events of one conversation are sent over a real
//! socket by 16 clients (16 connections) taking turns in a serial chain: event
//! `i` goes out on client `i % 16` only once event `i - 1` got its 200. The
//! shard queue must hold them in exactly that order.

use crate::common::*;
use domain::{AgentAction, Envelope, Input};
use serde_json::json;
use tokio::sync::mpsc;

const EVENTS: usize = 1_000;
const CLIENTS: usize = 16;
const CONVERSATION: &str = "conv-ordered";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_confirmed_in_a_chain_over_16_connections_stay_in_order() {
    let app = TestApp::start().await;
    let (addr, _server) = app.serve().await;
    let url = format!("http://{addr}{SEND}");

    // Client k receives the indices it must send on inbox k, and passes the
    // next index to client (k + 1) % 16 after its 200.
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..CLIENTS).map(|_| mpsc::unbounded_channel::<usize>()).unzip();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    for (k, mut inbox) in receivers.into_iter().enumerate() {
        let next = senders[(k + 1) % CLIENTS].clone();
        let done = done_tx.clone();
        let url = url.clone();
        // One client each: reqwest pools per client, so each is its own connection.
        let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client");
        tokio::spawn(async move {
            while let Some(i) = inbox.recv().await {
                let body = json!({"eventType": "message", "platformConversationId": CONVERSATION, "text": i.to_string()});
                let sent = client.post(&url).header("authorization", KEY).json(&body).send().await;
                match sent {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => {
                        let _ = done.send(Err(format!("event {i}: status {}", r.status())));
                        return;
                    }
                    Err(e) => {
                        let _ = done.send(Err(format!("event {i}: {e}")));
                        return;
                    }
                }
                if i + 1 == EVENTS {
                    let _ = done.send(Ok(()));
                    return;
                }
                if next.send(i + 1).is_err() {
                    return;
                }
            }
        });
    }
    senders[0].send(0).expect("start the chain");
    drop(done_tx);
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(120), done_rx.recv()).await;
    outcome.expect("chain finishes in time").expect("a result").expect("every event got a 200");

    let shard = app.shard(BOT, CONVERSATION);
    assert_eq!(app.depths().await[usize::from(shard)], EVENTS as u32);
    let texts: Vec<usize> = app
        .take_many(shard, EVENTS)
        .await
        .iter()
        .map(|d| match Envelope::from_bytes(&d.data).expect("envelope").command.input {
            Input::Agent { action: AgentAction::Message { text }, .. } => text.parse().expect("index"),
            other => panic!("{other:?}"),
        })
        .collect();
    let expected: Vec<usize> = (0..EVENTS).collect();
    assert!(
        texts == expected,
        "out of order: first difference at {:?}",
        texts.iter().zip(&expected).position(|(a, b)| a != b)
    );
}
