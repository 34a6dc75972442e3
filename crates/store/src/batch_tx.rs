//! [`BatchTransaction`]: a transaction whose `BEGIN` travels with its first
//! statements instead of costing a round trip of its own.
//!
//! The worker's batch is latency-bound by round trips (docs/protocol.md §3's stream
//! latency): `BEGIN`, the reads, the writes and `COMMIT` would be four.
//! Sending `BEGIN` and the reads together makes three. tokio-postgres writes
//! requests in the order their futures are first polled, and sends a request
//! in that first poll, so `begin()` polled first in a `try_join!` is on the
//! wire before the reads.
//!
//! Unlike a tokio-postgres `Transaction`, nothing sends `ROLLBACK` when this
//! is dropped; instead an unfinished transaction takes its connection out of
//! the pool and closes it, and the server rolls back. So an error or a
//! cancelled batch never hands a connection that is inside a transaction to
//! the next user of the pool.

use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::Object;

use crate::error::{Error, Result};
use crate::pool::Store;

/// A batch's transaction on one pooled connection.
pub struct BatchTransaction {
    client: Option<Object>,
    /// `BEGIN` may have been sent and neither `COMMIT` nor `ROLLBACK` has
    /// succeeded since.
    open: AtomicBool,
}

impl std::fmt::Debug for BatchTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchTransaction")
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Takes a connection for a [`BatchTransaction`]; sends nothing yet.
    ///
    /// # Errors
    ///
    /// No connection could be had from the pool.
    pub async fn batch_transaction(&self) -> Result<BatchTransaction> {
        Ok(BatchTransaction { client: Some(self.client().await?), open: AtomicBool::new(false) })
    }
}

impl BatchTransaction {
    /// The connection, to run the batch statements on (an [`crate::Executor`]).
    pub fn db(&self) -> &Object {
        // Only `commit` takes the client, and it consumes `self`.
        self.client.as_ref().unwrap_or_else(|| unreachable!("the client is taken only by commit"))
    }

    /// Sends `BEGIN` when first polled; poll it before the statements that
    /// belong in the transaction (first in a `try_join!`).
    ///
    /// # Errors
    ///
    /// The server refused or the connection failed.
    pub async fn begin(&self) -> Result<()> {
        self.open.store(true, Ordering::Relaxed);
        self.db().batch_execute("BEGIN").await.map_err(Error::Db)
    }

    /// Commits, and hands the connection back to the pool. Only after every
    /// statement of the transaction succeeded: after a failed one, PostgreSQL
    /// answers `COMMIT` with a rollback that is not an error, so the caller
    /// must drop the transaction instead (which rolls it back).
    ///
    /// # Errors
    ///
    /// The commit failed; nothing of the transaction is committed.
    pub async fn commit(self) -> Result<()> {
        self.db().batch_execute("COMMIT").await.map_err(Error::Db)?;
        self.open.store(false, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for BatchTransaction {
    fn drop(&mut self) {
        if self.open.load(Ordering::Relaxed)
            && let Some(client) = self.client.take()
        {
            // Out of the pool: dropping it closes the connection, and the
            // server rolls back whatever the transaction did.
            drop(Object::take(client));
        }
    }
}
