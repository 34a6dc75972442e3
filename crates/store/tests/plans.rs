//! The worker's batch connections keep probing keys as tables grow: plans
//! cached while the tables were empty (a fresh deployment) must not scan them
//! once they are full (`Store::connect_for_batches`).

mod support;

use domain::{BotId, ConversationId, EventId, IdSpace, ScopedEventId, TimerKind};
use store::{ConvKey, Store};
use support::{database_url, with_store};

fn key(i: usize) -> ConvKey {
    ConvKey::new(BotId::parse("bot").expect("id"), ConversationId::parse(format!("c-{i}")).expect("id"))
}

/// Sequential scans PostgreSQL counted on the schema's batch tables.
async fn seq_scans(store: &Store) -> i64 {
    let client = store.client().await.expect("client");
    client.batch_execute("SELECT pg_stat_clear_snapshot()").await.expect("clear snapshot");
    let row = client
        .query_one(
            "SELECT coalesce(sum(seq_scan), 0)::bigint FROM pg_stat_user_tables
             WHERE schemaname = $1
               AND relname IN ('conversations', 'events', 'timers', 'shard_leases')",
            &[&store.schema()],
        )
        .await
        .expect("stats");
    row.get(0)
}

/// The lookups of a batch (and its lease fence), on `db`, for a few keys.
async fn lookups(db: &deadpool_postgres::Object) {
    let keys: Vec<ConvKey> = (0..3).map(key).collect();
    let ids: Vec<(ConvKey, ScopedEventId)> = keys
        .iter()
        .map(|k| (k.clone(), ScopedEventId(IdSpace::Agent, EventId::parse("e-1").expect("id"))))
        .collect();
    let timers: Vec<(ConvKey, TimerKind)> = keys.iter().map(|k| (k.clone(), TimerKind::Queue)).collect();
    let fence = store::LeaseFence { worker_id: "w".to_owned(), shard: 7, epoch: 1 };
    // Not held: the probe's answer does not matter here, its plan does.
    let _ = store::check_lease(db, &fence).await;
    store::lock_conversations(db, &keys).await.expect("lock");
    store::applied_event_ids(db, &ids).await.expect("dedupe");
    store::delete_timers(db, &timers).await.expect("delete timers");
}

#[tokio::test]
async fn batch_lookups_planned_on_empty_tables_do_not_scan_them_once_full() {
    with_store(|store| async move {
        // One connection, so every call reuses its cached statements.
        let batches = Store::connect_for_batches(&database_url(), store.schema(), 1).expect("connect");
        let db = batches.client().await.expect("client");
        // Generic plans at once (the default switches to them after 5 runs).
        db.batch_execute("SET plan_cache_mode = force_generic_plan").await.expect("set");
        lookups(&db).await;

        let state = serde_json::to_string(&domain::Conversation::default()).expect("state");
        db.batch_execute(&format!(
            "INSERT INTO conversations (bot_id, conversation_id, state, phase, updated_at)
             SELECT 'bot', 'c-' || i, '{state}'::jsonb, 'idle', now() FROM generate_series(1, 20000) i;
             INSERT INTO events (bot_id, conversation_id, event_id, event_type, verdict, phase_before,
                                 phase_after, received_at, applied_at)
             SELECT 'bot', 'c-' || i, 'e-' || i, 'message', 'applied', 'idle', 'idle', now(), now()
             FROM generate_series(1, 20000) i;
             INSERT INTO timers (bot_id, conversation_id, kind, escalation_id, due_at)
             SELECT 'bot', 'c-' || i, 'queue', 'x', now() FROM generate_series(1, 20000) i;
             INSERT INTO shard_leases (shard) SELECT generate_series(0, 4999);
             SELECT pg_stat_force_next_flush();"
        ))
        .await
        .expect("fill the tables");
        let before = seq_scans(&store).await;
        for _ in 0..3 {
            lookups(&db).await;
        }
        db.batch_execute("SELECT pg_stat_force_next_flush()").await.expect("flush");
        assert_eq!(seq_scans(&store).await, before, "a batch lookup scanned a whole table");
    })
    .await;
}
