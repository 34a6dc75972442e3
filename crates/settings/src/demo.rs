//! The demo widget page (`[demo]`): off unless enabled, and it never hands an
//! API key to a browser unless the ingress listens on loopback only.

use serde::Deserialize;

use crate::validate::Checker;
use crate::{BotConfig, HttpConfig};

/// The ingress's demo page at `/demo` (`[demo]`): a visitor's widget in plain
/// HTML and JavaScript, for trying the service against a contact centre such
/// as `escalations simulate`. Off by default; the built-in development
/// configuration of `escalations all` turns it on.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Serve `/demo` (and `/demo/config`). Default `false`: `/demo` is a `404`.
    pub enabled: bool,
    /// The bot the page escalates as; must be a configured bot. Its first API key is
    /// handed to the page only when `http.bind` is a loopback address (nobody else can
    /// reach it then); on any other bind the page asks the person for a key.
    /// Default: none (the page always asks).
    pub bot: Option<String>,
}

impl DemoConfig {
    /// The API key the demo page may be given: the demo bot's first key, only when
    /// the demo is on and the ingress listens on loopback only.
    pub fn exposed_key<'s>(&self, http: &HttpConfig, bots: &'s [BotConfig]) -> Option<&'s str> {
        if !self.enabled || !http.bind.ip().is_loopback() {
            return None;
        }
        let bot = bots.iter().find(|b| Some(&b.id) == self.bot.as_ref())?;
        bot.api_keys.first().map(|k| k.expose())
    }
}

/// `demo.bot`, when set, names a configured bot.
pub(crate) fn check(c: &mut Checker, demo: &DemoConfig, bots: &[BotConfig]) {
    if let Some(id) = &demo.bot
        && !bots.iter().any(|b| &b.id == id)
    {
        c.fail("demo.bot", format!("names no configured bot (`{id}`)"));
    }
}

#[cfg(test)]
mod tests {
    use crate::Settings;

    const BASE: &str = r#"
        [widget]
        token_secret = "a-test-key-of-at-least-32-bytes!!"
        [[bots]]
        id = "demo"
        api_keys = ["demo-key-0123456789"]
    "#;

    fn load(extra: &str, bind: &str) -> Result<Settings, crate::Error> {
        let env = [("ESCALATIONS__HTTP__BIND".to_owned(), bind.to_owned())];
        Settings::from_sources(Some(&format!("{extra}\n{BASE}")), env)
    }

    #[test]
    fn the_key_is_exposed_only_when_enabled_on_loopback() {
        let on = load("[demo]\nenabled = true\nbot = \"demo\"", "127.0.0.1:8080").expect("valid");
        assert_eq!(on.demo.exposed_key(&on.http, &on.bots), Some("demo-key-0123456789"));
        let v6 = load("[demo]\nenabled = true\nbot = \"demo\"", "[::1]:8080").expect("valid");
        assert_eq!(v6.demo.exposed_key(&v6.http, &v6.bots), Some("demo-key-0123456789"));
        let public = load("[demo]\nenabled = true\nbot = \"demo\"", "0.0.0.0:8080").expect("valid");
        assert_eq!(public.demo.exposed_key(&public.http, &public.bots), None);
        let off = load("[demo]\nbot = \"demo\"", "127.0.0.1:8080").expect("valid");
        assert_eq!(off.demo.exposed_key(&off.http, &off.bots), None);
        let default = load("", "127.0.0.1:8080").expect("valid");
        assert!(!default.demo.enabled);
    }

    #[test]
    fn the_demo_bot_must_be_configured() {
        let error = load("[demo]\nenabled = true\nbot = \"nobody\"", "127.0.0.1:8080").expect_err("invalid");
        assert!(error.to_string().contains("demo.bot: names no configured bot (`nobody`)"), "{error}");
    }
}
