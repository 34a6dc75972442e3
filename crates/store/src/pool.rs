//! The connection pool and the schema every statement runs in.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::config::TargetSessionAttrs;

use crate::error::{Error, Result};
use crate::executor;

/// A pool of connections to one schema of one database. Cheap to clone.
///
/// Every pooled connection starts with `search_path` set to the schema alone,
/// so the batch functions (which take a transaction, not the store) resolve
/// their unqualified table names there and nowhere else. The store's own
/// statements name their tables as `"schema".table`.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    schema: Arc<str>,
    /// How the pool connects, for connections of their own (`LISTEN`).
    config: Arc<tokio_postgres::Config>,
}

impl fmt::Debug for Store {
    // Not derived: the pool's configuration holds the database credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("schema", &self.schema).field("pool", &self.pool.status()).finish()
    }
}

/// The planner settings of [`Store::connect_for_batches`]: costs, not bans, so
/// a statement with no usable index still runs; and each prepared statement
/// planned once, generically, rather than again at every execution (under
/// load, planning was a fifth of the database's CPU: docs/benchmarks.md). The
/// generic plans are the ones `tests/plans.rs` and `tests/outbox_plans.rs`
/// check: they probe keys, whatever the statistics.
const KEYED_ONLY: &str = "-c enable_seqscan=off -c enable_hashjoin=off -c enable_mergejoin=off -c plan_cache_mode=force_generic_plan";

/// Connecting a new connection gives up after this long, so a database that is
/// down surfaces as an error instead of a hang.
const CREATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Checking a pooled connection before reuse gives up after this long.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);
/// With several hosts (`target_session_attrs=read-write`), a pooled connection
/// idle for longer than this is asked whether its host still takes writes
/// before it is reused; one in steady use is not (a PostgreSQL primary only
/// becomes a standby through a restart, which closes its connections anyway).
const READ_WRITE_CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

impl Store {
    /// Builds a pool of at most `pool_size` connections to `url`, working in
    /// `schema`. Connects lazily: nothing is opened until the first query.
    pub fn connect(url: &str, schema: &str, pool_size: usize) -> Result<Store> {
        Self::connect_with(url, schema, pool_size, "")
    }

    /// Like [`Store::connect`], for the worker's batch transactions, the
    /// webhook dispatcher and the operator's queries over large tables: the
    /// planner never scans a table or hashes or merges a join on these
    /// connections if it can probe an index instead.
    ///
    /// Every batch statement looks rows up by primary key. Its plan is cached
    /// per connection, and a plan made while a table was empty (a fresh
    /// deployment, the first batches) is a sequential scan and a hash join,
    /// which the connection keeps as the table grows, until the next ANALYZE
    /// replans it: each batch then reads every row. Measured on a fresh
    /// schema with 5,000 conversations, that took most of the database's CPU
    /// and tripled the stream latency (docs/benchmarks.md). The dispatcher's
    /// claims and the operator's queries walk indexes with limits
    /// (`tests/outbox_plans.rs`) and must never be planned otherwise.
    pub fn connect_for_batches(url: &str, schema: &str, pool_size: usize) -> Result<Store> {
        Self::connect_with(url, schema, pool_size, KEYED_ONLY)
    }

    fn connect_with(url: &str, schema: &str, pool_size: usize, settings: &str) -> Result<Store> {
        validate_schema(schema)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(Error::InvalidUrl)?;
        // The schema is a validated lowercase identifier, so it needs no
        // quoting inside `search_path` or the startup options.
        let ours = format!("-c search_path={schema} {settings}");
        let options = match config.get_options() {
            Some(existing) if !existing.trim().is_empty() => format!("{existing} {ours}"),
            _ => ours,
        };
        config.options(options.trim_end());
        if config.get_application_name().is_none() {
            config.application_name("escalations");
        }
        let listen_config = Arc::new(config.clone());
        let read_write = config.get_target_session_attrs() == TargetSessionAttrs::ReadWrite;
        let manager =
            Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let mut builder = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CREATE_TIMEOUT))
            .recycle_timeout(Some(RECYCLE_TIMEOUT));
        if read_write {
            builder = builder.post_recycle(Hook::async_fn(|client, metrics| {
                Box::pin(async move {
                    if metrics.last_used() < READ_WRITE_CHECK_AFTER_IDLE || still_writable(client).await {
                        Ok(())
                    } else {
                        // Dropped: the pool takes or makes another connection,
                        // which target_session_attrs sends to the primary.
                        Err(HookError::Message("the host no longer takes writes (a standby now)".into()))
                    }
                })
            }));
        }
        let pool = builder.build()?;
        Ok(Store { pool, schema: schema.into(), config: listen_config })
    }

    /// How the pool's connections are made (for a connection of its own).
    pub(crate) fn connection_config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The schema this store works in (unquoted).
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A pooled connection, its `search_path` set to the schema. The worker
    /// opens its batch transaction on it.
    pub async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Drops the schema and everything in it. For tests.
    pub async fn drop_schema(&self) -> Result<()> {
        let client = self.client().await?;
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.quoted_schema())).await?;
        Ok(())
    }

    /// `"schema"`, ready to be interpolated into SQL.
    pub(crate) fn quoted_schema(&self) -> String {
        format!("\"{}\"", self.schema)
    }

    /// Runs `sql` (with `{schema}` standing for the quoted schema) on a pooled
    /// connection and returns its rows.
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let client = self.client().await?;
        executor::query(&client, &self.qualify(sql), params).await
    }

    /// Runs `sql` (with `{schema}` standing for the quoted schema) on a pooled
    /// connection and returns the number of rows it touched.
    pub(crate) async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let client = self.client().await?;
        executor::execute(&client, &self.qualify(sql), params).await
    }

    /// `sql` with `{schema}` replaced by the quoted schema.
    pub(crate) fn qualify(&self, sql: &str) -> String {
        sql.replace("{schema}", &self.quoted_schema())
    }
}

/// Whether the connection's host still takes writes (`transaction_read_only`
/// is off): after a failover the old primary, if it came back, is a standby.
async fn still_writable(client: &tokio_postgres::Client) -> bool {
    let asked =
        tokio::time::timeout(RECYCLE_TIMEOUT, client.simple_query("SHOW transaction_read_only")).await;
    let Ok(Ok(messages)) = asked else { return false };
    messages.iter().any(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0) == Some("off"),
        _ => false,
    })
}

/// Accepts a plain lowercase identifier: `[a-z_][a-z0-9_]*`, at most 63 bytes
/// (PostgreSQL's identifier limit). Anything else could not be interpolated
/// into SQL safely.
fn validate_schema(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let valid_start = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let valid_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid_start && valid_rest && schema.len() <= 63 && !schema.starts_with("pg_") {
        Ok(())
    } else {
        Err(Error::InvalidSchema(schema.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["escalations", "t_0123abc", "_x"] {
            assert!(validate_schema(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(64);
        for bad in ["", "1abc", "Upper", "a-b", "a\"b", "a b", "pg_catalog", too_long.as_str()] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connect_rejects_a_bad_schema_before_touching_the_network() {
        let error = Store::connect("postgres://localhost/x", "bad-name", 1).expect_err("refused");
        assert!(matches!(error, Error::InvalidSchema(_)));
    }
}
