//! A delivery that runs out of budget is a dead letter with its attempts,
//! and does not block the conversation; a replay delivers the dead letters
//! with their original `webhook-id`, in sequence order.

use std::time::Duration;

use chrono::Utc;
use delivery::webhook_id;
use store::{DeadLetterFilter, DeadReason};

use crate::support::{
    Receiver, Reply, bot, eventually, fast_config, insert, key, message, secret, settings, start, statuses,
    with_store,
};

#[tokio::test]
async fn out_of_budget_is_dead_lettered_and_replayed_in_order() {
    with_store(|store| async move {
        let receiver = Receiver::start().await;
        // Sequences 1 and 3 fail until replayed; 2 and 4 go through.
        receiver.respond(|_, _, body| {
            let sequence =
                serde_json::from_slice::<serde_json::Value>(body).expect("json")["data"]["sequence"]
                    .as_u64()
                    .unwrap_or_default();
            Reply::status(if sequence % 2 == 1 { 503 } else { 200 })
        });
        let mut settings = settings(vec![bot("budget", &receiver.url(), &[secret(1)])]);
        settings.defaults.delivery_budget_secs = 1;
        let running = start(&settings, &store, None, fast_config());
        let conv = key("budget", "conv-1");
        insert(&store, &(1..=4).map(|s| (conv.clone(), message(s, "x"))).collect::<Vec<_>>()).await;

        eventually(Duration::from_secs(15), "1 and 3 dead, 2 and 4 delivered", || async {
            statuses(&store, &conv).await == ["dead", "delivered", "dead", "delivered"]
        })
        .await;

        let dead = store.list_dead_letters(&DeadLetterFilter::default(), 100).await.expect("list");
        assert_eq!(dead.iter().map(|d| d.sequence).collect::<Vec<_>>(), [1, 3]);
        for letter in &dead {
            assert_eq!(letter.reason, Some(DeadReason::OutOfBudget));
            assert!(letter.dead_at.is_some());
            assert_eq!(letter.last_error.as_deref(), Some("HTTP 503 Service Unavailable"));
            let attempts = store.delivery_attempts(letter.id).await.expect("attempts");
            assert!(attempts.len() >= 3, "several attempts within the budget: {attempts:?}");
            assert_eq!(attempts.len() as u32, letter.attempts);
            assert!(attempts.iter().all(|a| a.status_code == Some(503) && a.latency_ms.is_some()));
            assert_eq!(
                attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
                (1..=attempts.len() as u32).collect::<Vec<_>>()
            );
        }
        let by_sequence = |s: u64| receiver.received().into_iter().filter(move |r| r.sequence() == s);
        assert!(by_sequence(1).all(|r| r.id() == webhook_id("budget", "conv-1", 1)));

        // The receiver is fixed; the operator replays the conversation's dead letters.
        receiver.always(200);
        let before = receiver.count();
        let ids: Vec<i64> = dead.iter().map(|d| d.id).collect();
        assert_eq!(store.replay_dead_letters(&ids, Utc::now()).await.expect("replay"), 2);
        eventually(Duration::from_secs(10), "replayed", || async {
            statuses(&store, &conv).await.iter().all(|s| s == "delivered")
        })
        .await;
        running.stop().await;
        let replayed: Vec<_> = receiver.received().into_iter().skip(before).collect();
        assert_eq!(
            replayed.iter().map(|r| r.sequence()).collect::<Vec<_>>(),
            [1, 3],
            "in sequence order, once each"
        );
        assert_eq!(replayed[0].id(), webhook_id("budget", "conv-1", 1), "the same webhook-id as before");
        assert_eq!(replayed[1].id(), webhook_id("budget", "conv-1", 3));
        // The history keeps the failed run and the replayed attempt.
        let attempts = store.delivery_attempts(ids[0]).await.expect("attempts");
        assert_eq!(attempts.last().and_then(|a| a.status_code), Some(200));
        let record = store.delivery(ids[0]).await.expect("delivery").expect("exists");
        assert_eq!((record.status.as_str(), record.replays, record.attempts), ("delivered", 1, 1));
        assert!(store.list_dead_letters(&DeadLetterFilter::default(), 100).await.expect("list").is_empty());
    })
    .await;
}
