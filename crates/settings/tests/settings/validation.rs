//! Validation: every rule names its key, and all problems come at once.

use settings::{Error, Problems, Secret, Settings};

const TOKEN: &str = "test-token-secret-0123456789abcdef";
const WHSEC: &str = "whsec_ouHWZ9mG8iWN820a7RjFnncMnX+Xt3I5DkIRbMWrSeg=";

fn env() -> Vec<(String, String)> {
    vec![("ESCALATIONS__WIDGET__TOKEN_SECRET".to_owned(), TOKEN.to_owned())]
}

fn problems(toml: &str) -> Problems {
    match Settings::from_sources(Some(toml), env()) {
        Err(Error::Invalid(p)) => p,
        Err(other) => panic!("expected validation problems, got: {other}"),
        Ok(_) => panic!("expected validation problems, got valid settings for:\n{toml}"),
    }
}

/// A valid bot entry with the given extra lines (later keys must not repeat these).
fn bot(id: &str, key: &str, extra: &str) -> String {
    format!("[[bots]]\nid = \"{id}\"\napi_keys = [\"{key}\"]\n{extra}\n")
}

/// Asserts that `toml` fails with exactly one problem, on `key`, mentioning `fragment`.
fn assert_problem(toml: &str, key: &str, fragment: &str) {
    let p = problems(toml);
    assert!(p.has_key(key), "expected a problem at {key}, got:\n{p}");
    let line = p.iter().find(|x| x.key == key).map(ToString::to_string);
    let line = line.unwrap_or_default();
    assert!(line.contains(fragment), "{line:?} lacks {fragment:?}");
    assert_eq!(p.len(), 1, "expected only {key}, got:\n{p}");
}

#[test]
fn service_sections_are_checked_by_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("[http]\nbody_limit_bytes = 0", "http.body_limit_bytes", "at least 1"),
        ("[http]\nescalate_wait_ms = 10001", "http.escalate_wait_ms", "at most 10000"),
        ("[broker]\nshards = 0", "broker.shards", "between 1 and 1024"),
        ("[broker]\nshards = 1025", "broker.shards", "between 1 and 1024"),
        ("[broker]\nprefix = \"\"", "broker.prefix", "[A-Za-z0-9._-]"),
        ("[broker]\nprefix = \"a b\"", "broker.prefix", "[A-Za-z0-9._-]"),
        ("[broker]\nprefix = \"amq.x\"", "broker.prefix", "amq."),
        ("[broker]\nurl = \"http://x\"", "broker.url", "amqp or amqps"),
        ("[broker]\nurl = \"nope\"", "broker.url", "amqp or amqps"),
        ("[broker]\nprefetch = 0", "broker.prefetch", "at least 1"),
        ("[broker]\ndelivery_limit = 0", "broker.delivery_limit", "at least 1"),
        ("[broker]\npublish_channels = 0", "broker.publish_channels", "at least 1"),
        ("[broker]\nconfirm_timeout_ms = 0", "broker.confirm_timeout_ms", "at least 1"),
        ("[database]\nurl = \"mysql://x/y\"", "database.url", "postgres"),
        ("[database]\nschema = \"Bad-Schema\"", "database.schema", "SQL identifier"),
        ("[database]\nschema = \"1abc\"", "database.schema", "SQL identifier"),
        ("[database]\nschema = \"x; drop\"", "database.schema", "SQL identifier"),
        ("[database]\nschema = \"pg_mine\"", "database.schema", "pg_"),
        ("[database]\npool_size = 0", "database.pool_size", "at least 1"),
        ("[widget]\ntoken_ttl_secs = 0", "widget.token_ttl_secs", "at least 1"),
        ("[widget]\nvisitor_rate_burst = 0", "widget.visitor_rate_burst", "at least 1"),
        ("[widget]\ninstance_stream_opens_per_sec = 0", "widget.instance_stream_opens_per_sec", "at least 1"),
        ("[webhooks]\ntimeout_secs = 0", "webhooks.timeout_secs", "at least 1"),
        ("[webhooks]\nbreaker_failures = 0", "webhooks.breaker_failures", "at least 1"),
        ("[webhooks]\nbreaker_cooldown_secs = 0", "webhooks.breaker_cooldown_secs", "at least 1"),
        (
            "[webhooks]\nmax_concurrency_per_endpoint = 0",
            "webhooks.max_concurrency_per_endpoint",
            "at least 1",
        ),
        ("[defaults]\nqueue_timeout_secs = 0", "defaults.queue_timeout_secs", "at least 1"),
        ("[defaults]\nrate_limit_burst = 0", "defaults.rate_limit_burst", "at least 1"),
        ("[log]\nfilter = \" \"", "log.filter", "must not be empty"),
    ];
    for (toml, key, fragment) in cases {
        assert_problem(toml, key, fragment);
    }
}

