//! `BatchTransaction`: BEGIN pipelined with the first statements; commit
//! makes the writes visible; anything else rolls them back and never hands a
//! connection inside a transaction back to the pool.

mod support;

use domain::Conversation;
use store::{Store, save_conversations};
use support::{at, key, with_store};

/// Conversations visible to a connection outside the transaction.
async fn conversations(store: &Store) -> i64 {
    let client = store.client().await.expect("client");
    client.query_one("SELECT count(*) FROM conversations", &[]).await.expect("count").get(0)
}

/// Whether the pool hands out a connection that is inside a transaction.
async fn pooled_connection_in_transaction(store: &Store) -> bool {
    let client = store.client().await.expect("client");
    // Outside a transaction, each statement is one with a transaction id of its own.
    let xid = |row: tokio_postgres::Row| row.get::<_, i64>(0);
    let first = xid(client.query_one("SELECT txid_current()", &[]).await.expect("probe"));
    let second = xid(client.query_one("SELECT txid_current()", &[]).await.expect("probe"));
    first == second
}

#[tokio::test]
async fn a_committed_batch_transaction_is_visible() {
    with_store(|store| async move {
        let tx = store.batch_transaction().await.expect("tx");
        let rows = vec![(key("bot", "a"), Conversation::default())];
        let ((), saved) =
            tokio::try_join!(tx.begin(), save_conversations(tx.db(), &rows, at(0))).expect("write");
        assert_eq!(saved, 1);
        tx.commit().await.expect("commit");
        assert_eq!(conversations(&store).await, 1);
    })
    .await;
}

#[tokio::test]
async fn a_dropped_batch_transaction_commits_nothing_and_leaves_no_open_connection() {
    with_store(|store| async move {
        let tx = store.batch_transaction().await.expect("tx");
        let rows = vec![(key("bot", "a"), Conversation::default())];
        tokio::try_join!(tx.begin(), save_conversations(tx.db(), &rows, at(0))).expect("write");
        drop(tx);
        assert_eq!(conversations(&store).await, 0, "an uncommitted write is visible");
        for _ in 0..8 {
            assert!(
                !pooled_connection_in_transaction(&store).await,
                "the pool handed out an open transaction"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_failed_statement_rolls_the_whole_batch_back() {
    with_store(|store| async move {
        let tx = store.batch_transaction().await.expect("tx");
        let rows = vec![(key("bot", "a"), Conversation::default())];
        let outcome = tokio::try_join!(tx.begin(), save_conversations(tx.db(), &rows, at(0)), async {
            tx.db().batch_execute("SELECT 1 / 0").await.map_err(store::Error::Db)
        });
        assert!(outcome.is_err(), "the bad statement failed");
        // What the worker does on an error: drop it, never commit.
        drop(tx);
        assert_eq!(conversations(&store).await, 0);
        assert!(!pooled_connection_in_transaction(&store).await);
    })
    .await;
}
