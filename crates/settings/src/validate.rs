//! Start-up validation: every rule checked, every problem reported with its key
//! (`bots[1].webhook_url: must be an http(s) URL`).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use url::{Host, Url};

use crate::addresses::{Blocked, classify};
use crate::bots::{BotConfig, BotOverrides, WebhookSecretProblem, decode_webhook_secret};
use crate::load::{RawSettings, Settings};
use crate::sections::WebhookConfig;

/// Shortest accepted widget token key, in bytes.
pub const MIN_TOKEN_SECRET_BYTES: usize = 32;

/// Shortest accepted API key, in characters.
pub const MIN_API_KEY_CHARS: usize = 16;

/// Shortest accepted `admin.token`.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// One thing wrong with the settings: the key (as written in the file, with list
/// indexes, e.g. `bots[1].api_keys[0]`) and what is wrong with it. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The offending key, e.g. `broker.shards` or `bots[1].webhook_url`.
    pub key: String,
    /// What is wrong and, where useful, how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found in one validation, in the order of the settings' sections.
/// `Display` writes one `key: problem` per line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// The problems, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some problem is about exactly `key`.
    pub fn has_key(&self, key: &str) -> bool {
        self.0.iter().any(|p| p.key == key)
    }
}

impl<'a> IntoIterator for &'a Problems {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Turns the deserialized settings into [`Settings`], or lists everything wrong.
pub(crate) fn raw_settings(raw: RawSettings) -> Result<Settings, Problems> {
    let mut url_errors = Vec::with_capacity(raw.bots.len());
    let bots = raw
        .bots
        .into_iter()
        .map(|b| {
            let (webhook_url, error) = match b.webhook_url.as_deref().map(str::trim) {
                None | Some("") => (None, None),
                Some(text) => match Url::parse(text) {
                    Ok(url) => (Some(url), None),
                    Err(e) => (None, Some(format!("must be an http(s) URL ({e})"))),
                },
            };
            url_errors.push(error);
            BotConfig {
                id: b.id,
                api_keys: b.api_keys,
                webhook_url,
                webhook_secrets: b.webhook_secrets,
                overrides: b.overrides,
            }
        })
        .collect();
    let settings = Settings {
        http: raw.http,
        broker: raw.broker,
        database: raw.database,
        widget: raw.widget,
        webhooks: raw.webhooks,
        defaults: raw.defaults,
        bots,
        log: raw.log,
        worker: raw.worker,
        admin: raw.admin,
        demo: raw.demo,
    };
    let problems = self::settings(&settings, url_errors);
    if problems.is_empty() { Ok(settings) } else { Err(problems) }
}

/// Every problem of `s`. `url_errors[i]`, if any, is why bot `i`'s URL did not parse.
pub(crate) fn settings(s: &Settings, url_errors: Vec<Option<String>>) -> Problems {
    let mut c = Checker(Vec::new());

    c.at_least_one("http.body_limit_bytes", s.http.body_limit_bytes as u64);
    if s.http.escalate_wait_ms > 10_000 {
        c.fail("http.escalate_wait_ms", "must be at most 10000 (10 s)");
    }

    match s.broker.urls().as_slice() {
        [] => c.fail("broker.url", "at least one amqp or amqps URL is required"),
        [url] => check_url(&mut c, "broker.url", url, &["amqp", "amqps"]),
        urls => {
            for (i, url) in urls.iter().enumerate() {
                check_url(&mut c, &format!("broker.url[{i}]"), url, &["amqp", "amqps"]);
            }
        }
    }
    let prefix = &s.broker.prefix;
    if prefix.is_empty() || prefix.len() > 64 || !is_name(prefix) {
        c.fail("broker.prefix", "must be 1-64 characters of [A-Za-z0-9._-]");
    } else if prefix.starts_with("amq.") {
        c.fail("broker.prefix", "must not start with `amq.` (reserved by RabbitMQ)");
    }
    if !(1..=1024).contains(&s.broker.shards) {
        c.fail("broker.shards", "must be between 1 and 1024");
    }
    c.at_least_one("broker.delivery_limit", s.broker.delivery_limit.into());
    c.at_least_one("broker.publish_channels", s.broker.publish_channels as u64);
    c.at_least_one("broker.prefetch", s.broker.prefetch.into());
    c.at_least_one("broker.confirm_timeout_ms", s.broker.confirm_timeout_ms);
    if !(1..=255).contains(&s.broker.quorum_size) {
        c.fail("broker.quorum_size", "must be between 1 and 255");
    }

    check_database_url(&mut c, "database.url", &s.database.url);
    let schema = &s.database.schema;
    if !is_sql_identifier(schema) {
        c.fail("database.schema", "must be a plain SQL identifier: [a-z_][a-z0-9_]*, at most 63 characters");
    } else if schema.starts_with("pg_") {
        c.fail("database.schema", "must not start with `pg_` (reserved by PostgreSQL)");
    }
    c.at_least_one("database.pool_size", s.database.pool_size as u64);

    match s.widget.token_secret.len() {
        0 => c.fail(
            "widget.token_secret",
            format!(
                "required: a key of at least {MIN_TOKEN_SECRET_BYTES} bytes, the same on \
                 every instance (e.g. ESCALATIONS__WIDGET__TOKEN_SECRET)"
            ),
        ),
        n if n < MIN_TOKEN_SECRET_BYTES => c.fail(
            "widget.token_secret",
            format!("must be at least {MIN_TOKEN_SECRET_BYTES} bytes (got {n})"),
        ),
        _ => {}
    }
    c.at_least_one("widget.token_ttl_secs", s.widget.token_ttl_secs);
    let wg = &s.widget;
    for (key, value) in [
        ("widget.visitor_rate_per_sec", wg.visitor_rate_per_sec),
        ("widget.visitor_rate_burst", wg.visitor_rate_burst),
        ("widget.stream_opens_per_sec", wg.stream_opens_per_sec),
        ("widget.stream_open_burst", wg.stream_open_burst),
        ("widget.instance_stream_opens_per_sec", wg.instance_stream_opens_per_sec),
        ("widget.instance_stream_open_burst", wg.instance_stream_open_burst),
    ] {
        c.at_least_one(key, u64::from(value));
    }

    let w = &s.webhooks;
    c.at_least_one("webhooks.timeout_secs", w.timeout_secs);
    c.at_least_one("webhooks.max_concurrency_per_endpoint", w.max_concurrency_per_endpoint as u64);
    c.at_least_one("webhooks.breaker_failures", w.breaker_failures.into());
    c.at_least_one("webhooks.breaker_cooldown_secs", w.breaker_cooldown_secs);

    check_policy(&mut c, "defaults", &BotOverrides::from(&s.defaults));

    let mut url_errors = url_errors.into_iter();
    for (i, bot) in s.bots.iter().enumerate() {
        let url_error = url_errors.next().flatten();
        check_bot(&mut c, i, bot, url_error, w);
    }
    check_unique(&mut c, &s.bots);
    crate::demo::check(&mut c, &s.demo, &s.bots);

    if s.log.filter.trim().is_empty() {
        c.fail("log.filter", "must not be empty (e.g. `info`)");
    }
    for (key, message) in s.worker.problems() {
        c.fail(key, message);
    }
    let token = s.admin.token.len();
    if token > 0 && token < MIN_ADMIN_TOKEN_CHARS {
        c.fail("admin.token", format!("must be at least {MIN_ADMIN_TOKEN_CHARS} characters (got {token})"));
    }
    c.at_least_one("admin.gauges_refresh_secs", s.admin.gauges_refresh_secs);
    Problems(c.0)
}

/// Collects problems.
pub(crate) struct Checker(Vec<Problem>);

impl Checker {
    pub(crate) fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { key: key.into(), message: message.into() });
    }

    fn at_least_one(&mut self, key: &str, value: u64) {
        if value == 0 {
            self.fail(key, "must be at least 1");
        }
    }
}

