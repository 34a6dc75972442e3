//! Loading: defaults, file, environment, bots, lookups, secrecy.

use std::net::SocketAddr;

use settings::{
    BotDefaults, BrokerConfig, DatabaseConfig, EffectiveBot, Error, HttpConfig, LogConfig, LogFormat, Secret,
    Settings, WebhookConfig,
};

const TOKEN: &str = "test-token-secret-0123456789abcdef";
const KEY_A1: &str = "acme-key-one-0123456789";
const KEY_A2: &str = "acme-key-two-0123456789";
const KEY_B: &str = "beta-key-0123456789abc";
const WHSEC_1: &str = "whsec_ouHWZ9mG8iWN820a7RjFnncMnX+Xt3I5DkIRbMWrSeg=";
const WHSEC_2: &str = "whsec_h48jUI6u/hG8itFBsD6E1mCaU21XIKGcF0aFhcxE6Tw=";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = vec![("ESCALATIONS__WIDGET__TOKEN_SECRET".to_owned(), TOKEN.to_owned())];
    vars.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    vars
}

fn two_bots() -> String {
    format!(
        r#"
[webhooks]
allow_loopback = true

[[bots]]
id = "acme"
api_keys = ["{KEY_A1}", "{KEY_A2}"]
webhook_url = "https://cc.acme.example/hooks"
webhook_secrets = ["{WHSEC_1}", "{WHSEC_2}"]
overrides = {{ no_response_timeout_secs = 30, event_rejected = false }}

[[bots]]
id = "beta.bot_2"
api_keys = "{KEY_B}"
webhook_url = "http://127.0.0.1:9000/hook"
webhook_secrets = ["{WHSEC_2}"]
"#
    )
}

