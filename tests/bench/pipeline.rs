//! Events/s through the whole write path: HTTP → ingress → RabbitMQ → worker →
//! committed in PostgreSQL, with one worker and then two, next to the raw
//! broker rate (publish with confirms + consume with ack, no HTTP, no
//! database) measured in the same run.
//!
//! ```text
//! cargo run --release -p e2e --example bench_pipeline
//! ```
//!
//! Size with `BENCH_CONVERSATIONS` (default 5000) and `BENCH_EVENTS` per
//! conversation (default 6: escalate, success, then messages); 64 HTTP clients
//! at once, each conversation's events one after the other (each waits for
//! its 200, as a contact centre does).

use std::time::{Duration, Instant};

use broker::Topology;
use e2e::System;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use worker::{Worker, WorkerConfig};

const CLIENTS: usize = 64;

fn env_number(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let conversations = env_number("BENCH_CONVERSATIONS", 5000);
    let per = env_number("BENCH_EVENTS", 6).max(2);
    let total = conversations * per;
    println!(
        "bench_pipeline: {conversations} conversations x {per} events = {total} events, {CLIENTS} HTTP clients"
    );
    for workers in [1usize, 2] {
        let sys = System::start().await;
        let mut extra = Vec::new();
        for _ in 1..workers {
            extra.push(Worker::start(&sys.settings, WorkerConfig::default(), None).await?);
        }
        while extra.iter().any(|w| w.shards().is_empty()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let started = Instant::now();
        let sys_ref = &sys;
        futures::stream::iter(0..conversations)
            .for_each_concurrent(CLIENTS, |c| async move {
                let conv = format!("bench-{c}");
                sys_ref.escalate(&conv).await;
                sys_ref.agent(json!({"eventType": "escalationSuccess", "platformConversationId": conv})).await;
                for m in 2..per {
                    let body = json!({"eventType": "message", "platformConversationId": conv, "text": format!("m{m}")});
                    let (status, _) = sys_ref.agent(body).await;
                    assert_eq!(status, 200);
                }
            })
            .await;
        let posted = started.elapsed();
        while sys.store.count_events().await? < total as u64 {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        println!(
            "ingress + {workers} worker(s): {total} events, all 200s after {:.2} s, all committed after {:.2} s = {:.0} events/s",
            posted.as_secs_f64(),
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64()
        );
        for w in extra {
            w.stop().await?;
        }
        sys.stop().await;
    }
    raw_broker(total).await
}

/// The broker alone on the same quorum queue layout: `CLIENTS` publishers
/// awaiting each confirm, consumers acking every message.
async fn raw_broker(total: usize) -> anyhow::Result<()> {
    let settings = e2e::settings("");
    let b = &settings.broker;
    let topology = Topology::new(b.prefix.clone(), b.shards, b.delivery_limit);
    let connection = Connection::connect(&b.url, ConnectionProperties::default()).await?;
    topology.declare(&connection.create_channel().await?).await?;
    let started = Instant::now();
    let mut consumers = Vec::new();
    for shard in 0..b.shards {
        let channel = connection.create_channel().await?;
        channel.basic_qos(256, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                topology.shard_queue(shard).as_str().into(),
                format!("raw-{shard}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        consumers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while let Some(Ok(delivery)) = consumer.next().await {
                let _ = delivery.ack(BasicAckOptions::default()).await;
                n += 1;
            }
            n
        }));
    }
    let body = vec![b'x'; 300];
    let per_client = total / CLIENTS;
    let topology_ref = &topology;
    let connection_ref = &connection;
    let body_ref = &body;
    futures::stream::iter(0..CLIENTS)
        .for_each_concurrent(CLIENTS, |client| async move {
            let channel = connection_ref.create_channel().await.expect("channel");
            channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
            for i in 0..per_client {
                let shard = ((client * per_client + i) % usize::from(topology_ref.shards)) as u16;
                channel
                    .basic_publish(
                        topology_ref.exchange().as_str().into(),
                        topology_ref.routing_key(shard).as_str().into(),
                        BasicPublishOptions::default(),
                        body_ref,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .expect("publish")
                    .await
                    .expect("confirm");
            }
        })
        .await;
    let published = started.elapsed();
    let count = per_client * CLIENTS;
    let queues: Vec<String> = (0..topology.shards).map(|s| topology.shard_queue(s)).collect();
    let check = connection.create_channel().await?;
    loop {
        let mut left = 0u32;
        for q in &queues {
            let declared = check
                .queue_declare(
                    q.as_str().into(),
                    lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await?;
            left += declared.message_count();
        }
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "raw broker: {count} messages published with confirms ({CLIENTS} publishers) in {:.2} s, consumed with acks after {:.2} s = {:.0} msg/s",
        published.as_secs_f64(),
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    topology.delete(&connection.create_channel().await?).await?;
    let _ = connection.close(200, "bye".into()).await;
    for c in consumers {
        c.abort();
    }
    Ok(())
}
