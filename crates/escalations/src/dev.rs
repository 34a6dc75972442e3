//! The built-in development configuration (`config/dev.toml`, compiled in):
//! what `escalations all` and `escalations simulate` run with when no settings
//! file is given, and the guard that keeps its public secret off the network.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use settings::{BotConfig, Settings};

use crate::cli::SimulateArgs;
use crate::simulate::{self, AgentApi, Script};

/// The development configuration's text.
pub const DEV_TOML: &str = include_str!("../../../config/dev.toml");

/// Its widget token secret: public, so refused on any but a loopback bind.
pub const DEV_TOKEN_SECRET: &str = "development-only-token-secret-refused-off-loopback";

/// Refuses to serve with the development token secret on an address others
/// can reach: anyone could mint widget tokens with it.
pub fn refuse_dev_secret_off_loopback(settings: &Settings) -> anyhow::Result<()> {
    if settings.widget.token_secret.expose() == DEV_TOKEN_SECRET && !settings.http.bind.ip().is_loopback() {
        bail!(
            "http.bind {} is not a loopback address, and widget.token_secret is the built-in \
             development secret, which is public: set ESCALATIONS__WIDGET__TOKEN_SECRET (at \
             least 32 random bytes) or bind to 127.0.0.1",
            settings.http.bind
        );
    }
    Ok(())
}

/// The simulator's options: the flags, falling back on the settings (the bot's
/// webhook URL, secrets and first API key; the ingress's bind).
pub fn simulator_options(settings: &Settings, args: &SimulateArgs) -> anyhow::Result<simulate::Options> {
    let bot = simulated_bot(settings, args.bot.as_deref())?;
    let keys = bot.webhook_keys();
    if keys.is_empty() {
        bail!("bot `{}` has no webhook_secrets: the simulator cannot verify its webhooks", bot.id);
    }
    let api_key = bot.api_keys.first().with_context(|| format!("bot `{}` has no API key", bot.id))?;
    let bind = match args.bind {
        Some(bind) => bind,
        None => bind_of(bot)?,
    };
    let ingress = match &args.ingress {
        Some(url) => url.clone(),
        None => {
            let mut addr = settings.http.bind;
            if addr.ip().is_unspecified() {
                addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
            format!("http://{addr}")
        }
    };
    let script = Script {
        queue_updates: args.queue_updates,
        queue_interval: Duration::from_millis(args.queue_interval_ms),
        agent: args.agent.clone(),
        reply_delay: Duration::from_millis(args.reply_delay_ms),
        session: (args.session_secs > 0).then(|| Duration::from_secs(args.session_secs)),
    };
    let api = AgentApi::new(&ingress, &bot.id, api_key.expose())?;
    tracing::info!(bot = %bot.id, %bind, ingress, "simulating the bot's contact centre");
    Ok(simulate::Options { bind, keys, api, script })
}

/// `--bot`, else `demo.bot`, else the only bot with a webhook URL.
fn simulated_bot<'s>(settings: &'s Settings, named: Option<&str>) -> anyhow::Result<&'s BotConfig> {
    if let Some(id) = named.or(settings.demo.bot.as_deref()) {
        return settings.bot(id).with_context(|| format!("no configured bot `{id}`"));
    }
    let mut with_webhook = settings.bots.iter().filter(|b| b.webhook_url.is_some());
    match (with_webhook.next(), with_webhook.next()) {
        (Some(bot), None) => Ok(bot),
        (None, _) => bail!("no configured bot has a webhook_url to simulate"),
        (Some(_), Some(_)) => bail!("several bots have a webhook_url: name one with --bot"),
    }
}

/// Where the bot's webhooks arrive: its URL's address and port, or every
/// interface at that port when the host is a name (e.g. a compose service).
fn bind_of(bot: &BotConfig) -> anyhow::Result<SocketAddr> {
    let url = bot.webhook_url.as_ref().with_context(|| format!("bot `{}` has no webhook_url", bot.id))?;
    let port = url.port_or_known_default().context("the webhook URL has no port")?;
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_with(env: &[(&str, &str)]) -> Settings {
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Settings::from_sources(Some(DEV_TOML), env).expect("the development configuration is valid")
    }

    #[test]
    fn the_dev_configuration_is_valid_and_serves_only_loopback() {
        let dev = dev_with(&[]);
        assert_eq!(dev.widget.token_secret.expose(), DEV_TOKEN_SECRET);
        assert!(refuse_dev_secret_off_loopback(&dev).is_ok());
        assert_eq!(dev.demo.exposed_key(&dev.http, &dev.bots), Some("demo-bot-key-development-only"));

        let exposed = dev_with(&[("ESCALATIONS__HTTP__BIND", "0.0.0.0:8080")]);
        let refused = refuse_dev_secret_off_loopback(&exposed).expect_err("refused");
        assert!(refused.to_string().contains("not a loopback address"), "{refused}");
        assert_eq!(exposed.demo.exposed_key(&exposed.http, &exposed.bots), None);

        let own_secret = dev_with(&[
            ("ESCALATIONS__HTTP__BIND", "0.0.0.0:8080"),
            ("ESCALATIONS__WIDGET__TOKEN_SECRET", "a-real-secret-of-at-least-32-bytes-000"),
        ]);
        assert!(refuse_dev_secret_off_loopback(&own_secret).is_ok());
    }

    #[test]
    fn the_simulator_defaults_come_from_the_demo_bot() {
        use clap::Parser;
        let dev = dev_with(&[]);
        let cli = crate::cli::Cli::parse_from(["escalations", "simulate"]);
        let crate::cli::Command::Simulate(args) = cli.command else { panic!("simulate") };
        let options = simulator_options(&dev, &args).expect("options");
        assert_eq!(options.bind, "127.0.0.1:8090".parse().expect("addr"));
        assert_eq!(options.keys, dev.bots[0].webhook_keys());
    }
}
