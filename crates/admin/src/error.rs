//! [`OpsError`]: why an operation failed, in the terms both of its callers
//! need — the CLI's exit code and the admin API's HTTP status.

use std::fmt;

/// What kind of failure it is; see [`OpsError::exit_code`] and [`OpsError::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed: a bad filter, id or time. CLI 2, HTTP 400.
    Invalid,
    /// What it names does not exist. CLI 3, HTTP 404.
    NotFound,
    /// It exists but the operation does not apply (not a dead letter), or a
    /// destructive operation was not confirmed. CLI 1, HTTP 409.
    Refused,
    /// PostgreSQL or RabbitMQ could not be reached or failed. CLI 4, HTTP 503.
    Unavailable,
}

/// An operation's failure: its kind and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsError {
    /// The kind.
    pub kind: Kind,
    /// One line, naming what was wrong (no secrets).
    pub message: String,
}

/// Exit codes of the `escalations` binary (documented in its `--help` and in
/// docs/operations.md).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Refused or failed otherwise: not a dead letter, `--yes` missing, a role that stopped on an error.
    pub const FAILED: i32 = 1;
    /// Usage: bad arguments (clap's own code), bad filter values, invalid settings.
    pub const USAGE: i32 = 2;
    /// Not found: the dead letter, delivery or conversation does not exist.
    pub const NOT_FOUND: i32 = 3;
    /// Infrastructure: PostgreSQL or RabbitMQ unreachable or failing.
    pub const UNAVAILABLE: i32 = 4;
}

impl OpsError {
    /// A malformed request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { kind: Kind::Invalid, message: message.into() }
    }

    /// Nothing by that name.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { kind: Kind::NotFound, message: message.into() }
    }

    /// Not applicable, or not confirmed.
    pub fn refused(message: impl Into<String>) -> Self {
        Self { kind: Kind::Refused, message: message.into() }
    }

    /// The database or the broker failed; `doing` says what we were doing.
    pub fn unavailable(doing: &str, error: impl fmt::Display) -> Self {
        Self { kind: Kind::Unavailable, message: format!("{doing}: {error}") }
    }

    /// The CLI's exit code for it.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            Kind::Invalid => exit::USAGE,
            Kind::NotFound => exit::NOT_FOUND,
            Kind::Refused => exit::FAILED,
            Kind::Unavailable => exit::UNAVAILABLE,
        }
    }

    /// The admin API's status for it.
    pub fn status(&self) -> u16 {
        match self.kind {
            Kind::Invalid => 400,
            Kind::NotFound => 404,
            Kind::Refused => 409,
            Kind::Unavailable => 503,
        }
    }

    /// The API's `error` code: `invalid`, `not_found`, `refused`, `unavailable`.
    pub fn code(&self) -> &'static str {
        match self.kind {
            Kind::Invalid => "invalid",
            Kind::NotFound => "not_found",
            Kind::Refused => "refused",
            Kind::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for OpsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OpsError {}

/// What operations return.
pub type OpsResult<T> = Result<T, OpsError>;
