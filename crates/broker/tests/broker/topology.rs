//! Topology declaration against the real broker.

use crate::common::{consume, get_eventually, message_count, raw, reply_code, unique_topology, with_cleanup};
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
async fn a_message_requeued_over_and_over_is_never_dead_lettered_by_the_broker() {
    // 1 was a limit earlier versions honoured; poison is now the worker's call.
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
                b"valid",
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");

        // Requeued (as a nack from a consumer in trouble would) ten times.
        let queue = t.shard_queue(0);
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "troubled-worker".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("basic_consume");
        let mut deliveries = 0;
        while deliveries < 10 {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), consumer.next()).await;
            let Ok(Some(delivery)) = next else { break };
            deliveries += 1;
            delivery
                .expect("delivery")
                .nack(BasicNackOptions { requeue: true, ..Default::default() })
                .await
                .expect("nack");
        }
        assert_eq!(deliveries, 10, "the message kept coming back");
        assert_eq!(message_count(&channel, &t.dead_letter_queue()).await, 0, "nothing dead-lettered");
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

/// Declares what earlier versions declared: shard queues whose broker-side
/// delivery limit (5) dead-letters, and a dead-letter queue with no limit.
async fn declare_legacy(channel: &lapin::Channel, t: &broker::Topology) {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    let long = |v: &str| AMQPValue::LongString(v.into());
    channel
        .exchange_declare(
            t.dead_letter_exchange().as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await
        .expect("dlx");
    let mut dead_args = FieldTable::default();
    dead_args.insert("x-queue-type".into(), long("quorum"));
    channel
        .queue_declare(t.dead_letter_queue().as_str().into(), QueueDeclareOptions::durable(), dead_args)
        .await
        .expect("legacy dead queue");
    channel
        .queue_bind(
            t.dead_letter_queue().as_str().into(),
            t.dead_letter_exchange().as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind dead");
    channel
        .exchange_declare(t.exchange().as_str().into(), ExchangeKind::Direct, durable, FieldTable::default())
        .await
        .expect("exchange");
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long("quorum"));
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(5));
    args.insert("x-dead-letter-exchange".into(), long(&t.dead_letter_exchange()));
    args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
    args.insert("x-overflow".into(), long("reject-publish"));
    for shard in 0..t.shards {
        let queue = t.shard_queue(shard);
        channel
            .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args.clone())
            .await
            .expect("legacy shard queue");
        channel
            .queue_bind(
                queue.as_str().into(),
                t.exchange().as_str().into(),
                t.routing_key(shard).as_str().into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind shard");
    }
}

async fn publish_confirmed(channel: &lapin::Channel, exchange: &str, key: &str, body: &[u8]) {
    channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            body,
            BasicProperties::default().with_message_id(String::from_utf8_lossy(body).as_ref().into()),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_of_an_earlier_version_are_recreated_with_their_messages_in_order() {
    let topology = unique_topology(2, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let (connection, channel) = raw().await;
        declare_legacy(&channel, &t).await;
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        for n in 1..=10 {
            publish_confirmed(&channel, &t.exchange(), &t.routing_key(1), format!("shard-{n}").as_bytes())
                .await;
        }
        for n in 1..=3 {
            publish_confirmed(&channel, "", &t.dead_letter_queue(), format!("dead-{n}").as_bytes()).await;
        }

        // This version refuses to run on them, and says what to do.
        let (_probe_connection, probe) = raw().await;
        let error = t.declare(&probe).await.expect_err("legacy arguments are refused");
        assert!(format!("{error}").contains("escalations topology migrate"), "{error}");

        let report = broker::migrate::migrate(&t, &connection).await.expect("migrate");
        let summary: Vec<(String, bool, u64)> =
            report.iter().map(|q| (q.queue.clone(), q.recreated, q.messages)).collect();
        assert_eq!(
            summary,
            [(t.shard_queue(0), true, 0), (t.shard_queue(1), true, 10), (t.dead_letter_queue(), true, 3)]
        );
        // The queues now have the current arguments: an identical declare passes.
        let (_check_connection, check) = raw().await;
        t.declare(&check).await.expect("declare after the migration");
        check
            .queue_declare(
                t.shard_queue(1).as_str().into(),
                QueueDeclareOptions::durable(),
                t.shard_queue_arguments(),
            )
            .await
            .expect("current shard arguments");
        check
            .queue_declare(
                t.dead_letter_queue().as_str().into(),
                QueueDeclareOptions::durable(),
                t.dead_letter_queue_arguments(),
            )
            .await
            .expect("current dead-letter arguments");

        let moved: Vec<Vec<u8>> =
            consume(&check, &t.shard_queue(1), 10).await.into_iter().map(|d| d.data).collect();
        let expected: Vec<Vec<u8>> = (1..=10).map(|n| format!("shard-{n}").into_bytes()).collect();
        assert_eq!(moved, expected, "every message, in order");
        let mut dead = Vec::new();
        while let Some(message) = get_eventually(&check, &t.dead_letter_queue()).await {
            dead.push(message.delivery.data);
            if dead.len() == 3 {
                break;
            }
        }
        let expected: Vec<Vec<u8>> = (1..=3).map(|n| format!("dead-{n}").into_bytes()).collect();
        assert_eq!(dead, expected);
        for queue in [t.shard_queue(0), t.shard_queue(1), t.dead_letter_queue()] {
            let (_c, probe) = raw().await;
            let gone = probe
                .queue_declare(format!("{queue}.migrating").as_str().into(), passive(), FieldTable::default())
                .await
                .expect_err("no holding queue is left");
            assert_eq!(reply_code(&gone), Some(404));
        }

        // Running it again finds nothing to do.
        let again = broker::migrate::migrate(&t, &connection).await.expect("migrate again");
        assert!(again.iter().all(|q| !q.recreated && q.messages == 0), "{again:?}");
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_with_a_consumer_is_not_migrated() {
    let topology = unique_topology(1, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let (connection, channel) = raw().await;
        declare_legacy(&channel, &t).await;
        let _consumer = channel
            .basic_consume(
                t.shard_queue(0).as_str().into(),
                "old-worker".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let (other, _c) = raw().await;
        let error = broker::migrate::migrate(&t, &other).await.expect_err("a worker still consumes");
        assert!(format!("{error}").contains("stop every worker"), "{error}");
        let _ = other.close(200, "OK".into()).await;
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}
