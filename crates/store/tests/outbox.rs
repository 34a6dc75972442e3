//! The dispatcher's claims: head of line per conversation, dead letters do not
//! block, per-bot and per-group caps, leases that expire, settlements that
//! notice a lost claim, undecodable rows and stale heads, heads kept right by
//! concurrent inserts, and the dead-letter operations.

mod support;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use domain::webhook::{WebhookEnvelope, WebhookEvent};
use store::{
    ClaimGroup, Claimed, DeadLetterChange, DeadLetterFilter, DeadReason, NewAttempt, Settle, SettleJob,
    Store, insert_webhook_deliveries,
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

fn claimed_keys(claimed: &Claimed) -> Vec<(String, u64)> {
    assert!(claimed.unsendable.is_empty(), "unsendable heads: {:?}", claimed.unsendable);
    let mut keys: Vec<_> =
        claimed.deliveries.iter().map(|c| (c.key.conversation_id.to_string(), c.sequence)).collect();
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
        let first = store.claim_due_deliveries("one", &[("b", 10)], LEASE).await.expect("claim");
        assert_eq!(claimed_keys(&first), [("c1".to_owned(), 1), ("c2".to_owned(), 1)], "heads of bot b only");
        assert!(store.claim_due_deliveries("two", &[("b", 10)], LEASE).await.expect("claim").is_empty());
        let first = first.deliveries;

        // A dead head does not block the next sequence.
        let c1 =
            first.iter().find(|c| c.sequence == 1 && c.key.conversation_id.as_str() == "c1").expect("c1");
        let dead = Settle::Dead(DeadReason::FinalStatus, Utc::now());
        assert!(store.settle_delivery(c1.id, "one", Some(&attempt(410)), dead).await.expect("settle"));
        let next = store.claim_due_deliveries("two", &[("b", 10)], LEASE).await.expect("claim");
        assert_eq!(claimed_keys(&next), [("c1".to_owned(), 2)]);

        // The cap limits per bot.
        let x = store.claim_due_deliveries("two", &[("x", 0)], LEASE).await.expect("claim");
        assert!(x.is_empty());

        // An expired lease is taken over; the old holder's settlement is refused
        // but its attempt is kept in the history.
        let c2 = first.iter().find(|c| c.key.conversation_id.as_str() == "c2").expect("c2");
        assert!(store.release_claims(&[c2.id], "one").await.expect("release") == 1);
        let short = Duration::from_millis(1);
        let taken = store.claim_due_deliveries("three", &[("b", 10)], short).await.expect("claim");
        assert!(taken.deliveries.iter().any(|c| c.id == c2.id));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let again = store.claim_due_deliveries("four", &[("b", 10)], LEASE).await.expect("claim");
        assert!(again.deliveries.iter().any(|c| c.id == c2.id), "an expired lease is due again");
        let settled =
            store.settle_delivery(c2.id, "three", Some(&attempt(200)), Settle::Delivered(Utc::now())).await;
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
        let claimed = store.claim_due_deliveries("d", &[("b", 10)], LEASE).await.expect("claim");
        for (delivery, reason) in claimed.deliveries.iter().zip([
            DeadReason::FinalStatus,
            DeadReason::OutOfBudget,
            DeadReason::NoEndpoint,
        ]) {
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

#[tokio::test]
async fn a_group_of_bots_sharing_an_endpoint_is_capped_once() {
    with_store(|store| async move {
        let rows: Vec<(&str, String, u64)> =
            (0..5).flat_map(|i| [("a", format!("a{i}"), 1), ("b", format!("b{i}"), 1)]).collect();
        let rows: Vec<(&str, &str, u64)> = rows.iter().map(|(b, c, s)| (*b, c.as_str(), *s)).collect();
        queue(&store, &rows).await;
        queue(&store, &[("z", "z1", 1)]).await;
        let shared = ["a", "b"];
        let alone = ["z"];
        let groups = [ClaimGroup { bots: &shared, cap: 4 }, ClaimGroup { bots: &alone, cap: 4 }];
        let claimed = store.claim_deliveries("g", &groups, LEASE).await.expect("claim");
        let of = |bot: &str| claimed.deliveries.iter().filter(|d| d.key.bot_id.as_str() == bot).count();
        assert_eq!(of("a") + of("b"), 4, "the shared endpoint gets its cap once, not per bot");
        assert_eq!(of("z"), 1);
    })
    .await;
}

#[tokio::test]
async fn an_undecodable_row_is_set_apart_and_dead_lettered_alone() {
    with_store(|store| async move {
        queue(&store, &[("b", "c1", 1), ("b", "c1", 2), ("b", "c2", 1)]).await;
        let client = store.client().await.expect("client");
        client
            .execute(
                "UPDATE webhook_deliveries SET payload = '{\"not\": \"an envelope\"}'
                 WHERE conversation_id = 'c1' AND sequence = 1",
                &[],
            )
            .await
            .expect("corrupt");
        let claimed = store.claim_due_deliveries("p", &[("b", 10)], LEASE).await.expect("claim");
        assert_eq!(claimed.deliveries.len(), 1, "the good row still comes");
        assert_eq!(claimed.unsendable.len(), 1);
        let bad = &claimed.unsendable[0];
        assert!(!bad.stale);
        let job = SettleJob {
            id: bad.id,
            attempt: None,
            settle: Settle::Dead(DeadReason::Undecodable, Utc::now()),
            note: Some(bad.error.clone()),
            run_started_at: None,
        };
        assert_eq!(store.settle_deliveries("p", &[job]).await.expect("settle"), [true]);
        let row = store.delivery(bad.id).await.expect("read").expect("row");
        assert_eq!((row.status.as_str(), row.reason), ("dead", Some(DeadReason::Undecodable)));
        assert!(row.last_error.is_some_and(|e| !e.is_empty()));
        // The conversation goes on with its next sequence.
        let next = store.claim_due_deliveries("p", &[("b", 10)], LEASE).await.expect("claim");
        assert_eq!(claimed_keys(&next), [("c1".to_owned(), 2)]);
    })
    .await;
}

#[tokio::test]
async fn a_widget_escalate_knows_whether_its_escalation_is_still_live() {
    with_store(|store| async move {
        queue(&store, &[("b", "c1", 1)]).await;
        let client = store.client().await.expect("client");
        let claimed = store.claim_due_deliveries("e", &[("b", 10)], LEASE).await.expect("claim");
        assert!(!claimed.deliveries[0].escalation_live, "no conversation row: nothing is live");
        store.release_claims(&[claimed.deliveries[0].id], "e").await.expect("release");
        client
            .execute(
                "INSERT INTO conversations (bot_id, conversation_id, state, phase, escalation_id, updated_at)
                 VALUES ('b', 'c1', '{}', 'requested', 'esc-1', now())",
                &[],
            )
            .await
            .expect("conversation");
        let claimed = store.claim_due_deliveries("e", &[("b", 10)], LEASE).await.expect("claim");
        assert!(claimed.deliveries[0].escalation_live);
        store.release_claims(&[claimed.deliveries[0].id], "e").await.expect("release");
        client.execute("UPDATE conversations SET phase = 'idle'", &[]).await.expect("ended");
        let claimed = store.claim_due_deliveries("e", &[("b", 10)], LEASE).await.expect("claim");
        assert!(!claimed.deliveries[0].escalation_live, "back to idle: ended");
        let skip = Settle::Skipped(DeadReason::EscalationEnded, Utc::now());
        assert!(store.settle_delivery(claimed.deliveries[0].id, "e", None, skip).await.expect("settle"));
        let listed = store.list_dead_letters(&DeadLetterFilter::default(), 10).await.expect("list");
        assert_eq!(listed.len(), 1, "skipped because ended: shown beside the dead letters");
        assert_eq!(listed[0].status, "skipped");
        assert_eq!(listed[0].reason, Some(DeadReason::EscalationEnded));
    })
    .await;
}

#[tokio::test]
async fn replayed_dead_letters_go_out_again_in_sequence_order() {
    with_store(|store| async move {
        queue(&store, &[("b", "c1", 1), ("b", "c1", 2), ("b", "c1", 3)]).await;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let claimed = store.claim_due_deliveries("r", &[("b", 10)], LEASE).await.expect("claim");
            let id = claimed.deliveries[0].id;
            let dead = Settle::Dead(DeadReason::FinalStatus, Utc::now());
            assert!(store.settle_delivery(id, "r", Some(&attempt(410)), dead).await.expect("settle"));
            ids.push(id);
        }
        // 3 is the head now; replaying 1 and 2 puts them before it.
        assert_eq!(store.replay_dead_letters(&ids, Utc::now()).await.expect("replay"), 2);
        let mut order = Vec::new();
        loop {
            let claimed = store.claim_due_deliveries("r", &[("b", 10)], LEASE).await.expect("claim");
            let Some(delivery) = claimed.deliveries.first() else { break };
            assert_eq!(claimed.len(), 1, "one head per conversation");
            order.push(delivery.sequence);
            let done = Settle::Delivered(Utc::now());
            assert!(
                store.settle_delivery(delivery.id, "r", Some(&attempt(200)), done).await.expect("settle")
            );
        }
        assert_eq!(order, [1, 2, 3]);
    })
    .await;
}

#[tokio::test]
async fn deliveries_queued_while_the_head_is_settled_are_never_left_without_a_head() {
    with_store(|store| async move {
        // Many rounds of: a settle of the last pending head racing a worker
        // queuing the conversation's next delivery.
        for round in 0..40_u64 {
            let conversation = format!("c{round}");
            queue(&store, &[("b", &conversation, 1)]).await;
            let claimed = store.claim_due_deliveries("s", &[("b", 10)], LEASE).await.expect("claim");
            let id = claimed.deliveries[0].id;
            let ok = attempt(200);
            let settle = store.settle_delivery(id, "s", Some(&ok), Settle::Delivered(Utc::now()));
            let next_row = [("b", conversation.as_str(), 2)];
            let insert = queue(&store, &next_row);
            let (settled, ()) = tokio::join!(settle, insert);
            assert!(settled.expect("settle"));
            let next = store.claim_due_deliveries("s", &[("b", 10)], LEASE).await.expect("claim");
            assert_eq!(claimed_keys(&next), [(conversation.clone(), 2)], "round {round}");
            let done = Settle::Delivered(Utc::now());
            assert!(store.settle_delivery(next.deliveries[0].id, "s", None, done).await.expect("settle"));
        }
    })
    .await;
}

#[tokio::test]
async fn a_head_pointing_at_no_pending_row_is_healed() {
    with_store(|store| async move {
        queue(&store, &[("b", "c1", 1), ("b", "c1", 2)]).await;
        let client = store.client().await.expect("client");
        client
            .execute("UPDATE webhook_deliveries SET status = 'delivered' WHERE sequence = 1", &[])
            .await
            .expect("break the head");
        let claimed = store.claim_due_deliveries("h", &[("b", 10)], LEASE).await.expect("claim");
        assert_eq!(claimed.unsendable.len(), 1);
        assert!(claimed.unsendable[0].stale);
        let heal = SettleJob {
            id: claimed.unsendable[0].id,
            attempt: None,
            settle: Settle::Heal,
            note: None,
            run_started_at: None,
        };
        assert_eq!(store.settle_deliveries("h", &[heal]).await.expect("heal"), [true]);
        let next = store.claim_due_deliveries("h", &[("b", 10)], LEASE).await.expect("claim");
        assert_eq!(claimed_keys(&next), [("c1".to_owned(), 2)]);
    })
    .await;
}

#[tokio::test]
async fn new_heads_are_claimed_at_insert_only_where_flagged() {
    with_store(|store| async move {
        let rows: Vec<_> = [("b", "c1", 1), ("b", "c1", 2), ("b", "c2", 1), ("b", "c3", 1)]
            .iter()
            .map(|(bot, conv, seq)| (key(bot, conv), envelope(*seq)))
            .collect();
        // c1 and c2 flagged, c3 not.
        let take = [true, true, true, false];
        let claim = store::ClaimAtInsert { claimer: "local", lease: LEASE, take: &take };
        let mut client = store.client().await.expect("client");
        let tx = client.transaction().await.expect("begin");
        let queued = store::queue_webhook_deliveries(&tx, &rows, Utc::now(), Some(claim)).await.expect("insert");
        tx.commit().await.expect("commit");
        assert_eq!((queued.inserted, queued.heads), (4, 3));
        let mut claimed: Vec<(String, u64)> =
            queued.claimed.iter().map(|(_, key, seq)| (key.conversation_id.to_string(), *seq)).collect();
        claimed.sort();
        assert_eq!(claimed, [("c1".to_owned(), 1), ("c2".to_owned(), 1)], "the new heads flagged");

        // Leased on the database's clock, as a claim round would: nobody else
        // takes them; the unflagged head is due.
        let other = store.claim_due_deliveries("other", &[("b", 10)], LEASE).await.expect("claim");
        assert_eq!(claimed_keys(&other), [("c3".to_owned(), 1)]);
        let leased = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}.webhook_heads WHERE claimed_by = 'local' AND due_at > now() + interval '50 seconds'",
                    store.schema()
                ),
                &[],
            )
            .await
            .expect("count");
        assert_eq!(leased.get::<_, i64>(0), 2);

        // The holder settles its claim as after a claim round; c1's head
        // moves on to sequence 2, due for anyone.
        let (c1, _, _) = queued.claimed.iter().find(|(_, key, _)| key.conversation_id.as_str() == "c1").expect("c1");
        let delivered = Settle::Delivered(Utc::now());
        assert!(store.settle_delivery(*c1, "local", Some(&attempt(200)), delivered).await.expect("settle"));
        let next = store.claim_due_deliveries("other", &[("b", 10)], LEASE).await.expect("claim");
        assert_eq!(claimed_keys(&next), [("c1".to_owned(), 2)]);

        // Behind a pending head, a flagged row is not claimed: it is no head.
        let later = [(key("b", "c2"), envelope(2))];
        let tx = client.transaction().await.expect("begin");
        let claim = store::ClaimAtInsert { claimer: "local", lease: LEASE, take: &[true] };
        let queued = store::queue_webhook_deliveries(&tx, &later, Utc::now(), Some(claim)).await.expect("insert");
        tx.commit().await.expect("commit");
        assert_eq!((queued.inserted, queued.heads, queued.claimed.len()), (1, 0, 0));

        // A redelivered batch inserts and claims nothing.
        let tx = client.transaction().await.expect("begin");
        let claim = store::ClaimAtInsert { claimer: "local", lease: LEASE, take: &take };
        let queued = store::queue_webhook_deliveries(&tx, &rows, Utc::now(), Some(claim)).await.expect("insert");
        tx.commit().await.expect("commit");
        assert_eq!(queued, store::Queued::default());
    })
    .await;
}
