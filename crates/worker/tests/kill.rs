//! docs/protocol.md §6: "No event that got a 200 is ever lost: not on a worker killed
//! with SIGKILL ... Each is applied exactly once", and "a dead worker's shards
//! move to the others, without breaking per-conversation order". The killed
//! worker is a real process (`worker-proc`), killed with SIGKILL mid-run and
//! restarted.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{TestEnv, amqp_url, database_url, publish_scripts, verify_scripts, with_env};

const SHARDS: u16 = 16;

/// Starts `worker-proc` on the test's prefix and schema, with fast leases.
fn spawn_worker_process(env: &TestEnv) -> Child {
    let settings = &env.settings;
    let mut command = Command::new(env!("CARGO_BIN_EXE_worker-proc"));
    // Only what this test sets: nothing from the caller's environment may
    // point the process at another deployment.
    for (key, _) in std::env::vars() {
        if key.starts_with("ESCALATIONS") {
            command.env_remove(key);
        }
    }
    command
        .env("ESCALATIONS__BROKER__URL", amqp_url())
        .env("ESCALATIONS__BROKER__PREFIX", &settings.broker.prefix)
        .env("ESCALATIONS__BROKER__SHARDS", settings.broker.shards.to_string())
        .env("ESCALATIONS__BROKER__DELIVERY_LIMIT", settings.broker.delivery_limit.to_string())
        .env("ESCALATIONS__BROKER__PREFETCH", settings.broker.prefetch.to_string())
        .env("ESCALATIONS__DATABASE__URL", database_url())
        .env("ESCALATIONS__DATABASE__SCHEMA", &settings.database.schema)
        .env("ESCALATIONS__DATABASE__POOL_SIZE", settings.database.pool_size.to_string())
        .env("ESCALATIONS__WIDGET__TOKEN_SECRET", support::TOKEN)
        .env("ESCALATIONS__WORKER__LEASE_TTL_MS", "3000")
        .env("ESCALATIONS__WORKER__RENEW_EVERY_MS", "300")
        .env("ESCALATIONS__WORKER__DRAIN_DEADLINE_MS", "5000")
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn worker-proc")
}

/// Distinct lease holders with an unexpired lease.
async fn holders(env: &TestEnv) -> i64 {
    env.count("SELECT count(DISTINCT holder) FROM shard_leases WHERE expires_at > now()").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_midway_and_restarted_loses_repeats_and_reorders_nothing() {
    with_env(SHARDS, "", |env| async move {
        let started = Instant::now();
        let (conversations, per) = (1000, 20);
        let a = env.start_worker().await;
        let mut b = spawn_worker_process(&env);
        // References, so the polling closures can copy them into their futures.
        let (env_ref, a_ref) = (&env, &a);
        support::eventually("the process takes half of the shards", Duration::from_secs(20), || async move {
            holders(env_ref).await == 2 && a_ref.shards().len() == usize::from(SHARDS / 2)
        })
        .await;

        let publishing = {
            let env = env.clone();
            tokio::spawn(async move { publish_scripts(&env, conversations, per, 500).await })
        };
        // Kill it with work in flight: a third of the events committed.
        let third = i64::try_from(conversations * per / 3).expect("fits");
        support::eventually("a third of the events committed", Duration::from_secs(60), || async move {
            env_ref.count("SELECT count(*) FROM events").await >= third
        })
        .await;
        b.kill().expect("SIGKILL");
        let status = b.wait().expect("reaped");
        let killed_at = Instant::now();
        eprintln!("killed worker-proc ({status}) after {:?}", started.elapsed());

        // Its leases expire and the in-process worker takes every shard.
        support::until("the survivor takes the dead worker's shards", Duration::from_secs(30), || {
            a.shards().len() == usize::from(SHARDS)
        })
        .await;
        eprintln!("shards moved to the survivor {:?} after the kill", killed_at.elapsed());

        let mut restarted = spawn_worker_process(&env);
        support::eventually(
            "the restarted process takes its share back",
            Duration::from_secs(20),
            || async move { holders(env_ref).await == 2 && a_ref.shards().len() == usize::from(SHARDS / 2) },
        )
        .await;
        publishing.await.expect("publishing");
        let expected = i64::try_from(conversations * per).expect("fits");
        env.wait_for_count("SELECT count(*) FROM events", expected, Duration::from_secs(60)).await;
        verify_scripts(&env, conversations, per).await;
        eprintln!("all {expected} events verified after {:?}", started.elapsed());

        // Graceful stop of the restarted process: SIGTERM, then it releases.
        let terminated =
            Command::new("kill").args(["-TERM", &restarted.id().to_string()]).status().expect("kill -TERM");
        assert!(terminated.success());
        let status = restarted.wait().expect("reaped");
        assert!(status.success(), "worker-proc exits cleanly on SIGTERM: {status}");
        a.stop().await.expect("a stops");
        assert_eq!(env.count("SELECT count(*) FROM shard_leases WHERE holder IS NOT NULL").await, 0);
        assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    })
    .await;
}
