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
