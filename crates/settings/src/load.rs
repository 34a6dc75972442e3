//! [`Settings`] and its loading: defaults in code → optional TOML file → environment.

use std::ffi::OsString;
use std::path::Path;

use config::builder::DefaultState;
use config::{Config, ConfigBuilder, Environment, File, FileFormat, FileSourceString, Source};
use serde::Deserialize;

use crate::bots::{BotConfig, BotDefaults, RawBot};
use crate::demo::DemoConfig;
use crate::roles::{AdminConfig, WorkerSettings};
use crate::sections::{BrokerConfig, DatabaseConfig, HttpConfig, LogConfig, WebhookConfig, WidgetConfig};
use crate::{Error, validate};

/// Prefix of every environment variable read (`ESCALATIONS__SECTION__KEY`).
pub const ENV_PREFIX: &str = "ESCALATIONS";

/// Separator between the prefix, the section and the key in environment variable names.
pub const ENV_SEPARATOR: &str = "__";

/// Environment variable holding the whole bot list as a JSON array; when set (and not
/// empty) it replaces the file's `[[bots]]`. Entries have the same keys as in TOML.
pub const BOTS_JSON_VAR: &str = "ESCALATIONS__BOTS_JSON";

/// Everything the service is configured with. Build it with [`Settings::load`]
/// (production) or [`Settings::from_sources`] (tests); both validate.
///
/// `Debug` never shows a secret: [`Secret`](crate::Secret)s print `***` and URL
/// passwords are redacted. `Default` gives the in-code defaults, which do not validate
/// until `widget.token_secret` is set.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The HTTP edge (`[http]`).
    pub http: HttpConfig,
    /// RabbitMQ (`[broker]`).
    pub broker: BrokerConfig,
    /// PostgreSQL (`[database]`).
    pub database: DatabaseConfig,
    /// Widget tokens (`[widget]`).
    pub widget: WidgetConfig,
    /// Outbound webhook transport and address policy (`[webhooks]`).
    pub webhooks: WebhookConfig,
    /// Per-bot policy every bot starts from (`[defaults]`).
    pub defaults: BotDefaults,
    /// The bots (`[[bots]]`, or `ESCALATIONS__BOTS_JSON`). May be empty; ids and API
    /// keys are unique.
    pub bots: Vec<BotConfig>,
    /// Logging (`[log]`).
    pub log: LogConfig,
    /// One worker process's knobs (`[worker]`).
    pub worker: WorkerSettings,
    /// The admin listener of every role (`[admin]`).
    pub admin: AdminConfig,
    /// The demo widget page (`[demo]`).
    pub demo: DemoConfig,
}

/// The settings as deserialized, before validation.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawSettings {
    pub(crate) http: HttpConfig,
    pub(crate) broker: BrokerConfig,
    pub(crate) database: DatabaseConfig,
    pub(crate) widget: WidgetConfig,
    pub(crate) webhooks: WebhookConfig,
    pub(crate) defaults: BotDefaults,
    pub(crate) bots: Vec<RawBot>,
    pub(crate) log: LogConfig,
    pub(crate) worker: WorkerSettings,
    pub(crate) admin: AdminConfig,
    pub(crate) demo: DemoConfig,
}

