//! What keeps a worker from acting on a shard it may no longer own, and
//! from the broker deciding what is poison: the lease fence in the batch
//! transaction, the countdown that stops consuming before a lease can
//! expire, giving up shards it cannot consume, waiting for PostgreSQL at
//! start-up, and redeliveries that never dead-letter.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use support::proxy::{Proxy, free_port};
use support::{BOT, TestEnv, database_url, envelope, escalate, until, with_env};
use worker::{BotRules, Worker, WorkerConfig, apply_fenced};

const WAIT: Duration = Duration::from_secs(20);

fn conversation_on(shard: u16, shards: u16) -> String {
    (0..).map(|i| format!("conv-{i}")).find(|c| broker::shard_for(BOT, c, shards) == shard).expect("some")
}

async fn raw() -> (lapin::Connection, lapin::Channel) {
    let connection = lapin::Connection::connect(&support::amqp_url(), lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

/// `(ready messages, consumers)` of a queue.
async fn queue_state(channel: &lapin::Channel, queue: &str) -> (u32, u32) {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("queue exists");
    (q.message_count(), q.consumer_count())
}

async fn consumers(env: &TestEnv, channel: &lapin::Channel) -> u32 {
    let mut total = 0;
    for shard in 0..env.topology.shards {
        total += queue_state(channel, &env.topology.shard_queue(shard)).await.1;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_under_a_lost_lease_commits_nothing() {
    with_env(1, "", |env| async move {
        env.store.ensure_shards(1).await.expect("shards");
        let held = env.store.acquire_leases_with_epochs("w1", 1, WAIT).await.expect("acquire");
        assert_eq!(held, [(0, 1)]);
        let batches =
            store::Store::connect_for_batches(&database_url(), env.store.schema(), 2).expect("store");
        let rules = BotRules::from_settings(&env.settings);
        let batch = [envelope("conv-1", "e1", escalate("esc-1"))];
        let now = chrono::Utc::now();

        for (what, fence) in [
            ("a stale epoch", store::LeaseFence { worker_id: "w1".into(), shard: 0, epoch: 0 }),
            ("another worker", store::LeaseFence { worker_id: "w2".into(), shard: 0, epoch: 1 }),
        ] {
            let refused = apply_fenced(&batches, &rules, &batch, now, Some(&fence)).await;
            assert!(matches!(refused, Err(store::Error::LeaseLost { .. })), "{what}: {refused:?}");
        }
        assert_eq!(env.count("SELECT count(*) FROM events").await, 0, "nothing committed");
        assert_eq!(env.count("SELECT count(*) FROM conversations").await, 0, "nothing committed");

        let fence = store::LeaseFence { worker_id: "w1".into(), shard: 0, epoch: 1 };
        apply_fenced(&batches, &rules, &batch, now, Some(&fence)).await.expect("the holder commits");
        assert_eq!(env.count("SELECT count(*) FROM events").await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_postgres_stops_consuming_before_its_leases_can_expire() {
    with_env(2, "", |env| async move {
        let proxy = Proxy::start(0, &database_url()).await;
        let mut settings = env.settings.clone();
        settings.database.url = proxy.url(&database_url());
        let ttl = Duration::from_secs(4);
        let config =
            WorkerConfig { lease_ttl: ttl, renew_every: Duration::from_millis(400), ..env.worker_config() };
        let worker = Worker::start(&settings, config, None).await.expect("starts");
        until("the worker holds both shards", WAIT, || worker.shards().len() == 2).await;
        let (connection, channel) = raw().await;
        support::eventually("both shards consumed", WAIT, || async { consumers(&env, &channel).await == 2 })
            .await;

        // No renewal can succeed from now on; the worker must not wait for
        // one to fail to notice: its leases end `ttl` after the last one.
        let cut = Instant::now();
        proxy.cut();
        support::eventually("every shard channel closed", ttl, || async {
            consumers(&env, &channel).await == 0
        })
        .await;
        assert!(cut.elapsed() < ttl, "stopped {:?} after the cut, the lease lasts {ttl:?}", cut.elapsed());
        until("no shard is reported held", WAIT, || worker.shards().is_empty()).await;
        worker.stop().await.expect("stops");
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_reach_the_broker_leaves_its_shards_to_one_that_can() {
    with_env(2, "", |env| async move {
        let mut unreachable = env.settings.clone();
        unreachable.broker.url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
        let cut_off = Worker::start(&unreachable, env.worker_config(), None).await.expect("starts");
        until("the cut-off worker takes both shards", WAIT, || cut_off.shards().len() == 2).await;

        let healthy = env.start_worker().await;
        for shard in 0..2 {
            let conversation = conversation_on(shard, 2);
            env.publish(&envelope(&conversation, &format!("e{shard}"), escalate(&format!("esc-{shard}"))))
                .await;
        }
        // Without giving up, the cut-off worker keeps renewing both leases
        // (its fair share is one, the healthy worker's too) and nothing
        // ever consumes them.
        env.wait_for_count("SELECT count(*) FROM events", 2, WAIT).await;
        assert_eq!(healthy.shards(), [0, 1], "the healthy worker consumes both");
        assert!(cut_off.shards().is_empty(), "the cut-off worker holds nothing");
        healthy.stop().await.expect("stops");
        cut_off.stop().await.expect("stops");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_while_postgres_is_down_waits_for_it() {
    with_env(1, "", |env| async move {
        let port = free_port();
        let mut settings = env.settings.clone();
        settings.database.url = support::proxy::via_port(&database_url(), port);
        let mut worker =
            Worker::start(&settings, env.worker_config(), None).await.expect("starts without PostgreSQL");
        let waited = tokio::time::timeout(Duration::from_secs(2), worker.wait()).await;
        assert!(waited.is_err(), "the worker keeps waiting rather than ending: {waited:?}");
        assert!(worker.shards().is_empty());

        let _proxy = Proxy::start(port, &database_url()).await;
        until("the worker takes the shard once PostgreSQL answers", WAIT, || worker.shards() == [0]).await;
        env.publish(&envelope("conv-1", "e1", escalate("esc-1"))).await;
        env.wait_for_count("SELECT count(*) FROM events", 1, WAIT).await;
        worker.stop().await.expect("stops");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_never_dead_letter_an_event_and_it_is_applied_once() {
    with_env(1, "", |env| async move {
        env.publish(&envelope("conv-1", "e1", escalate("esc-1"))).await;
        let queue = env.topology.shard_queue(0);
        let (connection, channel) = raw().await;
        // Eight workers killed with the event prefetched: more than the
        // delivery limit (5) earlier versions gave the broker.
        for round in 0..8 {
            let killed = connection.create_channel().await.expect("channel");
            let mut consumer = killed
                .basic_consume(
                    queue.as_str().into(),
                    format!("killed-{round}").as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consume");
            let delivery =
                tokio::time::timeout(WAIT, consumer.next()).await.expect("delivered").expect("open");
            assert!(delivery.is_ok(), "round {round}");
            killed.close(200, "OK".into()).await.expect("close without settling");
        }

        let worker = env.start_worker().await;
        env.wait_for_count("SELECT count(*) FROM events WHERE verdict = 'applied'", 1, WAIT).await;
        worker.stop().await.expect("stops");
        assert_eq!(env.count("SELECT count(*) FROM events").await, 1, "applied once");
        assert_eq!(queue_state(&channel, &queue).await.0, 0, "settled");
        assert_eq!(
            queue_state(&channel, &env.topology.dead_letter_queue()).await.0,
            0,
            "nothing dead-lettered"
        );
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}
