//! The shard consumer against the real broker.

use crate::common::{amqp_url, get_eventually, message, message_count, raw, unique_topology, with_cleanup};
use broker::{Delivery, Publisher, PublisherConfig, ShardConsumer, Topology};
use lapin::Connection;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// Publishes `n` messages of one conversation (so one shard), in order, and
/// returns that shard.
async fn publish_conversation(topology: &Topology, conversation: &str, n: usize) -> u16 {
    let publisher = Publisher::connect(PublisherConfig::new(amqp_url(), topology.clone()));
    assert!(publisher.wait_until_connected(WAIT).await, "publisher must connect");
    let mut shard = 0;
    for i in 1..=n {
        let msg = message(topology, "bot", conversation, i);
        shard = msg.shard;
        publisher.publish(&msg).await.expect("publish");
    }
    publisher.shutdown().await;
    shard
}

async fn next(consumer: &mut ShardConsumer) -> Delivery {
    tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("a delivery within the deadline")
        .expect("consumer still open")
        .expect("delivery")
}

fn numbers(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| String::from_utf8_lossy(&d.body).into_owned()).collect()
}

fn expected(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|n| format!(r#"{{"n":{n}}}"#)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_come_in_order_and_ack_through_settles_them() {
    let topology = unique_topology(4, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let shard = publish_conversation(&t, "conv-1", 10).await;
        let (connection, channel) = raw().await;
        let mut consumer = ShardConsumer::start(&connection, &t, shard, 50, "c-1").await.expect("start");
        assert_eq!(consumer.shard(), shard);
        assert_eq!(consumer.queue(), t.shard_queue(shard));

        let mut got = vec![next(&mut consumer).await];
        // Everything else arrives right behind the first; try_next drains it
        // without waiting.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Some(delivery) = consumer.try_next() {
            got.push(delivery.expect("delivery"));
        }
        assert_eq!(numbers(&got), expected(1..=10));
        assert!(consumer.try_next().is_none(), "nothing more buffered");
        let first = &got[0];
        assert_eq!(first.message_id.as_deref(), Some("evt-conv-1-1"));
        assert!(!first.redelivered);
        assert!(got.windows(2).all(|w| w[0].tag < w[1].tag), "tags increase");

        consumer.ack_through(got[9].tag).await.expect("ack");
        consumer.close().await.expect("close");
        // Acked means gone: nothing comes back after the channel closed.
        assert_eq!(message_count(&channel, &t.shard_queue(shard)).await, 0);
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_deliveries_return_in_order_and_reject_dead_letters() {
    let topology = unique_topology(4, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let shard = publish_conversation(&t, "conv-2", 6).await;
        let (connection, channel) = raw().await;
        let mut consumer = ShardConsumer::start(&connection, &t, shard, 50, "c-1").await.expect("start");
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(next(&mut consumer).await);
        }
        // 1–2 committed, 3 is poison, 4–6 still in flight when we stop.
        consumer.ack_through(got[1].tag).await.expect("ack");
        consumer.reject(got[2].tag).await.expect("reject");
        consumer.close().await.expect("close");

        let dead = get_eventually(&channel, &t.dead_letter_queue()).await.expect("dead-lettered");
        assert_eq!(dead.delivery.data, br#"{"n":3}"#);

        // The next consumer gets exactly the unsettled ones, in order, marked redelivered.
        let mut again = ShardConsumer::start(&connection, &t, shard, 50, "c-2").await.expect("start");
        let mut redelivered = Vec::new();
        for _ in 0..3 {
            redelivered.push(next(&mut again).await);
        }
        assert_eq!(numbers(&redelivered), expected(4..=6));
        assert!(redelivered.iter().all(|d| d.redelivered));

        // requeue gives one back; it comes again, after nothing else.
        again.requeue(redelivered[2].tag).await.expect("requeue");
        again.ack_through(redelivered[1].tag).await.expect("ack");
        let last = next(&mut again).await;
        assert_eq!(numbers(std::slice::from_ref(&last)), expected(6..=6));
        again.ack_through(last.tag).await.expect("ack");
        again.close().await.expect("close");
        assert_eq!(message_count(&channel, &t.shard_queue(shard)).await, 0);
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_takes_over_at_cancel_with_the_unacked_first() {
    let topology = unique_topology(2, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let shard = publish_conversation(&t, "conv-3", 8).await;
        let connection_a =
            Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.expect("connect");
        let (connection_b, channel) = raw().await;

        // Prefetch 3: A holds 1–3, the queue keeps 4–8.
        let mut a = ShardConsumer::start(&connection_a, &t, shard, 3, "worker-a").await.expect("start a");
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(next(&mut a).await);
        }
        let mut b = ShardConsumer::start(&connection_b, &t, shard, 50, "worker-b").await.expect("start b");
        assert!(
            tokio::time::timeout(Duration::from_millis(500), b.next()).await.is_err(),
            "single active consumer: B idles while A is active"
        );

        // A committed 1 and stops with 2–3 unsettled: they come back first.
        a.ack_through(held[0].tag).await.expect("ack");
        a.close().await.expect("close");
        let mut rest = Vec::new();
        for _ in 0..7 {
            rest.push(next(&mut b).await);
        }
        assert_eq!(numbers(&rest), expected(2..=8));
        // 2–3 were A's; so may be 4, sent to A when its ack freed a slot.
        let redelivered: Vec<bool> = rest.iter().map(|d| d.redelivered).collect();
        assert!(redelivered[..2].iter().all(|r| *r), "{redelivered:?}");
        assert!(redelivered.windows(2).all(|w| w[0] || !w[1]), "returned ones come first: {redelivered:?}");
        b.ack_through(rest[6].tag).await.expect("ack");
        b.close().await.expect("close");
        assert_eq!(message_count(&channel, &t.shard_queue(shard)).await, 0);
        let _ = connection_a.close(200, "OK".into()).await;
        let _ = connection_b.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consuming_a_missing_queue_is_an_error_naming_it() {
    let topology = unique_topology(1, 5);
    // Not declared.
    let (connection, _channel) = raw().await;
    let error = ShardConsumer::start(&connection, &topology, 0, 10, "c").await.expect_err("no queue");
    let text = error.to_string();
    assert!(text.contains(&topology.shard_queue(0)), "{text}");
    let _ = connection.close(200, "OK".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_consumer_task_closes_its_channel_so_the_unacked_come_back_first() {
    let topology = unique_topology(2, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let shard = publish_conversation(&t, "conv-4", 8).await;
        // A's connection outlives A's task: only the consumer's own drop
        // decides how its channel goes away.
        let connection_a = std::sync::Arc::new(
            Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.expect("connect"),
        );
        let (connection_b, channel) = raw().await;

        // A takes 1–3 (prefetch 3) and is mid-batch when its task is aborted.
        let (holding, held) = tokio::sync::oneshot::channel();
        let (conn, topo) = (connection_a.clone(), t.clone());
        let task = tokio::spawn(async move {
            let mut a = ShardConsumer::start(&conn, &topo, shard, 3, "worker-a").await.expect("start a");
            for _ in 0..3 {
                next(&mut a).await;
            }
            holding.send(()).expect("test waits");
            std::future::pending::<()>().await;
            drop(a);
        });
        held.await.expect("A holds three");
        let mut b = ShardConsumer::start(&connection_b, &t, shard, 50, "worker-b").await.expect("start b");
        assert!(
            tokio::time::timeout(Duration::from_millis(500), b.next()).await.is_err(),
            "single active consumer: B idles while A is active"
        );
        task.abort();
        assert!(task.await.expect_err("aborted").is_cancelled());

        // A bare basic.cancel would activate B while A still held 1–3, and
        // B would get 4–8 first. The closed channel returns 1–3 first.
        let mut all = Vec::new();
        for _ in 0..8 {
            all.push(next(&mut b).await);
        }
        assert_eq!(numbers(&all), expected(1..=8), "A's unacked come back ahead of the rest");
        assert!(all[..3].iter().all(|d| d.redelivered));
        b.ack_through(all[7].tag).await.expect("ack");
        b.close().await.expect("close");
        assert_eq!(message_count(&channel, &t.shard_queue(shard)).await, 0);
        let _ = connection_a.close(200, "OK".into()).await;
        let _ = connection_b.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_never_dead_letter_a_message() {
    // The configured limit (5) is what earlier versions gave the broker.
    let topology = unique_topology(1, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let shard = publish_conversation(&t, "conv-5", 1).await;
        let (connection, channel) = raw().await;
        // A worker killed with the message prefetched, eight times over.
        for round in 0..8 {
            let mut consumer = ShardConsumer::start(&connection, &t, shard, 10, &format!("killed-{round}"))
                .await
                .expect("start");
            let delivery = next(&mut consumer).await;
            assert_eq!(numbers(std::slice::from_ref(&delivery)), expected(1..=1), "round {round}");
            consumer.close().await.expect("close without settling");
        }
        let mut consumer = ShardConsumer::start(&connection, &t, shard, 10, "survivor").await.expect("start");
        let delivery = next(&mut consumer).await;
        assert_eq!(numbers(std::slice::from_ref(&delivery)), expected(1..=1));
        consumer.ack_through(delivery.tag).await.expect("ack");
        consumer.close().await.expect("close");
        assert_eq!(message_count(&channel, &t.dead_letter_queue()).await, 0, "nothing dead-lettered");
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}
