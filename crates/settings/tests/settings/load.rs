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
    let text = include_str!("../../../../config/example.toml");
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

// ---- the process environment, read in a child process ----------------------
// A test cannot set variables in its own process (`set_var` is unsafe and the
// workspace forbids unsafe code), so these run the two `#[ignore]`d tests
// below in a child process of this test binary with the environment given.

/// Runs the ignored test `name` of this binary with exactly `vars` as its environment.
fn run_child(name: &str, vars: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = std::process::Command::new(exe);
    // Test names are paths from the test crate's root: `load::name`.
    let path = module_path!().split_once("::").map_or(String::new(), |(_, module)| format!("{module}::"));
    child.args([format!("{path}{name}").as_str(), "--exact", "--ignored", "--test-threads=1"]).env_clear();
    for (key, value) in vars {
        child.env(key, value);
    }
    let output = child.output().expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}");
    output
}

#[test]
fn load_reads_the_process_environment() {
    use std::os::unix::ffi::OsStrExt;
    let not_utf8 = std::ffi::OsStr::from_bytes(b"caf\xe9");
    let output = run_child(
        "child_reads_its_environment",
        &[
            ("ESCALATIONS__WIDGET__TOKEN_SECRET", TOKEN.as_ref()),
            ("ESCALATIONS__BROKER__SHARDS", "7".as_ref()),
            ("ESCALATIONS__BOTS_JSON", format!(r#"[{{"id":"env-bot","api_keys":"{KEY_B}"}}]"#).as_ref()),
            // Not ours: never looked at, even when not UTF-8.
            ("OTHER__BROKER__SHARDS", not_utf8),
            ("ESCALATIONS_CONFIG", not_utf8),
        ],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    let output = run_child(
        "child_refuses_a_variable_that_is_not_utf8",
        &[("ESCALATIONS__WIDGET__TOKEN_SECRET", TOKEN.as_ref()), ("ESCALATIONS__LOG__FILTER", not_utf8)],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
}

#[test]
#[ignore = "run by load_reads_the_process_environment in a child process"]
fn child_reads_its_environment() {
    let s = Settings::load(None).expect("valid");
    assert_eq!(s.broker.shards, 7);
    assert_eq!(s.widget.token_secret.expose(), TOKEN);
    assert_eq!(s.bots.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), ["env-bot"]);
}

#[test]
#[ignore = "run by load_reads_the_process_environment in a child process"]
fn child_refuses_a_variable_that_is_not_utf8() {
    let err = Settings::load(None).expect_err("not UTF-8");
    assert!(matches!(&err, Error::NonUnicodeEnv { name } if name == "ESCALATIONS__LOG__FILTER"), "{err}");
    assert_eq!(err.to_string(), "environment variable ESCALATIONS__LOG__FILTER is not valid UTF-8");
}

#[test]
fn load_tells_a_missing_file_from_an_unreadable_one() {
    let dir = std::env::temp_dir().join(format!("settings-test-kinds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("plain.toml");
    std::fs::write(&file, "").expect("write");
    let as_dir = Settings::load(Some(&dir)).expect_err("a directory is not a settings file");
    // Below a plain file: not "missing" but unreadable (not a directory).
    let below_file = Settings::load(Some(&file.join("x.toml"))).expect_err("unreadable");
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert!(matches!(as_dir, Error::FileNotFound { .. }), "{as_dir}");
    assert!(matches!(below_file, Error::ReadFile { .. }), "{below_file}");
    assert!(below_file.to_string().starts_with("cannot read settings file "), "{below_file}");
    assert!(below_file.problems().is_none());
}

#[test]
fn a_blank_bots_json_keeps_the_file_list() {
    let s =
        Settings::from_sources(Some(&two_bots()), env(&[("ESCALATIONS__BOTS_JSON", "  ")])).expect("valid");
    assert_eq!(s.bots.len(), 2);
    // The variable's name is matched whatever its case.
    let json = format!(r#"[{{"id":"json-bot","api_keys":["{KEY_B}"]}}]"#);
    let s = Settings::from_sources(Some(&two_bots()), env(&[("escalations__bots_json", json.as_str())]))
        .expect("valid");
    assert_eq!(s.bots.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), ["json-bot"]);
}

#[test]
fn keys_may_be_numbers_and_are_read_as_their_digits() {
    // TOML integers, and JSON positive and negative ones, one alone or in a list.
    let toml = "[[bots]]\nid = \"a\"\napi_keys = 1234567890123456789\n\
                [[bots]]\nid = \"b\"\napi_keys = [-1234567890123456789]\n\
                [[bots]]\nid = \"c\"\napi_keys = -2234567890123456789\n";
    let s = Settings::from_sources(Some(toml), env(&[])).expect("valid");
    assert_eq!(s.bot_for_key("1234567890123456789").map(|b| b.id.as_str()), Some("a"));
    assert_eq!(s.bot_for_key("-1234567890123456789").map(|b| b.id.as_str()), Some("b"));
    assert_eq!(s.bot_for_key("-2234567890123456789").map(|b| b.id.as_str()), Some("c"));
    let json = r#"[{"id":"j1","api_keys":3234567890123456789},
                   {"id":"j2","api_keys":[4234567890123456789, -5234567890123456789, "json-key-0123456789"]},
                   {"id":"j3","api_keys":-6234567890123456789}]"#;
    let s = Settings::from_sources(None, env(&[("ESCALATIONS__BOTS_JSON", json)])).expect("valid");
    for (key, bot) in [
        ("3234567890123456789", "j1"),
        ("4234567890123456789", "j2"),
        ("-5234567890123456789", "j2"),
        ("json-key-0123456789", "j2"),
        ("-6234567890123456789", "j3"),
    ] {
        assert_eq!(s.bot_for_key(key).map(|b| b.id.as_str()), Some(bot), "{key}");
    }
    let one = r#"[{"id":"j","api_keys":"json-key-0123456789"}]"#;
    let s = Settings::from_sources(None, env(&[("ESCALATIONS__BOTS_JSON", one)])).expect("valid");
    assert_eq!(s.bots[0].api_keys.len(), 1);
    assert!(s.bots[0].api_keys[0].ct_eq("json-key-0123456789"));
}

#[test]
fn a_key_of_another_type_is_refused_without_echoing_it() {
    let err = Settings::from_sources(Some("[[bots]]\nid = \"a\"\napi_keys = [1.5]\n"), env(&[]))
        .expect_err("a float is not a key");
    let text = err.to_string();
    assert!(text.contains("expected a secret string"), "{text}");
    assert!(!text.contains("1.5"), "{text}");
    let err = Settings::from_sources(Some("[[bots]]\nid = \"a\"\napi_keys = true\n"), env(&[]))
        .expect_err("a boolean is not a key");
    assert!(err.to_string().contains("expected a list of secret strings"), "{err}");
}

#[test]
fn section_debug_shows_every_field_but_passwords() {
    let broker = format!("{:?}", BrokerConfig::default());
    assert_eq!(
        broker,
        "BrokerConfig { url: \"amqp://guest:***@127.0.0.1:5672/%2f\", prefix: \"escalations\", shards: 32, \
         delivery_limit: 5, publish_channels: 8, prefetch: 256, confirm_timeout_ms: 5000, quorum_size: 3 }"
    );
    let database = DatabaseConfig { url: "postgres://u:pw@db:5432/app".into(), ..DatabaseConfig::default() };
    assert_eq!(
        format!("{database:?}"),
        "DatabaseConfig { url: \"postgres://u:***@db:5432/app\", schema: \"escalations\", pool_size: 16 }"
    );
}
