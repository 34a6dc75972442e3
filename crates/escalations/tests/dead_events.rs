//! `escalations dead-events …` as the real binary against the real broker:
//! events RabbitMQ dead-lettered are listed, replayed to their shard queue
//! (only the decodable ones), and purged.

use std::process::Output;

use broker::{Topology, shard_for};
use chrono::Utc;
use domain::{BotId, Command, ConversationId, Envelope, EventId, Input};
use futures::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicRejectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn cli(prefix: &str, args: &[&str]) -> Output {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_escalations"))
        .args(args)
        .env_remove("ESCALATIONS_CONFIG")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("ESCALATIONS__BROKER__URL", amqp_url())
        .env("ESCALATIONS__BROKER__PREFIX", prefix)
        .env("ESCALATIONS__BROKER__SHARDS", "2")
        .env("ESCALATIONS__WIDGET__TOKEN_SECRET", "a-test-key-of-at-least-32-bytes!!")
        .env("ESCALATIONS__LOG__FILTER", "warn")
        .output()
        .expect("run escalations");
    println!(
        "$ escalations {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn ok(output: &Output) -> String {
    assert!(output.status.success(), "expected success: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn depth(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("queue exists")
        .message_count()
}

/// The dead-letter queue's depth once it settles on `expected` (or after
/// 10 s, whatever it is then): the CLI returns what it read when its channel
/// closes, and a quorum queue counts those messages as ready a moment later.
async fn settled_depth(channel: &Channel, queue: &str, expected: u32) -> u32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = depth(channel, queue).await;
        if now == expected || std::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Publishes `body` to `shard`'s queue as the ingress would, then has the
/// broker dead-letter it the way the worker does (reject, no requeue).
async fn dead_letter(channel: &Channel, topology: &Topology, shard: u16, event_id: &str, body: Vec<u8>) {
    let mut headers = FieldTable::default();
    for (name, value) in [("bot-id", "acme"), ("conversation-id", "conv-dead"), ("event-type", "message")] {
        headers.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
    }
    let properties = BasicProperties::default().with_message_id(event_id.into()).with_headers(headers);
    channel
        .basic_publish(
            topology.exchange().as_str().into(),
            topology.routing_key(shard).as_str().into(),
            BasicPublishOptions::default(),
            &body,
            properties,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    // Shard queues have a single active consumer, so no basic.get.
    let delivery = next_on_shard(channel, topology, shard).await;
    delivery.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
}

/// The next delivery of `shard`'s queue, through a consumer of its own.
async fn next_on_shard(channel: &Channel, topology: &Topology, shard: u16) -> lapin::message::Delivery {
    let tag = format!("t-{}", uuid::Uuid::new_v4());
    let mut consumer = channel
        .basic_consume(
            topology.shard_queue(shard).as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery in time")
        .expect("consumer open")
        .expect("delivery");
    channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await.expect("cancel");
    delivery
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_events_are_listed_replayed_and_purged() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4());
    let topology = Topology::new(prefix.clone(), 2, 5);
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("amqp");
    let channel = connection.create_channel().await.expect("channel");
    channel.confirm_select(Default::default()).await.expect("confirms");
    topology.declare(&channel).await.expect("declare");

    let envelope = Envelope {
        bot_id: BotId::parse("acme").expect("id"),
        conversation_id: ConversationId::parse("conv-dead").expect("id"),
        received_at: Utc::now(),
        command: Command { event_id: EventId::parse("ev-dead-1").expect("id"), input: Input::VisitorEnd },
    };
    let shard = shard_for("acme", "conv-dead", 2);
    dead_letter(&channel, &topology, shard, "ev-dead-1", envelope.to_bytes()).await;
    dead_letter(&channel, &topology, shard, "ev-garbage", b"not an envelope".to_vec()).await;
    let dead = topology.dead_letter_queue();
    while depth(&channel, &dead).await < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let listed = ok(&cli(&prefix, &["dead-events", "list"]));
    assert!(listed.contains("ev-dead-1") && listed.contains("ev-garbage"), "{listed}");
    assert!(listed.contains("rejected"), "the x-death reason: {listed}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&cli(&prefix, &["dead-events", "list", "--json"]))).expect("json");
    let replayable: Vec<bool> = json
        .as_array()
        .expect("array")
        .iter()
        .map(|row| row["replayable"].as_bool().expect("bool"))
        .collect();
    assert_eq!(replayable, [true, false]);
    assert_eq!(settled_depth(&channel, &dead, 2).await, 2, "listing consumes nothing");

    let dry = ok(&cli(&prefix, &["dead-events", "replay"]));
    assert!(dry.contains("dry run: 2"), "{dry}");
    assert_eq!(settled_depth(&channel, &dead, 2).await, 2, "a dry run moves nothing");

    let replayed = ok(&cli(&prefix, &["dead-events", "replay", "--yes"]));
    assert!(replayed.contains("replayed 1") && replayed.contains("kept 1"), "{replayed}");
    assert_eq!(settled_depth(&channel, &dead, 1).await, 1, "the undecodable one stays");
    let back = next_on_shard(&channel, &topology, shard).await;
    assert_eq!(Envelope::from_bytes(&back.data).expect("envelope"), envelope);
    back.ack(Default::default()).await.expect("ack");

    let refused = cli(&prefix, &["dead-events", "purge"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    assert!(ok(&cli(&prefix, &["dead-events", "purge", "--yes"])).contains("purged 1"));
    assert_eq!(depth(&channel, &dead).await, 0);

    topology.delete(&channel).await.expect("delete");
    let _ = connection.close(200, "bye".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_many_times_never_consumes_or_drops_a_dead_letter() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4());
    let topology = Topology::new(prefix.clone(), 2, 5);
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("amqp");
    let channel = connection.create_channel().await.expect("channel");
    topology.declare(&channel).await.expect("declare");
    let dead = topology.dead_letter_queue();
    // The queue's own limit is one no listing reaches: an identical declare passes.
    channel
        .queue_declare(
            dead.as_str().into(),
            QueueDeclareOptions::durable(),
            topology.dead_letter_queue_arguments(),
        )
        .await
        .expect("the dead-letter queue has its explicit limit");

    // Dead letters as the worker writes them.
    let ids: Vec<String> = (1..=5).map(|i| format!("ev-poison-{i}")).collect();
    for id in &ids {
        let delivery = broker::Delivery {
            tag: 0,
            body: b"not an envelope".to_vec(),
            message_id: Some(id.clone()),
            redelivered: false,
            reply_to: None,
            properties: BasicProperties::default().with_message_id(id.as_str().into()),
        };
        broker::dead::publish_dead_letter(
            &connection,
            &topology,
            &delivery,
            &topology.shard_queue(0),
            "undecodable",
            "expected value at line 1 column 1",
        )
        .await
        .expect("dead-lettered");
    }

    // More listings than RabbitMQ 4.x's default limit of 20 deliveries.
    for round in 0..25 {
        let json: serde_json::Value =
            serde_json::from_str(&ok(&cli(&prefix, &["dead-events", "list", "--json"]))).expect("json");
        let rows = json.as_array().expect("array");
        let listed: Vec<&str> = rows.iter().map(|row| row["eventId"].as_str().expect("id")).collect();
        assert_eq!(listed, ids, "round {round}: every dead letter, in order");
        assert!(rows.iter().all(|row| row["reason"] == "undecodable"), "round {round}: {json}");
        assert!(rows.iter().all(|row| row["error"].as_str().is_some_and(|e| e.contains("line 1"))));
    }
    assert_eq!(settled_depth(&channel, &dead, 5).await, 5, "listing consumed nothing");

    topology.delete(&channel).await.expect("delete");
    let _ = connection.close(200, "bye".into()).await;
}
