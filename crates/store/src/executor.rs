//! What the batch functions run on: a transaction (or a client) of either
//! `deadpool_postgres` or `tokio_postgres`.
//!
//! The worker opens its transaction on a pooled connection
//! ([`Store::client`](crate::Store::client)), so it holds a
//! `deadpool_postgres::Transaction`; passing `&tx` (or `&*tx`, a
//! `tokio_postgres::Transaction`) both work. With a pooled connection the
//! statements come from its statement cache, which saves a round trip per
//! statement: the batch statements take arrays, so one prepared statement
//! serves every batch size.

use std::future::Future;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use crate::error::Result;

/// A connection or transaction the batch functions can run statements on.
pub trait Executor: Sync {
    /// Prepares `sql`, from the connection's statement cache when it has one.
    fn prepare_sql(&self, sql: &str)
    -> impl Future<Output = Result<Statement, tokio_postgres::Error>> + Send;

    /// Runs a prepared statement and returns its rows.
    fn query_sql(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send;

    /// Runs a prepared statement and returns the number of rows it touched.
    fn execute_sql(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, tokio_postgres::Error>> + Send;
}

macro_rules! executor {
    ($ty:ty, $prepare:ident) => {
        impl Executor for $ty {
            async fn prepare_sql(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
                self.$prepare(sql).await
            }

            async fn query_sql(
                &self,
                statement: &Statement,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<Vec<Row>, tokio_postgres::Error> {
                self.query(statement, params).await
            }

            async fn execute_sql(
                &self,
                statement: &Statement,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<u64, tokio_postgres::Error> {
                self.execute(statement, params).await
            }
        }
    };
}

executor!(deadpool_postgres::Transaction<'_>, prepare_cached);
executor!(deadpool_postgres::Object, prepare_cached);
executor!(tokio_postgres::Transaction<'_>, prepare);
executor!(tokio_postgres::Client, prepare);

/// Prepares and runs `sql`, returning its rows.
pub(crate) async fn query(db: &impl Executor, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
    let statement = db.prepare_sql(sql).await?;
    Ok(db.query_sql(&statement, params).await?)
}

/// Prepares and runs `sql`, returning the number of rows it touched.
pub(crate) async fn execute(db: &impl Executor, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
    let statement = db.prepare_sql(sql).await?;
    Ok(db.execute_sql(&statement, params).await?)
}
