//! Settings of a RabbitMQ cluster and a PostgreSQL primary with standbys:
//! `broker.url` as a list, `broker.quorum_size`, `database.url` with several hosts.

use settings::{Error, Problems, Settings};

const TOKEN: &str = "test-token-secret-0123456789abcdef";

fn env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = vec![("ESCALATIONS__WIDGET__TOKEN_SECRET".to_owned(), TOKEN.to_owned())];
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    vars
}

fn problems(toml: &str, vars: &[(&str, &str)]) -> Problems {
    match Settings::from_sources(Some(toml), env(vars)) {
        Err(Error::Invalid(p)) => p,
        Err(other) => panic!("expected validation problems, got: {other}"),
        Ok(_) => panic!("expected validation problems, got valid settings for:\n{toml}"),
    }
}

#[test]
fn broker_url_takes_one_url_a_toml_list_or_a_comma_separated_list() {
    let one =
        Settings::from_sources(Some("[broker]\nurl = \"amqp://u:p@a:5672/%2f\""), env(&[])).expect("one");
    assert_eq!(one.broker.urls(), ["amqp://u:p@a:5672/%2f"]);

    let toml = "[broker]\nurl = [\"amqp://u:p@a:5672/%2f\", \" amqp://u:p@b:5672/%2f\"]";
    let list = Settings::from_sources(Some(toml), env(&[])).expect("list");
    assert_eq!(list.broker.url, "amqp://u:p@a:5672/%2f,amqp://u:p@b:5672/%2f");
    assert_eq!(list.broker.urls(), ["amqp://u:p@a:5672/%2f", "amqp://u:p@b:5672/%2f"]);

    let vars = [("ESCALATIONS__BROKER__URL", "amqp://u:p@a/%2f, amqps://u:p,q@b/%2f")];
    let from_env = Settings::from_sources(None, env(&vars)).expect("env");
    assert_eq!(
        from_env.broker.urls(),
        ["amqp://u:p@a/%2f", "amqps://u:p,q@b/%2f"],
        "a comma in a password stays"
    );
}

#[test]
fn each_bad_entry_of_the_list_is_reported_with_its_index() {
    let p = problems("[broker]\nurl = [\"amqp://a/%2f\", \"http://b/\", \"amqp://c/%2f\", \"ftp://d\"]", &[]);
    assert!(p.has_key("broker.url[1]"), "{p}");
    assert!(p.has_key("broker.url[3]"), "{p}");
    assert_eq!(p.len(), 2, "{p}");
    // Not a URL at all: it would read as the end of the one before, so loading refuses it.
    let err = Settings::from_sources(Some("[broker]\nurl = [\"amqp://a/%2f\", \"nope\"]"), env(&[]))
        .expect_err("not a URL");
    assert!(err.to_string().contains("entry [1]"), "{err}");
    let p = problems("[broker]\nurl = []", &[]);
    assert!(p.has_key("broker.url") && p.to_string().contains("at least one"), "{p}");
}

#[test]
fn not_a_url_list_is_a_type_error() {
    let err = Settings::from_sources(Some("[broker]\nurl = [1, 2]"), env(&[])).expect_err("numbers");
    assert!(err.to_string().contains("expected a URL or a list of URLs"), "{err}");
}

#[test]
fn quorum_size_defaults_to_three_and_is_bounded() {
    let s = Settings::from_sources(None, env(&[])).expect("defaults");
    assert_eq!(s.broker.quorum_size, 3);
    let s = Settings::from_sources(Some("[broker]\nquorum_size = 5"), env(&[])).expect("five");
    assert_eq!(s.broker.quorum_size, 5);
    for bad in ["0", "256"] {
        let p = problems(&format!("[broker]\nquorum_size = {bad}"), &[]);
        assert!(p.has_key("broker.quorum_size") && p.len() == 1, "{p}");
    }
    let p = problems("", &[("ESCALATIONS__BROKER__QUORUM_SIZE", "0")]);
    assert!(p.has_key("broker.quorum_size"), "{p}");
}

#[test]
fn every_node_password_is_hidden() {
    let toml = "[broker]\nurl = [\"amqp://u:secret1@a/%2f\", \"amqp://u:secret2@b/%2f\"]\n\
                [database]\nurl = \"postgres://u:secret3@db1:5432,db2:5432/x?target_session_attrs=read-write\"";
    let s = Settings::from_sources(Some(toml), env(&[])).expect("valid");
    let shown = format!("{s:?} {}", s.to_redacted_toml().expect("toml"));
    for secret in ["secret1", "secret2", "secret3"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    assert!(shown.contains("db1:5432,db2:5432"), "{shown}");
    // What `config check` prints loads again to the same list.
    let printed = s.to_redacted_toml().expect("toml");
    assert!(printed.contains("url = [\"amqp://u:***@a/%2f\", \"amqp://u:***@b/%2f\"]"), "{printed}");
}

#[test]
fn several_database_hosts_need_read_write_sessions() {
    let good = "[database]\nurl = \"postgres://postgres@127.0.0.1:5432,127.0.0.1:5433/postgres?target_session_attrs=read-write\"";
    Settings::from_sources(Some(good), env(&[])).expect("two hosts, read-write");
    let p = problems("[database]\nurl = \"postgres://postgres@a:5432,b:5432/postgres\"", &[]);
    assert!(p.has_key("database.url") && p.to_string().contains("target_session_attrs=read-write"), "{p}");
    let p = problems(
        "[database]\nurl = \"postgres://postgres@a:5432,b:notaport/postgres?target_session_attrs=read-write\"",
        &[],
    );
    assert!(p.has_key("database.url"), "{p}");
    let p = problems(
        "[database]\nurl = \"postgres://postgres@a:5432,/postgres?target_session_attrs=read-write\"",
        &[],
    );
    assert!(p.has_key("database.url") && p.to_string().contains("empty host"), "{p}");
    // Another value of the attribute, or the value under another name, is not read-write.
    for query in ["target_session_attrs=any", "application_name=read-write"] {
        let p = problems(
            &format!("[database]\nurl = \"postgres://postgres@a:5432,b:5432/postgres?{query}\""),
            &[],
        );
        assert!(p.to_string().contains("target_session_attrs=read-write"), "{query}: {p}");
    }
    // A host that does not parse is the one problem reported: the check stops there.
    let p = problems("[database]\nurl = \"postgres://postgres@a:5432,b:notaport/postgres\"", &[]);
    assert_eq!(p.len(), 1, "{p}");
    assert!(!p.to_string().contains("target_session_attrs"), "{p}");
}