#[test]
fn a_short_token_secret_is_reported_from_file_or_env() {
    let from_file = Settings::from_sources(Some("[widget]\ntoken_secret = \"short\""), Vec::new());
    let from_env = Settings::from_sources(
        None,
        vec![("ESCALATIONS__WIDGET__TOKEN_SECRET".to_owned(), "short".to_owned())],
    );
    for result in [from_file, from_env] {
        let err = result.expect_err("short secret");
        let text = err.to_string();
        assert!(text.contains("widget.token_secret: must be at least 32 bytes (got 5)"), "{text}");
        assert!(!text.contains("short"), "the secret was quoted:\n{text}");
    }
}

#[test]
fn bots_are_checked_by_key() {
    let ok = bot("good", "good-key-0123456789", "");
    let cases: Vec<(String, &str, &str)> = vec![
        (bot("", "k-0123456789abcdef", ""), "bots[1].id", "required"),
        (bot("has space", "k-0123456789abcdef", ""), "bots[1].id", "[A-Za-z0-9._-]"),
        (bot(&"x".repeat(129), "k-0123456789abcdef", ""), "bots[1].id", "1-128"),
        (bot("b", "short", ""), "bots[1].api_keys[0]", "at least 16"),
        (bot("b", "has space 0123456789", ""), "bots[1].api_keys[0]", "printable ASCII"),
        ("[[bots]]\nid = \"b\"\napi_keys = []\n".to_owned(), "bots[1].api_keys", "at least one"),
        (
            bot(
                "b",
                "k-0123456789abcdef",
                "webhook_url = \"ftp://cc.example/x\"\nwebhook_secrets = [\"WHSEC\"]",
            ),
            "bots[1].webhook_url",
            "must be an http(s) URL",
        ),
        (
            bot("b", "k-0123456789abcdef", "webhook_url = \"not a url\"\nwebhook_secrets = [\"WHSEC\"]"),
            "bots[1].webhook_url",
            "must be an http(s) URL",
        ),
        (
            bot(
                "b",
                "k-0123456789abcdef",
                "webhook_url = \"https://u:p@cc.example/x\"\nwebhook_secrets = [\"WHSEC\"]",
            ),
            "bots[1].webhook_url",
            "user name or password",
        ),
        (
            bot(
                "b",
                "k-0123456789abcdef",
                "webhook_url = \"http://127.0.0.1:9/x\"\nwebhook_secrets = [\"WHSEC\"]",
            ),
            "bots[1].webhook_url",
            "webhooks.allow_loopback",
        ),
        (
            bot(
                "b",
                "k-0123456789abcdef",
                "webhook_url = \"http://localhost/x\"\nwebhook_secrets = [\"WHSEC\"]",
            ),
            "bots[1].webhook_url",
            "webhooks.allow_loopback",
        ),
        (
            bot(
                "b",
                "k-0123456789abcdef",
                "webhook_url = \"http://[::ffff:10.1.2.3]/x\"\nwebhook_secrets = [\"WHSEC\"]",
            ),
            "bots[1].webhook_url",
            "webhooks.allow_private",
        ),
        (
            bot(
                "b",
                "k-0123456789abcdef",
                "webhook_url = \"http://169.254.169.254/x\"\nwebhook_secrets = [\"WHSEC\"]",
            ),
            "bots[1].webhook_url",
            "webhooks.allow_private",
        ),
        (
            bot("b", "k-0123456789abcdef", "webhook_url = \"https://cc.example/x\""),
            "bots[1].webhook_secrets",
            "required when webhook_url is set",
        ),
        (
            bot("b", "k-0123456789abcdef", "webhook_secrets = [\"abc\"]"),
            "bots[1].webhook_secrets[0]",
            "whsec_",
        ),
        (
            bot("b", "k-0123456789abcdef", "webhook_secrets = [\"whsec_***notbase64\"]"),
            "bots[1].webhook_secrets[0]",
            "valid base64",
        ),
        (
            bot("b", "k-0123456789abcdef", "webhook_secrets = [\"whsec_dGVzdA==\"]"),
            "bots[1].webhook_secrets[0]",
            "got 4",
        ),
        (
            bot("b", "k-0123456789abcdef", "overrides = { idle_timeout_secs = 0 }"),
            "bots[1].overrides.idle_timeout_secs",
            "at least 1",
        ),
        (bot("good", "k-0123456789abcdef", ""), "bots[1].id", "duplicate bot id (also bots[0].id)"),
        (bot("b", "good-key-0123456789", ""), "bots[1].api_keys[0]", "same key as bots[0].api_keys[0]"),
    ];
    for (entry, key, fragment) in cases {
        let toml = format!("{ok}{}", entry.replace("WHSEC", WHSEC));
        assert_problem(&toml, key, fragment);
    }
}

