//! Every query the webhook dispatcher and the operator run on a large outbox
//! touches a number of rows bounded by a small multiple of what it returns,
//! on tables that were never analyzed (docs/protocol.md §4): 20,000 pending
//! deliveries over 10,000 conversations, 10,000 delivered and 2,000 dead ones.
//!
//! "Touched" is what PostgreSQL's statistics collector counted on the
//! schema's tables: rows read by sequential scans plus live rows fetched
//! through indexes. Each query runs on the store's only connection, which
//! then flushes its counters. (Index entries of row versions that updates and
//! deletes left behind are not rows: with autovacuum off only the first scan
//! that meets one pays for it, and marks it dead for every later scan.)

mod support;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use domain::webhook::{WebhookEnvelope, WebhookEvent};
use store::{
    ClaimAtInsert, ClaimGroup, DeadLetterFilter, DeadReason, Settle, SettleJob, Store,
    insert_webhook_deliveries, queue_webhook_deliveries,
};
use support::{database_url, escalation_id, key};

const CONVERSATIONS: usize = 10_000;
const LEASE: Duration = Duration::from_secs(60);

/// Rows read by sequential scans plus live rows fetched through indexes.
async fn touched(reader: &tokio_postgres::Client, schema: &str) -> i64 {
    reader.batch_execute("SELECT pg_stat_clear_snapshot()").await.expect("clear snapshot");
    let row = reader
        .query_one(
            "SELECT (coalesce(sum(seq_tup_read), 0) + coalesce(sum(idx_tup_fetch), 0))::bigint
             FROM pg_stat_user_tables WHERE schemaname = $1",
            &[&schema],
        )
        .await
        .expect("stats");
    row.get(0)
}

/// Runs `query` on the store's one connection and returns what it touched.
async fn measure<T, F>(store: &Store, reader: &tokio_postgres::Client, query: F) -> (T, i64)
where
    F: std::future::Future<Output = T>,
{
    // What earlier statements touched is flushed first, or it would be
    // counted as this query's (seen in CI: the seeding's claims, 27,000
    // rows, arrived in the first measurement).
    flush(store).await;
    let before = touched(reader, store.schema()).await;
    let out = query.await;
    flush(store).await;
    (out, touched(reader, store.schema()).await - before)
}

/// Makes the store's one connection report its counters now: they are
/// flushed when the backend goes idle, at most once a second unless forced.
async fn flush(store: &Store) {
    let db = store.client().await.expect("client");
    db.batch_execute("SELECT pg_stat_force_next_flush()").await.expect("force flush");
    db.batch_execute("SELECT 1").await.expect("flush");
}

fn envelope(sequence: u64) -> WebhookEnvelope {
    WebhookEnvelope {
        sequence,
        timestamp: Utc::now(),
        escalation_id: Some(escalation_id("esc-1")),
        event: WebhookEvent::WidgetMessage {
            message_id: domain::MessageId::parse(format!("m-{sequence}")).expect("id"),
            text: "hello".to_owned(),
        },
    }
}

/// Queues, through the worker's insert, `per` deliveries for each of
/// `conversations` conversations of `bot`, due a second ago.
async fn queue(store: &Store, bot: &str, conversations: usize, per: u64, first_sequence: u64) {
    let mut rows = Vec::new();
    for c in 0..conversations {
        for s in 0..per {
            rows.push((key(bot, &format!("c-{c}")), envelope(first_sequence + s)));
        }
    }
    for chunk in rows.chunks(5_000) {
        let mut client = store.client().await.expect("client");
        let tx = client.transaction().await.expect("begin");
        insert_webhook_deliveries(&tx, chunk, Utc::now() - TimeDelta::seconds(1)).await.expect("insert");
        tx.commit().await.expect("commit");
    }
}

async fn settle_all(store: &Store, claimer: &str, ids: &[i64], settle: Settle) -> Vec<bool> {
    let jobs: Vec<SettleJob> = ids
        .iter()
        .map(|id| SettleJob { id: *id, attempt: None, settle, note: None, run_started_at: Some(Utc::now()) })
        .collect();
    store.settle_deliveries(claimer, &jobs).await.expect("settle")
}

