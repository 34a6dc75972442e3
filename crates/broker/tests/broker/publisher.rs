//! The confirming publisher against the real broker.

use crate::common::{
    amqp_url, consume, header, init_tracing, message, message_count, raw, unique_topology, with_cleanup,
};
use broker::{Error, Publisher, PublisherConfig, Topology, shard_for};
use lapin::types::FieldTable;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

const CONNECT_WITHIN: Duration = Duration::from_secs(15);

async fn connected_publisher(topology: &Topology) -> Publisher {
    let publisher = Publisher::connect(PublisherConfig::new(amqp_url(), topology.clone()));
    assert!(publisher.wait_until_connected(CONNECT_WITHIN).await, "publisher must connect");
    assert!(publisher.is_connected());
    publisher
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_message_lands_in_its_shard_queue_with_properties() {
    let topology = unique_topology(8, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let publisher = connected_publisher(&t).await;
        let msg = message(&t, "bot-42", "conv-7", 1);
        publisher.publish(&msg).await.expect("publish");

        let (connection, channel) = raw().await;
        for shard in 0..t.shards {
            let expected = u32::from(shard == msg.shard);
            assert_eq!(message_count(&channel, &t.shard_queue(shard)).await, expected, "shard {shard}");
        }
        let got = consume(&channel, &t.shard_queue(msg.shard), 1).await;
        let d = &got[0];
        assert_eq!(d.data, msg.body);
        assert_eq!(d.exchange.as_str(), t.exchange());
        assert_eq!(d.routing_key.as_str(), t.routing_key(msg.shard));
        let p = &d.properties;
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some(msg.event_id.as_str()));
        assert_eq!(p.timestamp(), &Some(u64::try_from(msg.received_at.timestamp()).expect("after 1970")));
        assert_eq!(header(d, "bot-id").as_deref(), Some("bot-42"));
        assert_eq!(header(d, "conversation-id").as_deref(), Some("conv-7"));
        assert_eq!(header(d, "event-type").as_deref(), Some("message"));
        let received_at = header(d, "received-at").expect("received-at");
        assert_eq!(chrono::DateTime::parse_from_rfc3339(&received_at).expect("RFC 3339"), msg.received_at);

        publisher.shutdown().await;
        assert!(!publisher.is_connected());
        assert!(matches!(publisher.publish(&msg).await, Err(Error::Unavailable)));
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test]
async fn unreachable_broker_means_unavailable_immediately() {
    // Nothing listens on port 1: the broker is "down" without touching the
    // real one, which other tests and crates share.
    init_tracing();
    let topology = Topology::new("test-unreachable", 4, 5);
    let publisher = Publisher::connect(PublisherConfig::new("amqp://127.0.0.1:1/%2f", topology.clone()));
    let msg = message(&topology, "bot", "conv", 1);

    let started = Instant::now();
    let outcome = publisher.publish(&msg).await;
    let elapsed = started.elapsed();
    assert!(matches!(outcome, Err(Error::Unavailable)), "{outcome:?}");
    assert!(elapsed < Duration::from_millis(50), "took {elapsed:?}");
    assert!(!publisher.is_connected());

    // Still unavailable (and still fast) while it keeps retrying in the background.
    assert!(!publisher.wait_until_connected(Duration::from_millis(700)).await);
    let started = Instant::now();
    assert!(matches!(publisher.publish(&msg).await, Err(Error::Unavailable)));
    assert!(started.elapsed() < Duration::from_millis(50));

    let started = Instant::now();
    publisher.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(1), "shutdown must not wait for the backoff");
}