impl Settings {
    /// Loads the settings the service runs with: defaults, then the TOML `file` if given
    /// (an error if it does not exist), then the process environment
    /// (`ESCALATIONS__SECTION__KEY`, e.g. `ESCALATIONS__BROKER__SHARDS=8`, and
    /// [`BOTS_JSON_VAR`]), then validation.
    ///
    /// Every `ESCALATIONS__*` variable must name a settings key (unknown keys are errors),
    /// so a variable naming the file itself should use another spelling, e.g.
    /// `ESCALATIONS_CONFIG` (single underscore).
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        let env = process_env()?;
        let Some(path) = file else {
            return build(None::<File<FileSourceString, FileFormat>>, env);
        };
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                return Err(Error::FileNotFound { path: path.to_owned() });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::FileNotFound { path: path.to_owned() });
            }
            Err(source) => {
                return Err(Error::ReadFile { path: path.to_owned(), source });
            }
        }
        build(Some(File::from(path).format(FileFormat::Toml)), env)
    }

    /// Like [`load`](Self::load), from a TOML text and explicit environment variables
    /// instead of a file and the process environment, so tests never touch either.
    /// Variables without the `ESCALATIONS__` prefix are ignored.
    ///
    /// ```
    /// let toml = r#"
    ///     [broker]
    ///     shards = 4
    ///
    ///     [[bots]]
    ///     id = "acme"
    ///     api_keys = ["acme-key-0123456789"]
    /// "#;
    /// let env = [
    ///     ("ESCALATIONS__BROKER__SHARDS", "8"),
    ///     ("ESCALATIONS__WIDGET__TOKEN_SECRET", "a-test-key-of-at-least-32-bytes!!"),
    /// ]
    /// .map(|(k, v)| (k.to_owned(), v.to_owned()));
    /// let settings = settings::Settings::from_sources(Some(toml), env)?;
    /// assert_eq!(settings.broker.shards, 8);
    /// assert_eq!(settings.bot_for_key("acme-key-0123456789").map(|b| b.id.as_str()), Some("acme"));
    /// # Ok::<(), settings::Error>(())
    /// ```
    pub fn from_sources(
        toml: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, Error> {
        build(toml.map(|t| File::from_str(t, FileFormat::Toml)), env)
    }

    /// Like [`load`](Self::load) without a file, from a built-in TOML text instead
    /// (e.g. a development configuration compiled into the binary), then the
    /// process environment, then validation.
    pub fn load_builtin(toml: &str) -> Result<Self, Error> {
        build(Some(File::from_str(toml, FileFormat::Toml)), process_env()?)
    }

    /// The bot with this id.
    pub fn bot(&self, id: &str) -> Option<&BotConfig> {
        self.bots.iter().find(|b| b.id == id)
    }

    /// The bot owning this API key. Every key of every bot is compared, each in constant
    /// time, so the time taken does not tell which key or bot came close.
    pub fn bot_for_key(&self, key: &str) -> Option<&BotConfig> {
        self.bots.iter().fold(None, |found, bot| match (found, bot.has_api_key(key)) {
            (None, true) => Some(bot),
            (found, _) => found,
        })
    }

    /// Checks every rule, reporting all problems at once as [`Error::Invalid`]. Loading
    /// already does this; call it on settings changed or built in code.
    pub fn validate(&self) -> Result<(), Error> {
        let problems = validate::settings(self, Vec::new());
        if problems.is_empty() { Ok(()) } else { Err(Error::Invalid(problems)) }
    }
}

/// Merges the sources, deserializes, applies the bot list from JSON, then validates.
fn build<S>(file: Option<S>, env: impl IntoIterator<Item = (String, String)>) -> Result<Settings, Error>
where
    S: Source + Send + Sync + 'static,
{
    let mut vars = config::Map::new();
    let mut bots_json = None;
    for (key, value) in env {
        if key.eq_ignore_ascii_case(BOTS_JSON_VAR) {
            bots_json = Some(value);
        } else {
            vars.insert(key, value);
        }
    }

    let mut builder: ConfigBuilder<DefaultState> = Config::builder();
    if let Some(file) = file {
        builder = builder.add_source(file);
    }
    let merged = builder
        .add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .ignore_empty(true)
                .source(Some(vars)),
        )
        .build()?;
    let mut raw: RawSettings = merged.try_deserialize()?;

    if let Some(json) = bots_json.filter(|j| !j.trim().is_empty()) {
        raw.bots = serde_json::from_str(&json).map_err(Error::BotsJson)?;
    }
    validate::raw_settings(raw).map_err(Error::Invalid)
}

/// The process's `ESCALATIONS__*` variables. A non-Unicode value is an error naming the
/// variable; other variables are not looked at.
fn process_env() -> Result<Vec<(String, String)>, Error> {
    let wanted = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
    let mut vars = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Ok(key) = key.into_string() else { continue };
        let is_ours = key.get(..wanted.len()).is_some_and(|p| p.eq_ignore_ascii_case(&wanted));
        if !is_ours {
            continue;
        }
        match OsString::into_string(value) {
            Ok(value) => vars.push((key, value)),
            Err(_) => return Err(Error::NonUnicodeEnv { name: key }),
        }
    }
    Ok(vars)
}
