//! Faults short of a crash: a lease taken away, a store that fails
//! transiently. Nothing is lost, repeated or reordered.

mod support;

use std::time::Duration;

use support::{envelope, escalate, success, until, verify_scripts, with_env};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_its_shard_until_the_lease_comes_back() {
    with_env(4, "", |env| async move {
        let worker = env.start_worker().await;
        until("the worker holds every shard", WAIT, || worker.shards().len() == 4).await;

        // Another holder appears (as after an expiry the worker missed).
        let conversation = (0..)
            .map(|i| format!("lost-{i}"))
            .find(|c| broker::shard_for(support::BOT, c, 4) == 0)
            .expect("some conversation lands on shard 0");
        env.rows(
            "UPDATE shard_leases SET holder = 'ghost', expires_at = now() + interval '1 hour' WHERE shard = 0",
        )
        .await;
        until("the worker lets shard 0 go", WAIT, || worker.shards() == [1, 2, 3]).await;
        env.publish(&envelope(&conversation, "l1", escalate("esc-l"))).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(env.count("SELECT count(*) FROM events").await, 0, "nobody consumes shard 0");

        // The ghost goes away: the worker takes the shard back and catches up.
        env.rows("UPDATE shard_leases SET holder = NULL, expires_at = NULL WHERE shard = 0").await;
        until("the worker takes shard 0 back", WAIT, || worker.shards().len() == 4).await;
        env.wait_for_count("SELECT count(*) FROM events", 1, WAIT).await;
        worker.stop().await.expect("stops");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_failing_transiently_are_retried_until_they_commit() {
    with_env(2, "", |env| async move {
        let worker = env.start_worker().await;
        until("the worker holds every shard", WAIT, || worker.shards().len() == 2).await;

        // Block the batches on a table lock, then cancel the waiting
        // statements: SQLSTATE 57014, a transient error for the worker.
        let mut client = env.store.client().await.expect("client");
        let lock = client.transaction().await.expect("begin");
        lock.batch_execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE").await.expect("lock");
        let schema = env.store.schema().to_owned();
        let publishing = {
            let env = env.clone();
            tokio::spawn(async move { support::publish_scripts(&env, 20, 6, 20).await })
        };
        let waiting = format!(
            "SELECT pid FROM pg_locks WHERE NOT granted AND relation = '\"{schema}\".events'::regclass"
        );
        let mut cancelled = 0;
        for _ in 0..100 {
            let pids: Vec<i32> = env.rows(&waiting).await.iter().map(|row| row.get(0)).collect();
            for pid in pids {
                env.rows(&format!("SELECT pg_cancel_backend({pid})")).await;
                cancelled += 1;
            }
            if cancelled >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(cancelled >= 3, "batches were waiting on the lock and got cancelled");
        lock.rollback().await.expect("unlock");
        drop(client);

        publishing.await.expect("publishing");
        env.wait_for_count("SELECT count(*) FROM events", 20 * 6, WAIT).await;
        verify_scripts(&env, 20, 6).await;
        // One more event on top: the shard tasks are still alive.
        env.publish(&envelope("conv-00000", "after", success("Bob"))).await;
        env.wait_for_count("SELECT count(*) FROM events", 20 * 6 + 1, WAIT).await;
        worker.stop().await.expect("stops");
    })
    .await;
}