#[test]
fn defaults_load() {
    let s = Settings::from_sources(None, env(&[])).expect("defaults are valid");
    assert_eq!(s.http, HttpConfig::default());
    assert_eq!(s.http.bind, "0.0.0.0:8080".parse::<SocketAddr>().expect("addr"));
    assert_eq!(s.http.body_limit_bytes, 65536);
    assert_eq!(s.broker, BrokerConfig::default());
    assert_eq!(s.broker.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_eq!(s.broker.shards, 32);
    assert_eq!(s.database, DatabaseConfig::default());
    assert_eq!(s.database.schema, "escalations");
    assert_eq!(s.widget.token_secret.expose(), TOKEN);
    assert_eq!(s.widget.token_ttl_secs, 86400);
    assert_eq!((s.widget.visitor_rate_per_sec, s.widget.visitor_rate_burst), (5, 20));
    assert_eq!((s.widget.stream_opens_per_sec, s.widget.instance_stream_open_burst), (1, 2000));
    assert_eq!(s.webhooks, WebhookConfig::default());
    assert!(!s.webhooks.allow_loopback);
    assert_eq!(s.defaults, BotDefaults::default());
    assert_eq!(s.defaults.no_response_timeout_secs, 120);
    assert!(s.defaults.event_rejected);
    assert_eq!(s.log, LogConfig::default());
    assert_eq!(s.log.format, LogFormat::Pretty);
    assert!(s.bots.is_empty());
}

#[test]
fn token_secret_has_no_default() {
    let err = Settings::from_sources(None, Vec::new()).expect_err("no token secret");
    let problems = err.problems().expect("a validation error");
    assert!(problems.has_key("widget.token_secret"), "{err}");
    assert_eq!(problems.len(), 1, "{err}");
}

#[test]
fn file_overrides_defaults() {
    let toml = r#"
        [http]
        bind = "127.0.0.1:9999"
        [broker]
        shards = 4
        prefix = "test-run.1"
        [database]
        schema = "test_run_1"
        [log]
        format = "json"
    "#;
    let s = Settings::from_sources(Some(toml), env(&[])).expect("valid");
    assert_eq!(s.http.bind.port(), 9999);
    assert_eq!(s.http.body_limit_bytes, 65536, "unset keys keep defaults");
    assert_eq!(s.broker.shards, 4);
    assert_eq!(s.broker.prefix, "test-run.1");
    assert_eq!(s.broker.prefetch, 256);
    assert_eq!(s.database.schema, "test_run_1");
    assert_eq!(s.log.format, LogFormat::Json);
}

#[test]
fn env_overrides_file() {
    let toml = "[broker]\nshards = 4\nprefetch = 10\n";
    let s = Settings::from_sources(
        Some(toml),
        env(&[
            ("ESCALATIONS__BROKER__SHARDS", "8"),
            ("ESCALATIONS__WEBHOOKS__ALLOW_PRIVATE", "true"),
            ("ESCALATIONS__HTTP__BODY_LIMIT_BYTES", "1024"),
            ("ESCALATIONS__DEFAULTS__TTL_SECS", "60"),
            ("ESCALATIONS__LOG__FORMAT", "json"),
            ("ESCALATIONS__DATABASE__URL", "postgres://u:pw@db:5432/app"),
            ("ESCALATIONS__BROKER__PREFIX", ""),
            ("PATH", "/usr/bin"),
            ("OTHER__BROKER__SHARDS", "999"),
        ]),
    )
    .expect("valid");
    assert_eq!(s.broker.shards, 8, "env wins over the file");
    assert_eq!(s.broker.prefetch, 10, "file value kept where env is silent");
    assert_eq!(s.broker.prefix, "escalations", "empty env value counts as unset");
    assert!(s.webhooks.allow_private);
    assert_eq!(s.http.body_limit_bytes, 1024);
    assert_eq!(s.defaults.ttl_secs, 60);
    assert_eq!(s.log.format, LogFormat::Json);
    assert_eq!(s.database.url, "postgres://u:pw@db:5432/app");
}

#[test]
fn bots_from_toml_with_two_keys_and_two_secrets() {
    let s = Settings::from_sources(Some(&two_bots()), env(&[])).expect("valid");
    assert_eq!(s.bots.len(), 2);
    let acme = s.bot("acme").expect("acme");
    assert_eq!(acme.api_keys.len(), 2);
    assert_eq!(acme.webhook_secrets.len(), 2);
    assert_eq!(acme.webhook_url.as_ref().map(|u| u.as_str()), Some("https://cc.acme.example/hooks"));
    let keys = acme.webhook_keys();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.len() == 32));

    let beta = s.bot("beta.bot_2").expect("beta");
    assert_eq!(beta.api_keys.len(), 1, "a single key string is a list of one");
    assert!(s.bot("nobody").is_none());
}

#[test]
fn effective_resolves_overrides() {
    let s = Settings::from_sources(Some(&two_bots()), env(&[])).expect("valid");
    let acme = s.bot("acme").expect("acme").effective(&s.defaults);
    assert_eq!(
        acme,
        EffectiveBot {
            no_response_timeout_secs: 30,
            queue_timeout_secs: 1800,
            idle_timeout_secs: 1800,
            ttl_secs: 86400,
            max_held_messages: 20,
            escalate_budget_secs: 120,
            delivery_budget_secs: 86400,
            rate_limit_per_sec: 100,
            rate_limit_burst: 200,
            event_rejected: false,
        }
    );
    let beta = s.bot("beta.bot_2").expect("beta").effective(&s.defaults);
    assert_eq!(beta.no_response_timeout_secs, 120);
    assert!(beta.event_rejected);
}

#[test]
fn bot_for_key_finds_the_bot_by_either_key() {
    let s = Settings::from_sources(Some(&two_bots()), env(&[])).expect("valid");
    let id = |key: &str| s.bot_for_key(key).map(|b| b.id.as_str());
    assert_eq!(id(KEY_A1), Some("acme"));
    assert_eq!(id(KEY_A2), Some("acme"));
    assert_eq!(id(KEY_B), Some("beta.bot_2"));
    assert_eq!(id("acme-key-one-012345678"), None, "a prefix is not the key");
    assert_eq!(id("acme-key-one-01234567890"), None, "nor is a longer string");
    assert_eq!(id(""), None);
}

