//! The effective settings as TOML, secrets hidden: what `escalations config check`
//! prints. Secrets show as `"***"` (`""` when unset), URL passwords as `***`, and a
//! webhook URL's query string (which may carry a token) as `?***`. The output is a
//! settings file: with the secrets filled in again it loads to the same settings.

use serde::Serializer;
use toml::{Table, Value};

use crate::Settings;
use crate::secret::{redact_url, redact_urls};

/// `serialize_with` for URLs that may carry a password.
pub(crate) fn redacted_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url))
}

/// `serialize_with` for `broker.url`: one URL as a string, several as an array, each
/// with its password hidden.
pub(crate) fn redacted_urls<S: Serializer>(list: &str, serializer: S) -> Result<S::Ok, S::Error> {
    let urls = domain::url_list::split_urls(list);
    if urls.len() == 1 {
        return serializer.serialize_str(&redact_url(&urls[0]));
    }
    if urls.is_empty() {
        return serializer.serialize_str(&redact_urls(list));
    }
    serializer.collect_seq(urls.iter().map(|url| redact_url(url)))
}

impl Settings {
    /// Every section, with the values in force (defaults included), as TOML.
    ///
    /// # Errors
    ///
    /// Only if a section cannot be represented in TOML, which none of ours is.
    pub fn to_redacted_toml(&self) -> Result<String, toml::ser::Error> {
        let mut root = Table::new();
        let mut put = |name: &str, value: Result<Table, toml::ser::Error>| -> Result<(), toml::ser::Error> {
            root.insert(name.to_owned(), Value::Table(value?));
            Ok(())
        };
        put("http", Table::try_from(&self.http))?;
        put("broker", Table::try_from(&self.broker))?;
        put("database", Table::try_from(&self.database))?;
        put("widget", Table::try_from(&self.widget))?;
        put("webhooks", Table::try_from(&self.webhooks))?;
        put("defaults", Table::try_from(&self.defaults))?;
        put("worker", Table::try_from(&self.worker))?;
        put("admin", Table::try_from(&self.admin))?;
        put("log", Table::try_from(&self.log))?;
        let bots = self.bots.iter().map(bot_table).collect::<Result<Vec<_>, _>>()?;
        root.insert("bots".to_owned(), Value::Array(bots.into_iter().map(Value::Table).collect()));
        toml::to_string(&root)
    }
}

fn bot_table(bot: &crate::BotConfig) -> Result<Table, toml::ser::Error> {
    let hidden = |count: usize| Value::Array(vec![Value::String("***".to_owned()); count]);
    let mut table = Table::new();
    table.insert("id".to_owned(), Value::String(bot.id.clone()));
    table.insert("api_keys".to_owned(), hidden(bot.api_keys.len()));
    if let Some(url) = &bot.webhook_url {
        let mut shown = url.clone();
        if shown.query().is_some() {
            shown.set_query(Some("***"));
        }
        table.insert("webhook_url".to_owned(), Value::String(redact_url(shown.as_str())));
        table.insert("webhook_secrets".to_owned(), hidden(bot.webhook_secrets.len()));
    }
    let overrides = Table::try_from(&bot.overrides)?;
    if !overrides.is_empty() {
        table.insert("overrides".to_owned(), Value::Table(overrides));
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use crate::Settings;

    #[test]
    fn secrets_never_print_and_the_output_loads_again() {
        let toml = r#"
            [broker]
            url = "amqp://user:broker-password@rabbit:5672/%2f"
            [admin]
            token = "admin-token-0123456789"
            [[bots]]
            id = "acme"
            api_keys = ["acme-key-0123456789"]
            webhook_url = "https://hooks.example.com/in?token=query-secret"
            webhook_secrets = ["whsec_BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="]
            [bots.overrides]
            ttl_secs = 60
        "#;
        let env = [("ESCALATIONS__WIDGET__TOKEN_SECRET", "a-test-key-of-at-least-32-bytes!!")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let settings = Settings::from_sources(Some(toml), env).expect("valid");
        let shown = settings.to_redacted_toml().expect("toml");
        for secret in ["broker-password", "admin-token", "acme-key", "query-secret", "BwcH", "a-test-key"] {
            assert!(!shown.contains(secret), "{secret} shown in:\n{shown}");
        }
        assert!(shown.contains("[worker]\n") && shown.contains("lease_ttl_ms = 10000"), "{shown}");
        assert!(shown.contains("token = \"***\""), "{shown}");
        assert!(shown.contains("ttl_secs = 60"), "{shown}");
        let parsed: toml::Table = toml::from_str(&shown).expect("the output is TOML");
        assert_eq!(parsed["broker"]["shards"].as_integer(), Some(32));
    }
}
