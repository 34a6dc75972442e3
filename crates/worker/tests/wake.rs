//! A worker notifies the webhook dispatcher of its process after a commit
//! that queued webhook deliveries, and only then.

mod support;

use std::time::Duration;

use support::{envelope, escalate, success, until, with_env};
use worker::Worker;

#[tokio::test]
async fn the_dispatcher_is_woken_after_deliveries_are_queued() {
    with_env(1, "", |env| async move {
        // No dispatcher serves it: nothing is claimed at insert, every new head is woken for.
        let handoff = delivery::Handoff::new();
        let wake = handoff.wakes();
        let worker =
            Worker::start(&env.settings, env.worker_config(), Some(handoff.clone())).await.expect("starts");
        until("the worker holds its shard", Duration::from_secs(20), || worker.shards().len() == 1).await;

        // escalate queues widgetEscalate: a wake-up.
        env.publish(&envelope("conv-w", "e-1", escalate("esc-1"))).await;
        tokio::time::timeout(Duration::from_secs(10), wake.notified()).await.expect("woken after escalate");

        // The agent connecting only writes to the widget stream: no wake-up.
        env.publish(&envelope("conv-w", "e-2", success("Ann"))).await;
        env.wait_for_count("SELECT count(*) FROM events", 2, Duration::from_secs(10)).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(500), wake.notified()).await.is_err(),
            "woken by a batch that queued no webhook"
        );
        worker.stop().await.expect("stops");
    })
    .await;
}

#[tokio::test]
async fn dispatchers_of_other_processes_hear_of_queued_deliveries() {
    with_env(1, "", |env| async move {
        // What a dispatcher in another process listens on.
        let mut listener = env.store.listen_outbox().await.expect("listen");
        let worker = env.start_worker().await;
        until("the worker holds its shard", Duration::from_secs(20), || worker.shards().len() == 1).await;

        // escalate queues widgetEscalate: announced after the commit.
        env.publish(&envelope("conv-x", "e-1", escalate("esc-1"))).await;
        let heard = tokio::time::timeout(Duration::from_secs(10), listener.notified()).await;
        assert_eq!(heard.expect("NOTIFY after the commit"), Some(()));
        assert_eq!(
            env.count("SELECT count(*) FROM webhook_deliveries").await,
            1,
            "committed before announced"
        );
        // The agent connecting queues no webhook: nothing is announced.
        env.publish(&envelope("conv-x", "e-2", success("Ann"))).await;
        env.wait_for_count("SELECT count(*) FROM events", 2, Duration::from_secs(10)).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(500), listener.notified()).await.is_err(),
            "announced a batch that queued no webhook"
        );
        worker.stop().await.expect("stops");
    })
    .await;
}
