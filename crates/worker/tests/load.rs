//! Many conversations through several in-process workers (docs/protocol.md §6): every
//! conversation's effects in order, none missing, none twice — also while a
//! worker joins and leaves mid-run.

mod support;

use std::time::{Duration, Instant};

use support::{TestEnv, publish_scripts, verify_scripts, with_env};

const SHARDS: u16 = 16;

async fn wait_for_all_events(env: &TestEnv, conversations: usize, per: usize) {
    let expected = i64::try_from(conversations * per).expect("fits");
    env.wait_for_count("SELECT count(*) FROM events", expected, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_apply_1000_conversations_of_20_events_in_order() {
    with_env(SHARDS, "", |env| async move {
        let (conversations, per) = (1000, 20);
        let a = env.start_worker().await;
        let b = env.start_worker().await;
        let started = Instant::now();
        publish_scripts(&env, conversations, per, 500).await;
        let published = started.elapsed();
        wait_for_all_events(&env, conversations, per).await;
        eprintln!(
            "{} events: published in {published:?}, all committed after {:?}",
            conversations * per,
            started.elapsed()
        );
        // Both took part: the shards are split between them.
        let (held_a, held_b) = (a.shards(), b.shards());
        assert!(!held_a.is_empty() && !held_b.is_empty(), "{held_a:?} / {held_b:?}");
        assert_eq!(held_a.len() + held_b.len(), usize::from(SHARDS));
        verify_scripts(&env, conversations, per).await;
        a.stop().await.expect("a stops");
        b.stop().await.expect("b stops");
        assert_eq!(env.count("SELECT count(*) FROM shard_leases WHERE holder IS NOT NULL").await, 0);
        assert_eq!(env.count("SELECT count(*) FROM workers").await, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_worker_takes_a_share_and_gives_it_back_without_breaking_order() {
    with_env(SHARDS, "", |env| async move {
        let (conversations, per) = (400, 20);
        let a = env.start_worker().await;
        let b = env.start_worker().await;
        support::until("two workers split the shards", Duration::from_secs(10), || {
            a.shards().len() + b.shards().len() == usize::from(SHARDS) && !b.shards().is_empty()
        })
        .await;

        // Publish in three waves: the third worker joins after the first
        // and leaves after the second, each time with traffic in flight.
        let publishing = {
            let env = env.clone();
            tokio::spawn(async move {
                use futures::StreamExt;
                futures::stream::iter(0..conversations)
                    .for_each_concurrent(100, |i| {
                        let env = env.clone();
                        async move {
                            // Later waves start later, so the run spans the join and the leave.
                            let wave = u64::try_from(i * 3 / conversations).expect("fits");
                            tokio::time::sleep(Duration::from_millis(1500 * wave)).await;
                            for envelope in support::script(&support::conversation_name(i), per) {
                                env.publish(&envelope).await;
                            }
                        }
                    })
                    .await;
            })
        };
        tokio::time::sleep(Duration::from_millis(700)).await;
        let c = env.start_worker().await;
        support::until("the third worker takes its share", Duration::from_secs(15), || c.shards().len() >= 4)
            .await;
        let (held_a, held_b, held_c) = (a.shards(), b.shards(), c.shards());
        eprintln!("three workers: {held_a:?} / {held_b:?} / {held_c:?}");
        assert!(held_a.len() <= 6 && held_b.len() <= 6, "fair share is ceil(16 / 3) = 6");

        tokio::time::sleep(Duration::from_millis(1500)).await;
        c.stop().await.expect("c stops");
        support::until("the others take its shards back", Duration::from_secs(15), || {
            a.shards().len() + b.shards().len() == usize::from(SHARDS)
        })
        .await;
        publishing.await.expect("publishing");
        wait_for_all_events(&env, conversations, per).await;
        verify_scripts(&env, conversations, per).await;
        a.stop().await.expect("a stops");
        b.stop().await.expect("b stops");
    })
    .await;
}
