//! Topology declaration against the real broker.

mod common;

use common::{consume, get_eventually, message_count, raw, reply_code, unique_topology, with_cleanup};
use futures::StreamExt;
use lapin::{
    BasicProperties, ExchangeKind,
    options::{
        BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
        ExchangeDeclareOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions::default().passive()
}

#[tokio::test]
async fn declares_quorum_shard_queues_with_the_expected_arguments() {
    let topology = unique_topology(4, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let (connection, channel) = raw().await;
        t.declare(&channel).await.expect("declare");
        // Declaring is idempotent: the publisher does it on every connect.
        t.declare(&channel).await.expect("declare again");

        for queue in (0..t.shards).map(|i| t.shard_queue(i)).chain([t.dead_letter_queue()]) {
            let q = channel
                .queue_declare(queue.as_str().into(), passive(), FieldTable::default())
                .await
                .unwrap_or_else(|e| panic!("{queue} must exist: {e}"));
            assert_eq!(q.message_count(), 0);
        }
        for exchange in [t.exchange(), t.dead_letter_exchange()] {
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions { passive: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("{exchange} must exist: {e}"));
        }

        // Same arguments: accepted, so the queue really has these arguments
        // (RabbitMQ compares them on every non-passive declare)...
        let queue = t.shard_queue(0);
        channel
            .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), t.shard_queue_arguments())
            .await
            .expect("equivalent redeclare");

        // ...and each differing argument is refused with 406 PRECONDITION_FAILED.
        let mut variants: Vec<(&str, FieldTable)> = vec![("classic queue", FieldTable::default())];
        for (key, value) in [
            ("x-queue-type", AMQPValue::LongString("classic".into())),
            ("x-single-active-consumer", AMQPValue::Boolean(false)),
            ("x-delivery-limit", AMQPValue::LongLongInt(99)),
            ("x-dead-letter-exchange", AMQPValue::LongString("elsewhere".into())),
            ("x-dead-letter-strategy", AMQPValue::LongString("at-most-once".into())),
            ("x-overflow", AMQPValue::LongString("drop-head".into())),
        ] {
            let mut args = t.shard_queue_arguments();
            args.insert(key.into(), value);
            variants.push((key, args));
        }
        for (what, args) in variants {
            // A refused declare closes its channel, hence one per probe.
            let probe = connection.create_channel().await.expect("channel");
            let error = probe
                .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args)
                .await
                .expect_err(&format!("a redeclare differing in {what} must be refused"));
            assert_eq!(reply_code(&error), Some(406), "{what}: {error}");
        }
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test]
async fn routes_each_shard_key_to_its_queue_only() {
    let topology = unique_topology(4, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let (connection, channel) = raw().await;
        t.declare(&channel).await.expect("declare");
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        channel
            .basic_publish(
                t.exchange().as_str().into(),
                t.routing_key(2).as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                b"to shard 2",
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        for shard in 0..t.shards {
            let expected = u32::from(shard == 2);
            assert_eq!(message_count(&channel, &t.shard_queue(shard)).await, expected, "shard {shard}");
        }
        let got = consume(&channel, &t.shard_queue(2), 1).await;
        assert_eq!(got[0].data, b"to shard 2");
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test]
async fn dead_letters_after_the_delivery_limit() {
    let topology = unique_topology(1, 1);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let (connection, channel) = raw().await;
        t.declare(&channel).await.expect("declare");
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        channel
            .basic_publish(
                t.exchange().as_str().into(),
                t.routing_key(0).as_str().into(),
                BasicPublishOptions::default(),
                b"poison",
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");

        // A consumer keeps failing: nack with requeue until the queue gives up.
        let queue = t.shard_queue(0);
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "failing-worker".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("basic_consume");
        let mut deliveries = 0;
        while deliveries < 10 {
            let next = tokio::time::timeout(std::time::Duration::from_secs(2), consumer.next()).await;
            let Ok(Some(delivery)) = next else { break };
            deliveries += 1;
            delivery
                .expect("delivery")
                .nack(BasicNackOptions { requeue: true, ..Default::default() })
                .await
                .expect("nack");
        }
        assert!(deliveries <= 3, "delivery limit 1 allows at most 2 deliveries, saw {deliveries}");

        let dead = get_eventually(&channel, &t.dead_letter_queue()).await.expect("dead-lettered");
        assert_eq!(dead.delivery.data, b"poison");
        assert_eq!(message_count(&channel, &queue).await, 0, "shard queue must be empty");
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test]
async fn delete_removes_everything_and_is_repeatable() {
    let t = unique_topology(2, 5);
    let (connection, channel) = raw().await;
    t.declare(&channel).await.expect("declare");
    t.delete(&channel).await.expect("delete");
    t.delete(&channel).await.expect("delete again");
    let error = channel
        .queue_declare(t.shard_queue(0).as_str().into(), passive(), FieldTable::default())
        .await
        .expect_err("queue must be gone");
    assert_eq!(reply_code(&error), Some(404), "{error}");
    let _ = connection.close(200, "OK".into()).await;
}

#[tokio::test]
async fn a_mismatched_delivery_limit_names_the_setting() {
    let topology = unique_topology(1, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let (_connection, channel) = raw().await;
        t.declare(&channel).await.expect("declare");
        let other = broker::Topology::new(t.prefix.clone(), t.shards, 20);
        let (_connection, channel) = raw().await;
        let error = other.declare(&channel).await.expect_err("RabbitMQ refuses another limit");
        let text = format!("{error}");
        assert!(text.contains("broker.delivery_limit"), "{text}");
    })
    .await;
}
