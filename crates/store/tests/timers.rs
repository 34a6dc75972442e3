//! Timer claiming: concurrent pollers never claim the same timer, and a timer
//! re-armed after its claim survives the claimer's delete.

mod support;

use std::collections::HashSet;

use domain::TimerKind;
use store::{ConvKey, claim_due_timers, delete_fired_timer, upsert_timers};
use support::{at, escalation_id, key, with_store};

fn due_timers(n: usize) -> Vec<(ConvKey, domain::EscalationId, TimerKind, chrono::DateTime<chrono::Utc>)> {
    (0..n)
        .map(|i| (key("bot", &format!("conv-{i}")), escalation_id("esc"), TimerKind::Queue, at(i as i64)))
        .collect()
}

#[tokio::test]
async fn two_open_transactions_claim_disjoint_timers() {
    with_store(|store| async move {
        let mut setup = store.client().await.expect("client");
        let tx = setup.transaction().await.expect("begin");
        upsert_timers(&tx, &due_timers(20)).await.expect("arm");
        // One not due yet.
        upsert_timers(&tx, &[(key("bot", "later"), escalation_id("esc"), TimerKind::Ttl, at(10_000))])
            .await
            .expect("arm");
        tx.commit().await.expect("commit");

        let mut first = store.client().await.expect("client");
        let mut second = store.client().await.expect("client");
        let tx1 = first.transaction().await.expect("begin");
        let tx2 = second.transaction().await.expect("begin");
        let claimed1 = claim_due_timers(&tx1, at(100), 8).await.expect("claim");
        // A tokio_postgres transaction works too.
        let claimed2 = claim_due_timers(&*tx2, at(100), 100).await.expect("claim");
        assert_eq!(claimed1.len(), 8);
        assert_eq!(claimed2.len(), 12, "the rest, skipping the locked ones");
        assert_eq!(claimed1[0].due_at, at(0), "earliest first");
        let keys1: HashSet<_> = claimed1.iter().map(|t| t.key.clone()).collect();
        assert!(claimed2.iter().all(|t| !keys1.contains(&t.key)), "never the same timer twice");
        assert!(claimed1.iter().chain(&claimed2).all(|t| t.key.conversation_id.as_str() != "later"));
        tx1.rollback().await.expect("rollback");
        tx2.rollback().await.expect("rollback");
    })
    .await;
}

#[tokio::test]
async fn concurrent_pollers_fire_each_timer_once() {
    with_store(|store| async move {
        let mut setup = store.client().await.expect("client");
        let tx = setup.transaction().await.expect("begin");
        upsert_timers(&tx, &due_timers(200)).await.expect("arm");
        tx.commit().await.expect("commit");

        let pollers: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut fired = Vec::new();
                    loop {
                        let mut client = store.client().await.expect("client");
                        let tx = client.transaction().await.expect("begin");
                        let due = claim_due_timers(&tx, at(1_000), 7).await.expect("claim");
                        if due.is_empty() {
                            return fired;
                        }
                        for timer in &due {
                            assert!(delete_fired_timer(&tx, timer).await.expect("delete"));
                            fired.push(timer.key.clone());
                        }
                        tx.commit().await.expect("commit");
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for poller in pollers {
            all.extend(poller.await.expect("poller"));
        }
        let distinct: HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), 200, "every timer fired");
        assert_eq!(distinct.len(), 200, "none fired twice");
    })
    .await;
}

#[tokio::test]
async fn a_rearmed_timer_survives_the_fired_delete() {
    with_store(|store| async move {
        let a = key("bot", "a");
        let b = key("bot", "b");
        let mut client = store.client().await.expect("client");
        let tx = client.transaction().await.expect("begin");
        upsert_timers(
            &tx,
            &[
                (a.clone(), escalation_id("esc-1"), TimerKind::Idle, at(5)),
                (b.clone(), escalation_id("esc-1"), TimerKind::Idle, at(5)),
            ],
        )
        .await
        .expect("arm");
        tx.commit().await.expect("commit");

        // Claimed (and published) ...
        let tx = client.transaction().await.expect("begin");
        let claimed = claim_due_timers(&tx, at(10), 10).await.expect("claim");
        assert_eq!(claimed.len(), 2);
        tx.commit().await.expect("commit");

        // ... meanwhile `a` is re-armed (a message reset the idle timer) ...
        let tx = client.transaction().await.expect("begin");
        upsert_timers(&tx, &[(a.clone(), escalation_id("esc-1"), TimerKind::Idle, at(1_800))])
            .await
            .expect("rearm");
        tx.commit().await.expect("commit");

        // ... so only `b` is deleted.
        let tx = client.transaction().await.expect("begin");
        for timer in &claimed {
            let deleted = delete_fired_timer(&tx, timer).await.expect("delete");
            assert_eq!(deleted, timer.key == b, "{timer:?}");
        }
        let left = claim_due_timers(&tx, at(10_000), 10).await.expect("claim");
        assert_eq!(left.len(), 1);
        assert_eq!((&left[0].key, left[0].due_at), (&a, at(1_800)));
        tx.commit().await.expect("commit");
    })
    .await;
}
