//! The crate's one error type.
//!
//! Failures of single messages are not errors here: the shard task classifies
//! them once (transient → retry the batch, permanent → dead letter) and keeps
//! going. What reaches this type ends a shard task (which the lease loop
//! restarts) or the worker.

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a worker (or one of its shard tasks) could not go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A worker knob is out of range; the message names it.
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// PostgreSQL failed.
    #[error("store: {0}")]
    Store(#[from] store::Error),
    /// RabbitMQ failed (connect, declare, consume, ack).
    #[error("broker: {0}")]
    Broker(#[from] broker::Error),
    /// The broker ended a consumer we did not stop (queue deleted, channel
    /// closed by the broker).
    #[error("the consumer of shard {0} was cancelled by the broker")]
    ConsumerEnded(u16),
    /// A worker task panicked or was aborted.
    #[error("worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::report::error_chain;

    #[test]
    fn chain_lists_sources_once() {
        let inner = std::io::Error::other("connection reset");
        let error = Error::Broker(broker::Error::Amqp {
            context: "basic.ack on q".to_owned(),
            source: lapin::Error::from(lapin::ErrorKind::IOError(std::sync::Arc::new(inner))),
        });
        let text = error_chain(&error);
        assert!(text.starts_with("broker: basic.ack on q"), "{text}");
        assert!(text.contains("connection reset"), "{text}");
    }
}