/// The numeric policy values under `prefix` (`defaults` or `bots[i].overrides`).
fn check_policy(c: &mut Checker, prefix: &str, values: &BotOverrides) {
    for (name, value) in values.numbers() {
        if value == Some(0) {
            c.fail(format!("{prefix}.{name}"), "must be at least 1");
        }
    }
}

fn check_bot(
    c: &mut Checker,
    i: usize,
    bot: &BotConfig,
    url_error: Option<String>,
    webhooks: &WebhookConfig,
) {
    let key = |field: &str| format!("bots[{i}].{field}");

    if bot.id.is_empty() {
        c.fail(key("id"), "required: 1-128 characters of [A-Za-z0-9._-]");
    } else if bot.id.len() > 128 || !is_name(&bot.id) {
        c.fail(key("id"), "must be 1-128 characters of [A-Za-z0-9._-]");
    }

    if bot.api_keys.is_empty() {
        c.fail(key("api_keys"), "at least one API key is required");
    }
    for (j, k) in bot.api_keys.iter().enumerate() {
        let k = k.expose();
        if !k.bytes().all(|b| b.is_ascii_graphic()) {
            c.fail(key(&format!("api_keys[{j}]")), "must be printable ASCII without spaces");
        } else if k.len() < MIN_API_KEY_CHARS {
            c.fail(
                key(&format!("api_keys[{j}]")),
                format!("must be at least {MIN_API_KEY_CHARS} characters"),
            );
        }
    }

    if let Some(e) = url_error {
        c.fail(key("webhook_url"), e);
    }
    if let Some(url) = &bot.webhook_url {
        check_webhook_url(c, &key("webhook_url"), url, webhooks);
        if bot.webhook_secrets.is_empty() {
            c.fail(key("webhook_secrets"), "at least one secret is required when webhook_url is set");
        }
    }
    for (j, s) in bot.webhook_secrets.iter().enumerate() {
        let message = match decode_webhook_secret(s.expose()) {
            Ok(_) => continue,
            Err(WebhookSecretProblem::Prefix) => {
                "must be a Standard Webhooks secret: `whsec_` then base64".to_owned()
            }
            Err(WebhookSecretProblem::Base64) => "must be `whsec_` then valid base64".to_owned(),
            Err(WebhookSecretProblem::Length(n)) => {
                format!("key must decode to 24-64 bytes (got {n})")
            }
        };
        c.fail(key(&format!("webhook_secrets[{j}]")), message);
    }

    check_policy(c, &key("overrides"), &bot.overrides);
}

