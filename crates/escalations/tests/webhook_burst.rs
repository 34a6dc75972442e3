//! A contact centre's morning peak, as users deploy the service: 10,000
//! conversations escalated in a burst through an ingress process, applied by
//! two worker processes whose dispatchers share the outbox. Every
//! `widgetEscalate` arrives at the one endpoint, signed, exactly once, and
//! each conversation's webhooks arrive in sequence order (500 of them also
//! connect an agent and send two visitor messages, held until the agent
//! connects). docs/protocol.md §4.

#[path = "support/deployment.rs"]
mod deployment;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use deployment::{BOT, Deployment, KEY, Layout, Sink, sequences_by_conversation, wait_for};
use futures::StreamExt;
use serde_json::json;

const CONVERSATIONS: usize = 10_000;
const CHATTY: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ten_thousand_escalations_reaches_the_endpoint_once_each_in_order() {
    let sink = Sink::start().await;
    let layout = Layout { ingress: 1, workers: 2, webhook_url: Some(sink.url()), ..Layout::default() };
    let deployment = Deployment::start(Path::new(env!("CARGO_BIN_EXE_escalations")), &layout).await;
    let outcome = tokio::spawn(burst(deployment.ingress[0].clone(), sink.clone())).await;
    if outcome.is_err() {
        eprintln!("{}", deployment.logs());
    }
    deployment.stop().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn burst(base: String, sink: Sink) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let tokens: Vec<(usize, String)> = futures::stream::iter(0..CONVERSATIONS)
        .map(|c| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let response = http
                    .post(format!("{base}/widget/v1/conversations/burst-{c}/escalate"))
                    .bearer_auth(KEY)
                    .header("botid", BOT)
                    .json(&json!({"escalateTo": "sales"}))
                    .send()
                    .await
                    .expect("escalate");
                assert_eq!(response.status(), 200, "escalate burst-{c}");
                let body: serde_json::Value = response.json().await.expect("json");
                (c, body["widgetToken"].as_str().expect("token").to_owned())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    println!("{CONVERSATIONS} escalations accepted in {:.1} s", started.elapsed().as_secs_f64());

    // Some conversations go on: visitor messages are held, then sent after
    // the agent connects: webhooks 2 and 3, after widgetEscalate.
    let tokens: HashMap<usize, String> = tokens.into_iter().collect();
    futures::stream::iter(0..CHATTY)
        .for_each_concurrent(32, |c| {
            let (http, base, token) = (http.clone(), base.clone(), tokens[&c].clone());
            async move {
                for text in ["first", "second"] {
                    let response = http
                        .post(format!("{base}/widget/v1/conversations/burst-{c}/messages"))
                        .bearer_auth(&token)
                        .json(&json!({"text": text}))
                        .send()
                        .await
                        .expect("visitor message");
                    assert_eq!(response.status(), 200);
                }
                let response = http
                    .post(format!("{base}/agent/converse/send-message-to-widget"))
                    .header("authorization", KEY)
                    .header("botid", BOT)
                    .json(&json!({"eventType": "escalationSuccess", "platformConversationId": format!("burst-{c}"), "agent": "Ann"}))
                    .send()
                    .await
                    .expect("agent connects");
                assert_eq!(response.status(), 200);
            }
        })
        .await;

    let expected = CONVERSATIONS + 2 * CHATTY;
    wait_for(Duration::from_secs(240), "every webhook", || async { sink.count() >= expected }).await;
    println!("{expected} webhooks arrived {:.1} s after the burst began", started.elapsed().as_secs_f64());
    // Anything extra would come now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let arrivals = sink.arrivals();
    assert_eq!(arrivals.len(), expected, "each webhook once ({} requests in all)", sink.requests());
    assert!(arrivals.iter().all(|a| a.signed), "every webhook verifies against the bot's secret");
    let ids: HashSet<&str> = arrivals.iter().map(|a| a.webhook_id.as_str()).collect();
    assert_eq!(ids.len(), expected, "no webhook id twice");
    let escalates: HashSet<&str> = arrivals
        .iter()
        .filter(|a| a.event_type == "widgetEscalate")
        .map(|a| a.conversation.as_str())
        .collect();
    assert_eq!(escalates.len(), CONVERSATIONS, "one widgetEscalate per conversation");
    for (conversation, sequences) in sequences_by_conversation(&arrivals) {
        let number: usize = conversation.trim_start_matches("burst-").parse().expect("ours");
        let want: Vec<u64> = if number < CHATTY { vec![1, 2, 3] } else { vec![1] };
        assert_eq!(sequences, want, "{conversation}: webhooks in sequence order");
    }
}
