//! The crate's one error type.

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop the dispatcher from starting or settling a delivery.
/// Failures of a webhook attempt are not errors: they are outcomes, recorded
/// and retried (see [`crate::client::Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP client could not be built (TLS backend).
    #[error("building the webhook HTTP client")]
    Client(#[source] reqwest::Error),
    /// A database statement failed.
    #[error("webhook outbox")]
    Store(#[from] store::Error),
    /// The `escalateUndeliverable` command was not confirmed by the broker.
    #[error("publishing escalateUndeliverable")]
    Publish(#[from] broker::Error),
    /// No broker publisher is configured, so the notice cannot be sent.
    #[error("no broker publisher to send escalateUndeliverable")]
    NoPublisher,
}