#[test]
fn bots_json_env_replaces_the_file_list() {
    let json = format!(r#"[{{"id":"json-bot","api_keys":["{KEY_B}"],"overrides":{{"ttl_secs":5}}}}]"#);
    let s = Settings::from_sources(Some(&two_bots()), env(&[("ESCALATIONS__BOTS_JSON", json.as_str())]))
        .expect("valid");
    assert_eq!(s.bots.len(), 1);
    assert_eq!(s.bots[0].id, "json-bot");
    assert_eq!(s.bots[0].effective(&s.defaults).ttl_secs, 5);
    assert!(s.bots[0].webhook_url.is_none());
}

#[test]
fn bots_json_errors_are_reported() {
    let err =
        Settings::from_sources(None, env(&[("ESCALATIONS__BOTS_JSON", "{not json")])).expect_err("bad json");
    assert!(matches!(err, Error::BotsJson(_)), "{err}");
    assert!(err.to_string().contains("ESCALATIONS__BOTS_JSON"), "{err}");
}

#[test]
fn unknown_keys_and_bad_types_name_the_key() {
    let err = Settings::from_sources(Some("[broker]\nshardz = 3\n"), env(&[])).expect_err("unknown key");
    assert!(err.to_string().contains("shardz"), "{err}");

    let err =
        Settings::from_sources(None, env(&[("ESCALATIONS__BROKER__SHARDS", "many")])).expect_err("bad type");
    assert!(err.to_string().contains("broker.shards"), "{err}");

    let err = Settings::from_sources(Some("[broker]\nshards = 70000\n"), env(&[]))
        .expect_err("out of range for u16");
    assert!(matches!(err, Error::Load(_)), "{err}");
}

#[test]
fn load_reads_a_file_and_refuses_a_missing_one() {
    let missing = std::env::temp_dir().join("settings-test-does-not-exist.toml");
    let err = Settings::load(Some(&missing)).expect_err("missing file");
    assert!(matches!(err, Error::FileNotFound { .. }), "{err}");
    assert!(err.to_string().contains("settings-test-does-not-exist.toml"));

    let dir = std::env::temp_dir().join(format!("settings-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("settings.toml");
    let toml = format!("[widget]\ntoken_secret = \"{TOKEN}\"\n[broker]\nshards = 3\n");
    std::fs::write(&path, toml).expect("write");
    let loaded = Settings::load(Some(&path));
    std::fs::remove_dir_all(&dir).expect("cleanup");
    // The process environment may legitimately override `shards`; it never unsets it.
    let s = loaded.expect("valid file");
    if std::env::var_os("ESCALATIONS__BROKER__SHARDS").is_none() {
        assert_eq!(s.broker.shards, 3);
    }
}

#[test]
fn example_file_parses_and_validates() {
    let text = include_str!("../../../config/example.toml");
    let s = Settings::from_sources(Some(text), Vec::new()).expect("example.toml is valid");
    assert_eq!(s.bots.len(), 2);
    let acme = s.bot("acme-support").expect("acme");
    assert_eq!(acme.api_keys.len(), 2);
    assert_eq!(acme.webhook_secrets.len(), 2);
    assert_eq!(acme.effective(&s.defaults).no_response_timeout_secs, 60);
    let globex = s.bot("globex.sales").expect("globex");
    assert_eq!(globex.effective(&s.defaults).rate_limit_per_sec, 20);
    assert!(s.bot_for_key("example-acme-key-2025-rotate-me").is_some());
}

#[test]
fn secrets_never_show_in_debug() {
    let s = Settings::from_sources(
        Some(&two_bots()),
        env(&[("ESCALATIONS__DATABASE__URL", "postgres://u:dbpass@db/app")]),
    )
    .expect("valid");
    let shown = format!("{s:?} {s:#?}");
    for secret in [TOKEN, KEY_A1, KEY_A2, KEY_B, WHSEC_1, WHSEC_2, "dbpass"] {
        assert!(!shown.contains(secret), "Debug leaked a secret");
    }
    assert!(!shown.contains(":guest@"), "Debug leaked the broker password");
    assert!(shown.contains("***"));
    assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
}