fn assert_bounded(what: &str, touched: i64, returned: usize) {
    let bound = 8 * i64::try_from(returned).expect("small") + 20;
    println!("{what}: touched {touched} rows for {returned} returned (bound {bound})");
    assert!(touched <= bound, "{what} touched {touched} rows to return {returned} (bound {bound})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_and_operator_queries_stay_bounded_on_a_large_never_analyzed_outbox() {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    // One connection, as the dispatcher and the CLI open them: every call
    // runs on the backend that is flushed.
    let store = Store::connect_for_batches(&database_url(), &schema, 1).expect("connect");
    store.migrate().await.expect("migrate");
    let outcome = tokio::spawn(scenario(store.clone())).await;
    store.drop_schema().await.expect("drop schema");
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn scenario(store: Store) {
    let (reader, connection) =
        tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await.expect("reader");
    tokio::spawn(connection);
    {
        let db = store.client().await.expect("client");
        // Never analyzed, whatever the server's autovacuum setting.
        for table in ["webhook_deliveries", "webhook_heads", "webhook_attempts", "conversations"] {
            db.batch_execute(&format!("ALTER TABLE {table} SET (autovacuum_enabled = false)"))
                .await
                .expect("autovacuum off");
        }
        db.batch_execute(&format!(
            "INSERT INTO conversations (bot_id, conversation_id, state, phase, escalation_id, updated_at)
             SELECT 'bot', 'c-' || i, '{{}}'::jsonb, 'connected', 'esc-1', now()
             FROM generate_series(0, {}) i",
            CONVERSATIONS - 1
        ))
        .await
        .expect("conversations");
    }
    // 10,000 delivered, 2,000 dead, then 20,000 pending (2 per conversation).
    queue(&store, "bot", CONVERSATIONS, 1, 1).await;
    let lease = Duration::from_secs(60);
    let mut ids = Vec::new();
    loop {
        let groups = [ClaimGroup { bots: &["bot"], cap: 1_000 }];
        let claimed = store.claim_deliveries("seed", &groups, lease).await.expect("claim");
        if claimed.is_empty() {
            break;
        }
        ids.extend(claimed.deliveries.iter().map(|d| d.id));
        let settle = if ids.len() <= 2_000 {
            Settle::Dead(DeadReason::OutOfBudget, Utc::now())
        } else {
            Settle::Delivered(Utc::now())
        };
        let settled: Vec<i64> = claimed.deliveries.iter().map(|d| d.id).collect();
        assert!(settle_all(&store, "seed", &settled, settle).await.iter().all(|held| *held));
    }
    queue(&store, "bot", CONVERSATIONS, 2, 2).await;
    queue(&store, "gone", 3, 1, 1).await;

    // Claims: 100 of 10,000 heads, several rounds, as the dispatcher does,
    // then settle them (delivered: the heads move on), twice over.
    for round in 0..3 {
        let groups = [ClaimGroup { bots: &["bot"], cap: 100 }];
        let (claimed, cost) = measure(&store, &reader, store.claim_deliveries("d", &groups, LEASE)).await;
        let claimed = claimed.expect("claim");
        assert_eq!(claimed.deliveries.len(), 100);
        assert_bounded(&format!("claim, round {round}"), cost, claimed.len());
        let ids: Vec<i64> = claimed.deliveries.iter().map(|d| d.id).collect();
        let (held, cost) =
            measure(&store, &reader, settle_all(&store, "d", &ids, Settle::Delivered(Utc::now()))).await;
        assert!(held.iter().all(|held| *held));
        assert_bounded(&format!("settle delivered, round {round}"), cost, ids.len());
    }
    // Retries: the heads stay, due later.
    let groups = [ClaimGroup { bots: &["bot"], cap: 100 }];
    let claimed = store.claim_deliveries("d", &groups, LEASE).await.expect("claim");
    let ids: Vec<i64> = claimed.deliveries.iter().map(|d| d.id).collect();
    let retry = Settle::RetryAt(Utc::now() + TimeDelta::minutes(5));
    let (_, cost) = measure(&store, &reader, settle_all(&store, "d", &ids, retry)).await;
    assert_bounded("settle retry", cost, ids.len());
    let (moved, cost) = measure(&store, &reader, store.pull_forward(&["bot"])).await;
    assert_eq!(moved.expect("pull forward"), 100);
    assert_bounded("pull forward", cost, 100);
    // A claim of the group of another bot costs nothing of this one's.
    let groups = [ClaimGroup { bots: &["other"], cap: 100 }];
    let (claimed, cost) = measure(&store, &reader, store.claim_deliveries("d", &groups, LEASE)).await;
    assert!(claimed.expect("claim").is_empty());
    assert_bounded("claim of an idle bot", cost, 0);
    let (released, cost) = measure(&store, &reader, store.release_claims(&ids, "d")).await;
    released.expect("release");
    assert_bounded("release (of 100 ids)", cost, ids.len());

    // Unconfigured bots: one probe per bot, then the few rows counted.
    let (other, cost) = measure(&store, &reader, store.pending_of_other_bots(&["bot"], 100_000)).await;
    assert_eq!(other.expect("count"), [("gone".to_owned(), 3)]);
    assert_bounded("pending of unconfigured bots", cost, 3);

    // The operator: a page of dead letters, one bot's, one conversation's timeline.
    let (page, cost) =
        measure(&store, &reader, store.list_dead_letters(&DeadLetterFilter::default(), 50)).await;
    assert_eq!(page.expect("list").len(), 50);
    assert_bounded("dlq list", cost, 50);
    let filter = DeadLetterFilter { bot_id: Some("gone".into()), ..DeadLetterFilter::default() };
    let (page, cost) = measure(&store, &reader, store.list_dead_letters(&filter, 50)).await;
    assert!(page.expect("list").is_empty());
    assert_bounded("dlq list of a bot without dead letters", cost, 0);
    // The admin listener's gauges: capped index walks, whatever the backlog.
    let bots = ["bot".to_owned(), "gone".to_owned(), "idle".to_owned()];
    let (outboxes, cost) = measure(&store, &reader, store.outbox_gauges(&bots, 1_000)).await;
    let outboxes = outboxes.expect("outbox gauges");
    assert_eq!(outboxes[0].pending, 1_000, "capped");
    assert_eq!(outboxes[0].conversations, 1_000, "capped");
    assert!(outboxes[0].oldest_pending_at.is_some());
    assert_eq!((outboxes[1].pending, outboxes[1].conversations), (3, 3));
    assert_eq!((outboxes[2].pending, outboxes[2].oldest_pending_at), (0, None));
    // Per bot: the capped pending walk, the capped heads walk and a probe per
    // head; 20,000 pending rows and 10,000 heads are not read.
    println!("outbox gauges (cap 1,000 per bot): touched {cost} rows");
    assert!(cost <= 3 * 1_000 + 100, "outbox gauges touched {cost} rows for a cap of 1,000");
    let (dead, cost) = measure(&store, &reader, store.dead_letter_counts(1_000)).await;
    assert_eq!(dead.expect("dead letter counts"), [("out_of_budget".to_owned(), 1_000)]);
    println!("dead letters per reason (cap 1,000): touched {cost} rows");
    assert!(cost <= 1_000 + 20, "dead letter counts touched {cost} rows for a cap of 1,000 (of 2,000)");
    let conversation = key("bot", "c-42");
    let (timeline, cost) = measure(&store, &reader, store.deliveries_with_attempts(&conversation)).await;
    let rows = timeline.expect("timeline").len();
    assert_eq!(rows, 3);
    assert_bounded("conversation deliveries", cost, rows);

    // The worker's insert claiming new heads at insert (the hand-off to the
    // dispatcher of its process): 50 rows of new conversations, whose heads
    // it claims, and 50 behind pending heads, which it cannot.
    let rows: Vec<_> = (0..50)
        .map(|i| (key("bot", &format!("new-{i}")), envelope(1)))
        .chain((9_000..9_050).map(|i| (key("bot", &format!("c-{i}")), envelope(4))))
        .collect();
    let take = vec![true; rows.len()];
    let claim = ClaimAtInsert { claimer: "local", lease: LEASE, take: &take };
    let (queued, cost) = measure(&store, &reader, async {
        let mut client = store.client().await.expect("client");
        let tx = client.transaction().await.expect("begin");
        let queued = queue_webhook_deliveries(&tx, &rows, Utc::now(), Some(claim)).await.expect("insert");
        tx.commit().await.expect("commit");
        queued
    })
    .await;
    assert_eq!((queued.inserted, queued.heads, queued.claimed.len()), (100, 50, 50));
    assert_bounded("insert claiming new heads at insert", cost, rows.len());
}
