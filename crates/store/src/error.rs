//! The crate's one error type.

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The schema name is not a plain lowercase identifier.
    #[error("invalid schema name {0:?}: expected 1-63 characters of [a-z0-9_], not starting with a digit")]
    InvalidSchema(String),
    /// The database URL could not be parsed.
    #[error("invalid database url")]
    InvalidUrl(#[source] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("building the connection pool")]
    BuildPool(#[from] deadpool_postgres::BuildError),
    /// No connection could be taken from the pool.
    #[error("getting a database connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed.
    #[error("database statement failed")]
    Db(#[from] tokio_postgres::Error),
    /// A JSON column could not be encoded or decoded.
    #[error("JSON column")]
    Json(#[from] serde_json::Error),
    /// A value does not fit its column (a sequence beyond `i64::MAX`).
    #[error("value out of range for column {0}")]
    OutOfRange(&'static str),
    /// A row holds a value this version does not understand.
    #[error("unexpected value {value:?} in column {column}")]
    Corrupt {
        /// The column.
        column: &'static str,
        /// What it held.
        value: String,
    },
    /// A batch's lease check found that the worker no longer holds its
    /// shard under the epoch it consumes with (the lease expired, or another
    /// worker took it): nothing of the batch may be committed or acked.
    #[error("lease of shard {shard} (epoch {epoch}) is no longer held by this worker")]
    LeaseLost {
        /// The shard.
        shard: u16,
        /// The epoch the worker consumed under.
        epoch: u64,
    },
}

impl Error {
    /// True when retrying the same work later may succeed: lost connections,
    /// an exhausted pool, serialization failures and deadlocks, a server
    /// shutting down or out of resources. The worker uses this to choose
    /// between redelivery and the dead letter (STYLE, "classifies each failure once").
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Pool(_) => true,
            Error::Db(error) => match error.code() {
                // No SQLSTATE: an I/O error or a closed connection.
                None => true,
                Some(state) => {
                    let code = state.code();
                    // 08 connection exception, 40 transaction rollback
                    // (serialization failure, deadlock), 53 insufficient
                    // resources, 57 operator intervention (shutdown, cancel),
                    // 25006 read-only transaction: the host is a standby now
                    // (a failover); the pool drops such connections.
                    code == "25006" || ["08", "40", "53", "57"].iter().any(|class| code.starts_with(class))
                }
            },
            Error::InvalidSchema(_)
            | Error::InvalidUrl(_)
            | Error::BuildPool(_)
            | Error::Json(_)
            | Error::OutOfRange(_)
            | Error::Corrupt { .. }
            | Error::LeaseLost { .. } => false,
        }
    }

    /// Whether the statement was refused only because an earlier one of its
    /// transaction failed (SQLSTATE 25P02). With pipelined statements this
    /// can reach the caller before the error that caused it; see
    /// [`Error::first_cause`].
    pub fn is_aborted_transaction(&self) -> bool {
        use tokio_postgres::error::SqlState;
        matches!(self, Error::Db(error) if error.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION))
    }

    /// Of the errors of statements pipelined in one transaction, the one that
    /// caused the others: the first that is not an aborted-transaction
    /// refusal (else the first). `None` if there is none.
    pub fn first_cause(errors: impl IntoIterator<Item = Option<Error>>) -> Option<Error> {
        let mut fallback = None;
        for error in errors.into_iter().flatten() {
            if !error.is_aborted_transaction() {
                return Some(error);
            }
            fallback.get_or_insert(error);
        }
        fallback
    }
}