#[tokio::test]
async fn unroutable_message_is_reported_as_returned() {
    let topology = unique_topology(2, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let publisher = connected_publisher(&t).await;
        let msg = message(&t, "bot", "conv-returned", 1);
        // Damage the topology behind the publisher's back.
        let (connection, channel) = raw().await;
        channel
            .queue_unbind(
                t.shard_queue(msg.shard).as_str().into(),
                t.exchange().as_str().into(),
                t.routing_key(msg.shard).as_str().into(),
                FieldTable::default(),
            )
            .await
            .expect("unbind");

        match publisher.publish(&msg).await {
            Err(Error::Returned { reply_code, reply_text }) => {
                assert_eq!(reply_code, 312, "{reply_text}");
                assert_eq!(reply_text, "NO_ROUTE");
            }
            other => panic!("expected Returned, got {other:?}"),
        }
        // A return is not a connection problem.
        assert!(publisher.is_connected());
        publisher.shutdown().await;
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test]
async fn wrong_shard_is_a_caller_error() {
    let topology = unique_topology(4, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let publisher = connected_publisher(&t).await;
        let mut msg = message(&t, "bot", "conv", 1);
        msg.shard = (msg.shard + 1) % t.shards;
        let outcome = publisher.publish(&msg).await;
        assert!(matches!(outcome, Err(Error::InvalidMessage(_))), "{outcome:?}");
        msg.shard = t.shards;
        let outcome = publisher.publish(&msg).await;
        assert!(matches!(outcome, Err(Error::InvalidMessage(_))), "{outcome:?}");
        let mut msg = message(&t, "bot", "conv", 1);
        msg.event_id = "x".repeat(256);
        let outcome = publisher.publish(&msg).await;
        assert!(matches!(outcome, Err(Error::InvalidMessage(_))), "{outcome:?}");
        // Caller errors say nothing about the broker.
        assert!(publisher.is_connected());
        publisher.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_the_broker_closes_its_channel() {
    let topology = unique_topology(2, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let publisher = connected_publisher(&t).await;
        // Publishing to a deleted exchange makes the broker close the channel
        // (404): the publisher must notice, rebuild and re-declare.
        let (connection, channel) = raw().await;
        channel
            .exchange_delete(t.exchange().as_str().into(), Default::default())
            .await
            .expect("delete exchange");
        let msg = message(&t, "bot", "conv-recover", 1);
        match publisher.publish(&msg).await {
            Err(Error::Channel(_) | Error::Unavailable) => {}
            other => panic!("expected a channel error, got {other:?}"),
        }

        let started = Instant::now();
        assert!(publisher.wait_until_connected(CONNECT_WITHIN).await, "must reconnect");
        eprintln!("reconnected in {:?}", started.elapsed());
        let msg = message(&t, "bot", "conv-recover", 2);
        publisher.publish(&msg).await.expect("publish after recovery");
        assert_eq!(message_count(&channel, &t.shard_queue(msg.shard)).await, 1);
        publisher.shutdown().await;
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_publishes_of_one_conversation_arrive_in_order() {
    const N: usize = 1_000;
    let topology = unique_topology(4, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let publisher = connected_publisher(&t).await;
        let started = Instant::now();
        for n in 0..N {
            publisher.publish(&message(&t, "bot", "conv-ordered", n)).await.expect("publish");
        }
        eprintln!("{N} sequential publishes: {:?}", started.elapsed());

        let shard = shard_for("bot", "conv-ordered", t.shards);
        let (connection, channel) = raw().await;
        let got = consume(&channel, &t.shard_queue(shard), N).await;
        let order: Vec<String> = got.iter().map(|d| String::from_utf8_lossy(&d.data).into_owned()).collect();
        let expected: Vec<String> = (0..N).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
        assert_eq!(order, expected);
        publisher.shutdown().await;
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_are_pipelined() {
    const N: usize = 2_000;
    let topology = unique_topology(8, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let publisher = Arc::new(connected_publisher(&t).await);
        let batch = |name: &str| -> Vec<_> {
            (0..N).map(|n| message(&t, "bot", &format!("{name}-{}", n % 50), n)).collect()
        };

        // join_all: 2,000 publishes in flight at once from one task.
        let joined = batch("joined");
        let started = Instant::now();
        let outcomes = futures::future::join_all(joined.iter().map(|m| publisher.publish(m))).await;
        eprintln!("{N} concurrent publishes (join_all) confirmed in {:?}", started.elapsed());
        let failures: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
        assert!(failures.is_empty(), "{} failed, e.g. {:?}", failures.len(), failures.first());

        // Spawned: the same from tasks on both worker threads, so publishes
        // really race each other on the shared channels.
        let spawned = batch("spawned");
        let started = Instant::now();
        let tasks: Vec<_> = spawned
            .iter()
            .cloned()
            .map(|m| {
                let publisher = publisher.clone();
                tokio::spawn(async move { publisher.publish(&m).await })
            })
            .collect();
        for task in futures::future::join_all(tasks).await {
            task.expect("task").expect("publish");
        }
        eprintln!("{N} concurrent publishes (spawned) confirmed in {:?}", started.elapsed());

        let (connection, channel) = raw().await;
        let mut total = 0;
        for shard in 0..t.shards {
            let expected = joined.iter().chain(&spawned).filter(|m| m.shard == shard).count();
            let count = message_count(&channel, &t.shard_queue(shard)).await as usize;
            assert_eq!(count, expected, "shard {shard}");
            total += count;
        }
        assert_eq!(total, 2 * N);
        publisher.shutdown().await;
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

/// Close the publisher's own connection from the broker side (as a broker
/// restart or an operator would), without stopping the shared broker. Needs
/// `rabbitmqctl` on this machine (as every test environment of ours has).
fn force_close_connection(connection_name: &str) -> bool {
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "pid", "client_properties"])
        .output();
    let Ok(listed) = listed.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()) else {
        return false;
    };
    let pids: Vec<&str> = listed
        .lines()
        .filter(|line| line.contains(connection_name))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    !pids.is_empty()
        && pids.iter().all(|pid| {
            std::process::Command::new("rabbitmqctl")
                .args(["close_connection", pid, "test: forced close"])
                .status()
                .is_ok_and(|s| s.success())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_broker_closes_the_connection() {
    let topology = unique_topology(2, 5);
    let t = topology.clone();
    with_cleanup(&topology, async move {
        let publisher = connected_publisher(&t).await;
        // The broker may list a new connection a moment after it opened.
        let name = format!("{}-publisher", t.prefix);
        let listed_by = Instant::now() + Duration::from_secs(10);
        while !force_close_connection(&name) {
            assert!(Instant::now() < listed_by, "rabbitmqctl could not close the connection {name}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let started = Instant::now();
        while publisher.is_connected() && started.elapsed() < CONNECT_WITHIN {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!publisher.is_connected(), "loss must be noticed");

        assert!(publisher.wait_until_connected(CONNECT_WITHIN).await, "must reconnect");
        eprintln!("reconnected {:?} after the forced close", started.elapsed());
        let msg = message(&t, "bot", "conv-forced", 1);
        publisher.publish(&msg).await.expect("publish after reconnect");
        publisher.shutdown().await;
    })
    .await;
}
