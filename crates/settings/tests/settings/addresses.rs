//! The start-up address check of webhook URLs (docs/protocol.md §4): literal
//! loopback and private addresses, and `localhost`, need `webhooks.allow_loopback`
//! / `webhooks.allow_private`; unspecified, multicast, documentation and reserved
//! ones are refused whatever the policy. The table is the delivery guard's
//! (`settings::addresses`), so both agree on every address.

use settings::{Error, Settings};

const TOKEN: &str = "test-token-secret-0123456789abcdef";
const WHSEC: &str = "whsec_ouHWZ9mG8iWN820a7RjFnncMnX+Xt3I5DkIRbMWrSeg=";

fn env() -> Vec<(String, String)> {
    vec![("ESCALATIONS__WIDGET__TOKEN_SECRET".to_owned(), TOKEN.to_owned())]
}

/// A bot whose webhook goes to `url`, under the `[webhooks]` lines `policy`.
fn with_webhook(url: &str, policy: &str) -> String {
    format!(
        "[webhooks]\n{policy}\n[[bots]]\nid = \"b\"\napi_keys = [\"k-0123456789abcdef\"]\n\
         webhook_url = \"{url}\"\nwebhook_secrets = [\"{WHSEC}\"]\n"
    )
}

#[test]
fn credentials_in_a_webhook_url_are_refused() {
    for url in ["https://user@cc.example/h", "https://:pw@cc.example/h"] {
        let problem = webhook_problem_of(url, "").expect("refused");
        assert_eq!(
            problem,
            "  bots[0].webhook_url: must not contain a user name or password (deliveries are signed with \
             webhook_secrets)"
        );
    }
}

/// The problem (if any) with a bot whose webhook goes to `host`, under `[webhooks]` `policy`.
fn webhook_problem(host: &str, policy: &str) -> Option<String> {
    webhook_problem_of(&format!("http://{host}/h"), policy)
}

/// The problems (if any) of a bot whose webhook goes to `url`, under `[webhooks]` `policy`.
fn webhook_problem_of(url: &str, policy: &str) -> Option<String> {
    match Settings::from_sources(Some(&with_webhook(url, policy)), env()) {
        Ok(_) => None,
        Err(Error::Invalid(p)) => Some(p.to_string()),
        Err(other) => panic!("{url}: {other}"),
    }
}

#[test]
fn the_literal_address_classifier_knows_each_range() {
    // The start-up check, by the table the delivery guard uses.
    let loopback = [
        "127.0.0.1",
        "127.255.255.255",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "localhost",
        "LocalHost.",
        "a.localhost",
    ];
    let private = [
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.0",
        "100.127.255.255",
        "[fc00::1]",
        "[fdff:ffff::1]",
        "[fe80::1]",
        "[febf::1]",
        "[fec0::1]",
        "[::ffff:192.168.1.1]",
        "[::ffff:0:192.168.1.1]",
    ];
    let special = [
        "0.0.0.0",
        "[::]",
        "[ff02::1]",
        "224.0.0.1",
        "192.0.2.10",
        "198.51.100.1",
        "203.0.113.9",
        "198.18.0.1",
        "192.0.0.8",
        "[2001:db8::1]",
    ];
    let public = [
        "8.8.8.8",
        "100.63.255.255",
        "100.128.0.0",
        "101.64.0.1",
        "172.32.0.1",
        "[2606:4700::1111]",
        "[fbff::1]",
        "cc.example",
        "localhost.example",
        "notlocalhost",
    ];
    let closed = "allow_loopback = false\nallow_private = false";
    let loopback_only = "allow_loopback = true\nallow_private = false";
    let private_only = "allow_loopback = false\nallow_private = true";
    let open = "allow_loopback = true\nallow_private = true";
    for host in loopback {
        let problem = webhook_problem(host, closed).unwrap_or_else(|| panic!("{host} allowed"));
        assert!(problem.contains("is a loopback address"), "{host}: {problem}");
        assert_eq!(webhook_problem(host, loopback_only), None, "{host}");
        assert!(webhook_problem(host, private_only).is_some(), "{host}");
        assert_eq!(webhook_problem(host, open), None, "{host}");
    }
    for host in private {
        let problem = webhook_problem(host, closed).unwrap_or_else(|| panic!("{host} allowed"));
        assert!(problem.contains("is a private or link-local address"), "{host}: {problem}");
        assert_eq!(webhook_problem(host, private_only), None, "{host}");
        assert!(webhook_problem(host, loopback_only).is_some(), "{host}");
        assert_eq!(webhook_problem(host, open), None, "{host}");
    }
    for host in special {
        for policy in [closed, loopback_only, private_only, open] {
            let problem = webhook_problem(host, policy).unwrap_or_else(|| panic!("{host} allowed"));
            assert!(problem.contains("never a webhook target"), "{host}: {problem}");
        }
    }
    for host in public {
        assert_eq!(webhook_problem(host, closed), None, "{host}");
    }
}