#[test]
fn allowed_addresses_pass() {
    let toml = format!(
        "[webhooks]\nallow_loopback = true\nallow_private = true\n{}{}",
        bot(
            "a",
            "a-key-0123456789abc",
            &format!("webhook_url = \"http://localhost:8080/h\"\nwebhook_secrets = [\"{WHSEC}\"]")
        ),
        bot(
            "b",
            "b-key-0123456789abc",
            &format!("webhook_url = \"http://10.0.0.5/h\"\nwebhook_secrets = [\"{WHSEC}\"]")
        ),
    );
    let s = Settings::from_sources(Some(&toml), env()).expect("allowed");
    assert_eq!(s.bots.len(), 2);
}

#[test]
fn a_key_repeated_within_one_bot_is_reported() {
    let toml = "[[bots]]\nid = \"a\"\napi_keys = [\"k-0123456789abcdef\", \"k-0123456789abcdef\"]\n";
    assert_problem(toml, "bots[0].api_keys[1]", "same key as bots[0].api_keys[0]");
}

#[test]
fn several_problems_are_reported_at_once() {
    let toml = format!(
        "[broker]\nshards = 0\nprefix = \"\"\n[database]\nschema = \"Nope\"\n{}{}",
        bot("dup", "k-0123456789abcdef", ""),
        bot("dup", "k-0123456789abcdef", "webhook_url = \"ftp://x/y\"\nwebhook_secrets = [\"whsec_\"]"),
    );
    let err = Settings::from_sources(Some(&toml), Vec::new()).expect_err("invalid");
    let text = err.to_string();
    let p = err.problems().expect("validation error");
    for key in [
        "broker.shards",
        "broker.prefix",
        "database.schema",
        "widget.token_secret",
        "bots[1].id",
        "bots[1].api_keys[0]",
        "bots[1].webhook_url",
        "bots[1].webhook_secrets[0]",
    ] {
        assert!(p.has_key(key), "missing {key} in:\n{text}");
        assert!(text.contains(&format!("\n  {key}: ")), "{key} not on its own line:\n{text}");
    }
    assert!(text.starts_with(&format!("invalid settings ({} problems):\n", p.len())), "{text}");
    assert!(text.contains("bots[1].webhook_url: must be an http(s) URL"), "{text}");
    assert!(!text.contains("k-0123456789abcdef"), "a problem quoted a key:\n{text}");
}