/// Bot ids and API keys are unique across all bots (and keys within a bot).
fn check_unique(c: &mut Checker, bots: &[BotConfig]) {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut keys: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, bot) in bots.iter().enumerate() {
        if !bot.id.is_empty() {
            if let Some(first) = ids.get(bot.id.as_str()) {
                c.fail(format!("bots[{i}].id"), format!("duplicate bot id (also bots[{first}].id)"));
            } else {
                ids.insert(&bot.id, i);
            }
        }
        for (j, k) in bot.api_keys.iter().enumerate() {
            if k.is_empty() {
                continue;
            }
            if let Some((fi, fj)) = keys.get(k.expose()) {
                c.fail(
                    format!("bots[{i}].api_keys[{j}]"),
                    format!("same key as bots[{fi}].api_keys[{fj}]; a key must identify one bot"),
                );
            } else {
                keys.insert(k.expose(), (i, j));
            }
        }
    }
}

fn check_url(c: &mut Checker, key: &str, raw: &str, schemes: &[&str]) {
    let wanted = schemes.join(" or ");
    match Url::parse(raw) {
        Ok(url) if schemes.contains(&url.scheme()) => {}
        Ok(_) => c.fail(key, format!("must be a {wanted} URL")),
        Err(e) => c.fail(key, format!("must be a {wanted} URL ({e})")),
    }
}

/// One host, or several (`postgres://u@h1:5432,h2:5432/db`): then each must parse, and
/// `target_session_attrs=read-write` must be there, or a connection could land on a standby.
fn check_database_url(c: &mut Checker, key: &str, raw: &str) {
    let schemes = ["postgres", "postgresql"];
    let Some(hosts) = crate::secret::MultiHost::parse(raw) else {
        return check_url(c, key, raw, &schemes);
    };
    for host in hosts.hosts() {
        if host.trim().is_empty() {
            return c.fail(key, "must not list an empty host");
        }
        let before = c.0.len();
        check_url(c, key, &hosts.with_host(host), &schemes);
        if c.0.len() > before {
            return;
        }
    }
    let read_write = Url::parse(&hosts.with_host(hosts.first())).is_ok_and(|url| {
        url.query_pairs().any(|(name, value)| name == "target_session_attrs" && value == "read-write")
    });
    if !read_write {
        c.fail(key, "several hosts need target_session_attrs=read-write, or writes could go to a standby");
    }
}

fn check_webhook_url(c: &mut Checker, key: &str, url: &Url, webhooks: &WebhookConfig) {
    if !matches!(url.scheme(), "http" | "https") {
        return c.fail(key, "must be an http(s) URL");
    }
    if !url.username().is_empty() || url.password().is_some() {
        c.fail(key, "must not contain a user name or password (deliveries are signed with webhook_secrets)");
    }
    match url.host().as_ref().map(classify_host) {
        None => c.fail(key, "must have a host"),
        Some(Some(Blocked::Loopback)) if !webhooks.allow_loopback => {
            c.fail(key, "is a loopback address; set webhooks.allow_loopback = true to allow it")
        }
        Some(Some(Blocked::Private)) if !webhooks.allow_private => {
            c.fail(key, "is a private or link-local address; set webhooks.allow_private = true to allow it")
        }
        Some(Some(Blocked::Special)) => c.fail(
            key,
            "is an unspecified, multicast, broadcast, documentation or reserved address: never a webhook target",
        ),
        Some(_) => {}
    }
}

/// What a webhook URL's host is, by the table deliveries are checked against
/// ([`crate::addresses`]). Of names, only `localhost` is known here; the
/// delivery guard checks what the others resolve to.
fn classify_host(host: &Host<&str>) -> Option<Blocked> {
    match host {
        Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            (d == "localhost" || d.ends_with(".localhost")).then_some(Blocked::Loopback)
        }
        Host::Ipv4(ip) => classify(IpAddr::V4(*ip)),
        Host::Ipv6(ip) => classify(IpAddr::V6(*ip)),
    }
}

/// `[A-Za-z0-9._-]+` (emptiness is checked by callers).
fn is_name(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An identifier PostgreSQL takes as is, unquoted: `[a-z_][a-z0-9_]*`, ≤ 63 bytes.
fn is_sql_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    first_ok && s.len() <= 63 && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
