//! `escalations`: the one binary. Arguments → settings → telemetry → the command.

mod cli;
mod ops;
mod shutdown;
mod telemetry;
mod topology;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command, ConfigAction};
use settings::Settings;
use shutdown::shutdown_on_signal;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Settings problems are reported plainly, one `key: problem` line each,
    // before any logging is set up.
    let settings = Settings::load(cli.config.as_deref()).context("loading settings")?;
    if let Command::Config { action: None | Some(ConfigAction::Check) } = cli.command {
        println!("settings are valid:\n{settings:#?}");
        return Ok(());
    }
    telemetry::init(&settings.log);
    match cli.command {
        Command::Topology { action } => topology::run(&settings, action).await,
        Command::Ingress => ingress::run(settings, shutdown_on_signal()).await,
        Command::Worker => worker::run(settings, shutdown_on_signal()).await,
        Command::All => {
            let shutdown = shutdown_on_signal();
            // Whichever stops first (failure or signal) stops the other.
            let (ingress, worker) = tokio::join!(
                async {
                    let result = ingress::run(settings.clone(), shutdown.clone()).await;
                    shutdown.cancel();
                    result
                },
                async {
                    let result = worker::run(settings.clone(), shutdown.clone()).await;
                    shutdown.cancel();
                    result
                }
            );
            ingress.and(worker)
        }
        Command::Migrate => ops::migrate(&settings).await,
        Command::Shards => ops::shards(&settings).await,
        Command::Config { .. } => Ok(()),
    }
}
