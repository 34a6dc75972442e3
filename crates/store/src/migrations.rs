//! Schema migrations: SQL scripts embedded in the binary, each with its
//! version (the number its file name starts with). A version, once released,
//! never changes (add a new one instead). Versions are applied in ascending
//! order, each exactly once; one missing from a schema is applied even when a
//! higher one already is, so migrations written on separate branches must be
//! independent of each other.

use std::collections::HashSet;

use crate::error::Result;
use crate::pool::Store;

/// The migrations and their versions, in ascending order. `{schema}` stands
/// for the quoted schema.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_initial.sql")),
    (2, include_str!("../migrations/0002_webhook_delivery.sql")),
    (3, include_str!("../migrations/0003_outbox_heads.sql")),
    (4, include_str!("../migrations/0004_event_id_spaces.sql")),
    (5, include_str!("../migrations/0005_event_warnings.sql")),
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
        for &(version, sql) in MIGRATIONS {
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

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn versions_ascend_and_match_their_files() {
        assert!(MIGRATIONS.windows(2).all(|pair| pair[0].0 < pair[1].0), "ascending, no repeats");
    }
}
