//! The dispatcher's claims: head of line per conversation, dead letters do not
//! block, per-bot caps, leases that expire, settlements that notice a lost
//! claim, and the dead-letter operations.

mod support;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use domain::webhook::{WebhookEnvelope, WebhookEvent};
use store::{
    DeadLetterChange, DeadLetterFilter, DeadReason, NewAttempt, Settle, Store, insert_webhook_deliveries,
};
use support::{escalation_id, key, with_store};

const LEASE: Duration = Duration::from_secs(60);

fn envelope(sequence: u64) -> WebhookEnvelope {
    WebhookEnvelope {
        sequence,
        timestamp: Utc::now(),
        escalation_id: Some(escalation_id("esc-1")),
        event: WebhookEvent::WidgetEndSession { reason: domain::EndReason::VisitorEnded },
    }
}

async fn queue(store: &Store, rows: &[(&str, &str, u64)]) {
    let rows: Vec<_> = rows.iter().map(|(bot, conv, seq)| (key(bot, conv), envelope(*seq))).collect();
    let mut client = store.client().await.expect("client");
    let tx = client.transaction().await.expect("begin");
    insert_webhook_deliveries(&tx, &rows, Utc::now() - TimeDelta::seconds(1)).await.expect("insert");
    tx.commit().await.expect("commit");
}

fn claimed_keys(claimed: &[store::ClaimedDelivery]) -> Vec<(String, u64)> {
    let mut keys: Vec<_> = claimed.iter().map(|c| (c.key.conversation_id.to_string(), c.sequence)).collect();
    keys.sort();
    keys
}

fn attempt(code: u16) -> NewAttempt {
    NewAttempt { at: Utc::now(), status_code: Some(code), error: None, latency_ms: 5 }
}

#[tokio::test]
async fn claims_take_each_conversations_head_once() {
    with_store(|store| async move {
        queue(&store, &[("b", "c1", 1), ("b", "c1", 2), ("b", "c2", 1), ("x", "c9", 1)]).await;
        let now = Utc::now();
        let first = store.claim_due_deliveries("one", &[("b", 10)], now, LEASE).await.expect("claim");
        assert_eq!(claimed_keys(&first), [("c1".to_owned(), 1), ("c2".to_owned(), 1)], "heads of bot b only");
        assert!(store.claim_due_deliveries("two", &[("b", 10)], now, LEASE).await.expect("claim").is_empty());

        // A dead head does not block the next sequence.
        let c1 =
            first.iter().find(|c| c.sequence == 1 && c.key.conversation_id.as_str() == "c1").expect("c1");
        let dead = Settle::Dead(DeadReason::FinalStatus, Utc::now());
        assert!(store.settle_delivery(c1.id, "one", Some(&attempt(410)), dead).await.expect("settle"));
        let next = store.claim_due_deliveries("two", &[("b", 10)], Utc::now(), LEASE).await.expect("claim");
        assert_eq!(claimed_keys(&next), [("c1".to_owned(), 2)]);

        // The cap limits per bot.
        let x = store.claim_due_deliveries("two", &[("x", 0)], Utc::now(), LEASE).await.expect("claim");
        assert!(x.is_empty());

        // An expired lease is taken over; the old holder's settlement is refused
        // but its attempt is kept in the history.
        let c2 = first.iter().find(|c| c.key.conversation_id.as_str() == "c2").expect("c2");
        let later = Utc::now() + TimeDelta::seconds(61);
        let taken = store.claim_due_deliveries("three", &[("b", 10)], later, LEASE).await.expect("claim");
        assert!(taken.iter().any(|c| c.id == c2.id));
        let settled =
            store.settle_delivery(c2.id, "one", Some(&attempt(200)), Settle::Delivered(Utc::now())).await;
        assert!(!settled.expect("settle"), "claim lost");
        assert_eq!(store.delivery_attempts(c2.id).await.expect("attempts").len(), 1);
        assert_eq!(store.delivery(c2.id).await.expect("read").expect("row").status, "pending");
    })
    .await;
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_skipped_and_purged() {
    with_store(|store| async move {
        queue(&store, &[("b", "c1", 1), ("b", "c2", 1), ("b", "c3", 1)]).await;
        let claimed = store.claim_due_deliveries("d", &[("b", 10)], Utc::now(), LEASE).await.expect("claim");
        for (delivery, reason) in
            claimed.iter().zip([DeadReason::FinalStatus, DeadReason::OutOfBudget, DeadReason::NoEndpoint])
        {
            let settle = Settle::Dead(reason, Utc::now());
            assert!(
                store.settle_delivery(delivery.id, "d", Some(&attempt(500)), settle).await.expect("settle")
            );
        }
        let all = store.list_dead_letters(&DeadLetterFilter::default(), 10).await.expect("list");
        assert_eq!(all.len(), 3);
        let filter =
            DeadLetterFilter { reason: Some(DeadReason::OutOfBudget), ..DeadLetterFilter::default() };
        assert_eq!(store.list_dead_letters(&filter, 10).await.expect("list").len(), 1);
        let future =
            DeadLetterFilter { since: Some(Utc::now() + TimeDelta::hours(1)), ..DeadLetterFilter::default() };
        assert!(store.list_dead_letters(&future, 10).await.expect("list").is_empty());

        let (a, b, c) = (all[0].id, all[1].id, all[2].id);
        assert_eq!(store.replay_dead_letter(a, Utc::now()).await.expect("replay"), DeadLetterChange::Changed);
        assert_eq!(
            store.replay_dead_letter(a, Utc::now()).await.expect("replay"),
            DeadLetterChange::NotDead("pending".into())
        );
        assert_eq!(
            store.replay_dead_letter(-1, Utc::now()).await.expect("replay"),
            DeadLetterChange::NotFound
        );
        let replayed = store.delivery(a).await.expect("read").expect("row");
        assert_eq!((replayed.attempts, replayed.replays, replayed.reason), (0, 1, None));
        assert_eq!(store.skip_dead_letter(b).await.expect("skip"), DeadLetterChange::Changed);
        assert_eq!(store.purge_dead_letters(&DeadLetterFilter::default()).await.expect("purge"), 1);
        assert!(store.delivery(c).await.expect("read").is_none());
        assert_eq!(store.delivery(b).await.expect("read").expect("row").status, "skipped");
    })
    .await;
}
