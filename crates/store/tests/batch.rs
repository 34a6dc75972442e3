//! Every batch function, round-tripped in one transaction, then read back.

mod support;

use domain::{
    Conversation, FieldCode, FieldWarning, IdSpace, Phase, RejectCode, ScopedEventId, TimerKind, Verdict,
};
use store::{
    ConvKey, EventRecord, applied_event_ids, delete_timers, insert_webhook_deliveries, insert_widget_events,
    lock_conversations, record_events, save_conversations, upsert_timers,
};
use support::{at, escalate, escalation_id, event_id, key, split, step, with_store};

fn record(key: &ConvKey, id: &str, verdict: Verdict, before: Phase, after: Phase) -> EventRecord {
    EventRecord {
        key: key.clone(),
        event_id: event_id(id),
        id_space: IdSpace::Agent,
        event_type: "escalate".to_owned(),
        verdict,
        phase_before: before,
        phase_after: after,
        received_at: at(0),
        applied_at: at(1),
        warnings: Vec::new(),
    }
}

#[tokio::test]
async fn batch_functions_round_trip() {
    with_store(|store| async move {
        let a = key("bot-1", "conv-a");
        let b = key("bot-1", "conv-b");
        let unknown = key("bot-2", "conv-a");
        let transition = step(&Conversation::default(), &escalate("e1", "esc-1"), at(1));
        assert_eq!(transition.verdict, Verdict::Applied);
        let effects = split(&transition.effects);
        assert!(!effects.widget.is_empty() && !effects.webhooks.is_empty() && !effects.set_timers.is_empty());

        let mut client = store.client().await.expect("client");
        let tx = client.transaction().await.expect("begin");

        // Nothing stored yet: every key is a new conversation.
        let locked = lock_conversations(&tx, &[a.clone(), b.clone()]).await.expect("lock");
        assert!(locked.is_empty());

        // The last state of a key wins.
        let rows = vec![
            (a.clone(), Conversation::default()),
            (b.clone(), Conversation::default()),
            (a.clone(), transition.next.clone()),
        ];
        assert_eq!(save_conversations(&tx, &rows, at(1)).await.expect("save"), 2);
        let locked =
            lock_conversations(&tx, &[a.clone(), b.clone(), unknown.clone(), a.clone()]).await.expect("lock");
        assert_eq!(locked.len(), 2);
        assert_eq!(locked[&a], transition.next);
        assert_eq!(locked[&b], Conversation::default());

        // Events: a repeat of an id, in the batch or later, is ignored.
        let mut records = vec![
            record(&a, "e1", Verdict::Applied, Phase::Idle, Phase::Requested),
            record(&a, "e2", Verdict::Rejected(RejectCode::NotConnected), Phase::Requested, Phase::Requested),
            record(&b, "e1", Verdict::Ignored, Phase::Idle, Phase::Idle),
            record(&a, "e1", Verdict::Duplicate, Phase::Requested, Phase::Requested),
        ];
        // Warnings are kept with their event; none is stored as NULL.
        records[1].warnings = vec![FieldWarning::new("agentAvatar", FieldCode::NotHttps, "dropped")];
        assert_eq!(record_events(&tx, &records).await.expect("record"), 3);
        assert_eq!(record_events(&tx, &records[..1]).await.expect("record again"), 0);
        let sys = |id: &str| ScopedEventId(IdSpace::Agent, event_id(id));
        let asked = vec![
            (a.clone(), sys("e1")),
            (a.clone(), sys("e2")),
            (a.clone(), sys("e3")),
            (b.clone(), sys("e1")),
            (unknown.clone(), sys("e1")),
            // The same id in our namespace is another event (docs/protocol.md §2).
            (a.clone(), ScopedEventId(IdSpace::System, event_id("e1"))),
        ];
        let applied = applied_event_ids(&tx, &asked).await.expect("applied ids");
        assert_eq!(applied.len(), 3);
        assert!(applied.contains(&(a.clone(), sys("e2"))), "rejected events count as seen");
        assert!(!applied.contains(&(a.clone(), sys("e3"))));
        assert!(!applied.contains(&(unknown.clone(), sys("e1"))));
        assert!(!applied.contains(&(a.clone(), ScopedEventId(IdSpace::System, event_id("e1")))));

        // Widget events and webhook deliveries, written twice (a redelivery).
        let widget: Vec<_> = effects.widget.iter().map(|e| (a.clone(), e.clone())).collect();
        assert_eq!(insert_widget_events(&tx, &widget).await.expect("widget"), widget.len() as u64);
        assert_eq!(insert_widget_events(&tx, &widget).await.expect("widget again"), 0);
        let webhooks: Vec<_> = effects.webhooks.iter().map(|e| (a.clone(), e.clone())).collect();
        assert_eq!(
            insert_webhook_deliveries(&tx, &webhooks, at(1)).await.expect("webhooks"),
            webhooks.len() as u64
        );
        assert_eq!(insert_webhook_deliveries(&tx, &webhooks, at(2)).await.expect("webhooks again"), 0);

        // Timers: armed, re-armed (last wins), disarmed.
        let timers: Vec<_> =
            effects.set_timers.iter().map(|(esc, kind, due)| (a.clone(), esc.clone(), *kind, *due)).collect();
        assert_eq!(upsert_timers(&tx, &timers).await.expect("timers"), timers.len() as u64);
        let rearm = vec![
            (b.clone(), escalation_id("esc-b"), TimerKind::Queue, at(10)),
            (b.clone(), escalation_id("esc-b"), TimerKind::Queue, at(20)),
        ];
        assert_eq!(upsert_timers(&tx, &rearm).await.expect("rearm"), 1);
        let deleted = delete_timers(&tx, &[(a.clone(), TimerKind::NoResponse), (b.clone(), TimerKind::Idle)])
            .await
            .expect("delete timers");
        assert_eq!(deleted, 1);
        let due = store::claim_due_timers(&tx, at(3600), 100).await.expect("claim");
        assert!(due.iter().all(|t| t.kind != TimerKind::NoResponse), "disarmed: {due:?}");
        let queue = due.iter().find(|t| t.key == b).expect("b's queue timer");
        assert_eq!((queue.kind, queue.due_at), (TimerKind::Queue, at(20)));

        tx.commit().await.expect("commit");

        // Read side.
        let stored = store.conversation(&a).await.expect("read").expect("stored");
        assert_eq!(stored.state, transition.next);
        assert_eq!(stored.phase, Phase::Requested);
        assert_eq!(stored.updated_at, at(1));
        assert!(store.conversation(&unknown).await.expect("read").is_none());

        let events = store.events_of(&a).await.expect("events");
        let ids: Vec<_> = events.iter().map(|e| (e.event_id.as_str(), e.verdict)).collect();
        assert_eq!(
            ids,
            [("e1", Verdict::Applied), ("e2", Verdict::Rejected(RejectCode::NotConnected))],
            "in applied order"
        );
        assert_eq!(events[0], records[0]);
        let found = store.event(&a.bot_id, &event_id("e2")).await.expect("event").expect("found");
        assert_eq!(found, records[1]);
        assert!(store.event(&a.bot_id, &event_id("nope")).await.expect("event").is_none());
        assert_eq!(store.count_events().await.expect("count"), 3);
        // Our `e1` is recorded beside the caller's, and never read as theirs.
        let mut ours = record(&a, "e1", Verdict::Ignored, Phase::Requested, Phase::Requested);
        ours.id_space = IdSpace::System;
        let client = store.client().await.expect("client");
        assert_eq!(record_events(&client, &[ours]).await.expect("record"), 1, "no clash with the caller's");
        drop(client);
        let found = store.event(&a.bot_id, &event_id("e1")).await.expect("event").expect("found");
        assert_eq!(found, records[0]);

        assert_eq!(store.widget_events(&a, 0).await.expect("widget events"), effects.widget);
        let last = effects.widget.last().expect("one widget event").sequence;
        assert!(store.widget_events(&a, last).await.expect("widget events").is_empty());
        assert_eq!(store.count_widget_events().await.expect("count"), effects.widget.len() as u64);

        let deliveries = store.webhook_deliveries_of(&a).await.expect("deliveries");
        assert_eq!(deliveries.len(), effects.webhooks.len());
        let first = &deliveries[0];
        assert_eq!((first.status.as_str(), first.attempts), ("pending", 0));
        assert_eq!(first.sequence, effects.webhooks[0].sequence);
        assert_eq!(first.event_type, effects.webhooks[0].event.event_type());
        let payload: domain::webhook::WebhookEnvelope =
            serde_json::from_value(first.payload.clone()).expect("payload is the envelope");
        assert_eq!(payload, effects.webhooks[0]);
    })
    .await;
}

#[tokio::test]
async fn empty_batches_are_no_ops() {
    with_store(|store| async move {
        let mut client = store.client().await.expect("client");
        let tx = client.transaction().await.expect("begin");
        assert!(lock_conversations(&tx, &[]).await.expect("lock").is_empty());
        assert!(applied_event_ids(&tx, &[]).await.expect("ids").is_empty());
        assert_eq!(save_conversations(&tx, &[], at(0)).await.expect("save"), 0);
        assert_eq!(record_events(&tx, &[]).await.expect("record"), 0);
        assert_eq!(insert_widget_events(&tx, &[]).await.expect("widget"), 0);
        assert_eq!(insert_webhook_deliveries(&tx, &[], at(0)).await.expect("webhooks"), 0);
        assert_eq!(upsert_timers(&tx, &[]).await.expect("timers"), 0);
        assert_eq!(delete_timers(&tx, &[]).await.expect("timers"), 0);
        tx.commit().await.expect("commit");
    })
    .await;
}
