//! The crate's single error type.
//!
//! One enum serves topology management and publishing so callers match on one
//! type.

/// Everything that can go wrong talking to RabbitMQ.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// There is no usable broker connection right now (not yet connected,
    /// reconnecting, blocked by a resource alarm, or shut down). Returned
    /// immediately: a publish never waits for a reconnect, so the HTTP caller
    /// gets a fast 503 and retries instead of piling up.
    #[error("broker unavailable")]
    Unavailable,

    /// The broker refused responsibility for the message (`basic.nack`).
    #[error("broker nacked the message")]
    Nacked,

    /// The message was unroutable and came back (`mandatory` publish), i.e. no
    /// queue is bound for its shard: the topology is missing or damaged.
    #[error("message returned by the broker: {reply_code} {reply_text}")]
    Returned {
        /// AMQP reply code, 312 (`NO_ROUTE`) for an unbound routing key.
        reply_code: u16,
        /// The broker's explanation.
        reply_text: String,
    },

    /// No publisher confirm arrived within the configured confirm timeout. The
    /// message may or may not have been stored; the caller must retry and the
    /// consumers must tolerate the duplicate.
    #[error("no publisher confirm within the confirm timeout")]
    Timeout,

    /// The channel or connection failed while publishing; a reconnect has
    /// been triggered. As with [`Error::Timeout`], the outcome is unknown.
    #[error("broker channel error: {0}")]
    Channel(String),

    /// The message cannot be published as given (caller bug): shard out of
    /// range or not matching [`crate::shard_for`], or an identifier longer
    /// than AMQP's 255-byte short-string limit.
    #[error("invalid message: {0}")]
    InvalidMessage(String),

    /// A name built from the topology prefix exceeds AMQP's 255-byte limit.
    #[error("invalid topology name {0:?}: longer than 255 bytes")]
    InvalidName(String),

    /// An AMQP operation outside publishing failed (connect, open channel,
    /// declare or delete topology); `context` says which.
    #[error("{context}: {source}")]
    Amqp {
        /// What we were doing, e.g. `declare queue esc.shard.003`.
        context: String,
        /// The underlying lapin error.
        #[source]
        source: lapin::Error,
    },

    /// A topology operation cannot go on as things are (a queue to migrate
    /// still has consumers, a queue that stopped delivering); the message
    /// says what to do.
    #[error("{0}")]
    Precondition(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, bounded label for metrics and logs (`reason` label of
    /// `escalations_publish_failures_total`).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Unavailable => "unavailable",
            Error::Nacked => "nacked",
            Error::Returned { .. } => "returned",
            Error::Timeout => "timeout",
            Error::Channel(_) => "channel",
            Error::InvalidMessage(_) => "invalid_message",
            Error::InvalidName(_) => "invalid_name",
            Error::Amqp { .. } => "amqp",
            Error::Precondition(_) => "precondition",
        }
    }

    pub(crate) fn amqp(context: impl Into<String>) -> impl FnOnce(lapin::Error) -> Error {
        let context = context.into();
        move |source| Error::Amqp { context, source }
    }
}