#[test]
fn validate_checks_settings_changed_in_code() {
    let mut s = Settings::from_sources(None, env()).expect("valid");
    assert!(s.validate().is_ok());
    s.broker.shards = 2000;
    s.widget.token_secret = Secret::new("x");
    let err = s.validate().expect_err("invalid");
    let p = err.problems().expect("validation error");
    assert!(p.has_key("broker.shards") && p.has_key("widget.token_secret"), "{err}");
}

// ---- limits: each at the limit (valid) and one past it (a problem) ----------

/// Asserts that `toml` is valid.
fn assert_valid(toml: &str) {
    if let Err(e) = Settings::from_sources(Some(toml), env()) {
        panic!("expected valid settings for:\n{toml}\ngot: {e}");
    }
}

#[test]
fn service_limits_are_inclusive() {
    let prefix_64 = format!("[broker]\nprefix = \"{}\"", "p".repeat(64));
    let prefix_65 = format!("[broker]\nprefix = \"{}\"", "p".repeat(65));
    let schema_63 = format!("[database]\nschema = \"{}\"", "s".repeat(63));
    let schema_64 = format!("[database]\nschema = \"{}\"", "s".repeat(64));
    for valid in [
        "[http]\nescalate_wait_ms = 10000",
        "[http]\nescalate_wait_ms = 0",
        "[http]\nbody_limit_bytes = 1",
        "[broker]\nshards = 1",
        "[broker]\nshards = 1024",
        "[broker]\nprefix = \"a\"",
        "[broker]\nprefix = \"amq-x.Y_9\"",
        prefix_64.as_str(),
        "[broker]\nurl = \"amqps://h/v\"",
        "[database]\nurl = \"postgresql://h/d\"",
        "[database]\nschema = \"_\"",
        "[database]\nschema = \"a_1\"",
        "[database]\nschema = \"pgx\"",
        schema_63.as_str(),
        "[widget]\ntoken_ttl_secs = 1",
        "[webhooks]\ntimeout_secs = 1",
        "[defaults]\nqueue_timeout_secs = 1",
    ] {
        assert_valid(valid);
    }
    assert_problem(&prefix_65, "broker.prefix", "1-64 characters");
    assert_problem(&schema_64, "database.schema", "at most 63 characters");
    assert_problem("[database]\nschema = \"\"", "database.schema", "SQL identifier");
    assert_problem("[database]\nschema = \"a-b\"", "database.schema", "SQL identifier");
    assert_problem("[database]\nschema = \"aB\"", "database.schema", "SQL identifier");
}

#[test]
fn the_token_secret_is_at_least_32_bytes() {
    let with = |secret: &str| {
        Settings::from_sources(
            None,
            vec![("ESCALATIONS__WIDGET__TOKEN_SECRET".to_owned(), secret.to_owned())],
        )
    };
    assert!(with(&"k".repeat(32)).is_ok());
    // Bytes, not characters: 16 × "é" is 32 bytes.
    assert!(with(&"é".repeat(16)).is_ok());
    let err = with(&"k".repeat(31)).expect_err("short");
    assert!(err.to_string().contains("widget.token_secret: must be at least 32 bytes (got 31)"), "{err}");
    let err = Settings::from_sources(None, Vec::new()).expect_err("unset");
    assert_eq!(
        err.to_string(),
        "invalid settings (1 problem):\n  widget.token_secret: required: a key of at least 32 bytes, the same \
         on every instance (e.g. ESCALATIONS__WIDGET__TOKEN_SECRET)"
    );
}

