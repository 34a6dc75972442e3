//! The one typed settings struct of the escalations service, layered and validated.
//!
//! Sources, later ones winning: defaults in code → an optional TOML file → environment
//! variables `ESCALATIONS__SECTION__KEY` (double underscore; e.g.
//! `ESCALATIONS__BROKER__SHARDS=8`). The bot list comes from the file's `[[bots]]`, or
//! whole from `ESCALATIONS__BOTS_JSON` (a JSON array). Unknown keys are errors.
//! Validation runs on load and reports every problem at once, one `key: problem` per line
//! (`bots[1].webhook_url: must be an http(s) URL`). Secrets never print: [`Secret`]
//! shows `***` and URL passwords are redacted in `Debug`. `config/example.toml` at the
//! repository root documents every key.
//!
//! - [`load`]: [`Settings`], [`Settings::load`] and [`Settings::from_sources`], bot
//!   lookup ([`Settings::bot`], [`Settings::bot_for_key`]).
//! - [`sections`]: the service-wide sections: [`HttpConfig`], [`BrokerConfig`],
//!   [`DatabaseConfig`], [`WidgetConfig`], [`WebhookConfig`], [`LogConfig`].
//! - [`roles`]: the process-level sections: [`WorkerSettings`] (`[worker]`),
//!   [`AdminConfig`] (`[admin]`), and [`Role`], which picks the admin listener's default.
//! - [`show`]: [`Settings::to_redacted_toml`], what `escalations config check` prints.
//! - [`demo`]: [`DemoConfig`], the demo widget page.
//! - [`bots`]: [`BotConfig`], [`BotDefaults`], [`BotOverrides`], [`EffectiveBot`].
//! - [`secret`]: [`Secret`], [`redact_url`] and [`redact_urls`].
//! - [`validate`]: the rules, and [`Problems`] listing what broke them.
//! - [`addresses`]: [`AddressPolicy`] and the one table of address ranges webhooks are
//!   refused, used by `config check` and by the delivery guard.

pub mod addresses;
pub mod bots;
pub mod demo;
pub mod load;
pub mod roles;
pub mod secret;
pub mod sections;
pub mod show;
pub mod validate;

use std::path::PathBuf;

pub use addresses::{AddressPolicy, Blocked};
pub use bots::{BotConfig, BotDefaults, BotOverrides, EffectiveBot, WEBHOOK_SECRET_PREFIX};
pub use demo::DemoConfig;
pub use load::{BOTS_JSON_VAR, ENV_PREFIX, ENV_SEPARATOR, Settings};
pub use roles::{AdminConfig, Role, WorkerSettings};
pub use secret::{Secret, redact_url, redact_urls};
pub use sections::{
    BrokerConfig, DatabaseConfig, HttpConfig, LogConfig, LogFormat, WebhookConfig, WidgetConfig,
};
pub use validate::{MIN_ADMIN_TOKEN_CHARS, MIN_API_KEY_CHARS, MIN_TOKEN_SECRET_BYTES, Problem, Problems};

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings file named on the command line does not exist (or is not a file).
    #[error("settings file {} not found", path.display())]
    FileNotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The settings file exists but could not be read.
    #[error("cannot read settings file {}: {source}", path.display())]
    ReadFile {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An `ESCALATIONS__*` variable's value is not valid Unicode.
    #[error("environment variable {name} is not valid UTF-8")]
    NonUnicodeEnv {
        /// The variable's name.
        name: String,
    },
    /// The file is not valid TOML, or a value has the wrong type or an unknown key
    /// (the message names the key and where it came from).
    #[error("cannot load settings: {0}")]
    Load(#[from] config::ConfigError),
    /// `ESCALATIONS__BOTS_JSON` is not a JSON array of bots.
    #[error("cannot load settings: {BOTS_JSON_VAR}: {0}")]
    BotsJson(#[source] serde_json::Error),
    /// The settings broke one or more rules; every problem is listed.
    #[error("invalid settings ({}):\n{}", count(.0), .0)]
    Invalid(Problems),
}

impl Error {
    /// The validation problems, if that is what this error is.
    pub fn problems(&self) -> Option<&Problems> {
        match self {
            Self::Invalid(p) => Some(p),
            _ => None,
        }
    }
}

/// "1 problem", "3 problems".
fn count(problems: &Problems) -> String {
    match problems.len() {
        1 => "1 problem".to_owned(),
        n => format!("{n} problems"),
    }
}
