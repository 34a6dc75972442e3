//! Schema migrations: an ordered list of SQL scripts embedded in the binary.
//! Version `n` is `MIGRATIONS[n - 1]`; a version, once released, never changes
//! (add a new one instead).

use std::collections::HashSet;

use crate::error::Result;
use crate::store::Store;

/// The migrations, in order. `{schema}` stands for the quoted schema.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_initial.sql"),
    include_str!("../migrations/0002_webhook_delivery.sql"),
    include_str!("../migrations/0003_outbox_heads.sql"),
    include_str!("../migrations/0004_event_id_spaces.sql"),
];

impl Store {
    /// Creates the schema if needed and applies the migrations it lacks, in
    /// order, in one transaction. Returns how many were applied (0 when up to
    /// date, so running it again is harmless).
    ///
    /// Safe to run from several processes at once: the transaction first takes
    /// a transaction-scoped advisory lock keyed by the schema name, so the
    /// second process waits, then finds everything applied.
    #[tracing::instrument(skip_all, fields(schema = %self.schema()))]
    pub async fn migrate(&self) -> Result<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let lock_key = format!("store.migrate:{}", self.schema());
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_key]).await?;
        tx.batch_execute(&self.qualify(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                 version    integer     PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );",
        ))
        .await?;
        let applied: HashSet<i32> = tx
            .query(&self.qualify("SELECT version FROM {schema}.schema_migrations"), &[])
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        let mut count = 0;
        for (version, sql) in (1..).zip(MIGRATIONS) {
            if applied.contains(&version) {
                continue;
            }
            tx.batch_execute(&self.qualify(sql)).await?;
            tx.execute(
                &self.qualify("INSERT INTO {schema}.schema_migrations (version) VALUES ($1)"),
                &[&version],
            )
            .await?;
            tracing::info!(version, "applied migration");
            count += 1;
        }
        tx.commit().await?;
        Ok(count)
    }
}