#[test]
fn bot_limits_are_inclusive() {
    let whsec = |bytes: usize| format!("whsec_{}", base64_of(&vec![7u8; bytes]));
    let valid = [
        bot(&"b".repeat(128), "k-0123456789abcdef", ""),
        bot("a.b_c-D9", "k-0123456789abcdef", ""),
        bot("b", &"k".repeat(16), ""),
        bot("b", "k-0123456789abcdef", &format!("webhook_secrets = [\"{}\", \"{}\"]", whsec(24), whsec(64))),
        bot("b", "k-0123456789abcdef", "webhook_url = \"\""),
        bot("b", "k-0123456789abcdef", "webhook_url = \"  \""),
        bot(
            "b",
            "k-0123456789abcdef",
            &format!("webhook_url = \" https://cc.example/h \"\nwebhook_secrets = [\"{WHSEC}\"]"),
        ),
    ];
    for toml in &valid {
        assert_valid(toml);
    }
    let s = Settings::from_sources(Some(&valid[6]), env()).expect("valid");
    assert_eq!(s.bots[0].webhook_url.as_ref().map(|u| u.as_str()), Some("https://cc.example/h"));
    let s = Settings::from_sources(Some(&valid[4]), env()).expect("valid");
    assert!(s.bots[0].webhook_url.is_none(), "an empty URL means no webhooks");
    assert_eq!(s.bots[0].webhook_keys(), Vec::<Vec<u8>>::new());
    let s = Settings::from_sources(Some(&valid[3]), env()).expect("valid");
    assert_eq!(s.bots[0].webhook_keys(), vec![vec![7u8; 24], vec![7u8; 64]]);

    let cases = [
        (bot(&"b".repeat(129), "k-0123456789abcdef", ""), "bots[0].id", "1-128"),
        (bot("b", &"k".repeat(15), ""), "bots[0].api_keys[0]", "at least 16"),
        (bot("b", "kéy-0123456789abcdef", ""), "bots[0].api_keys[0]", "printable ASCII"),
        (
            bot("b", "k-0123456789abcdef", &format!("webhook_secrets = [\"{}\"]", whsec(23))),
            "bots[0].webhook_secrets[0]",
            "got 23",
        ),
        (
            bot("b", "k-0123456789abcdef", &format!("webhook_secrets = [\"{}\"]", whsec(65))),
            "bots[0].webhook_secrets[0]",
            "got 65",
        ),
    ];
    for (toml, key, fragment) in cases {
        assert_problem(&toml, key, fragment);
    }
}

/// Standard base64 with padding (the tests' own, so they do not share the code under test).
fn base64_of(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn empty_ids_and_keys_are_not_reported_as_duplicates() {
    let toml = "[[bots]]\napi_keys = [\"\"]\n[[bots]]\napi_keys = [\"\"]\n";
    let p = problems(toml);
    let keys: Vec<&str> = p.iter().map(|x| x.key.as_str()).collect();
    assert_eq!(keys, ["bots[0].id", "bots[0].api_keys[0]", "bots[1].id", "bots[1].api_keys[0]"], "{p}");
    assert!(!p.to_string().contains("duplicate") && !p.to_string().contains("same key"), "{p}");
}

#[test]
fn problems_are_listed_one_per_line() {
    let p = problems("[broker]\nshards = 0\nprefetch = 0\n");
    assert_eq!((p.len(), p.is_empty()), (2, false));
    assert_eq!(
        p.to_string(),
        "  broker.shards: must be between 1 and 1024\n  broker.prefetch: must be at least 1"
    );
    let listed: Vec<String> = (&p).into_iter().map(ToString::to_string).collect();
    assert_eq!(listed, ["broker.shards: must be between 1 and 1024", "broker.prefetch: must be at least 1"]);
    assert!(p.has_key("broker.prefetch") && !p.has_key("broker"));
    assert!(Problems::default().is_empty());
    let err =
        Settings::from_sources(Some("[broker]\nshards = 0\nprefetch = 0\n"), env()).expect_err("invalid");
    assert!(err.to_string().starts_with("invalid settings (2 problems):\n  broker.shards"), "{err}");
}
