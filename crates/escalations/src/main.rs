//! `escalations`: the one binary. Arguments → settings → telemetry → the command.

mod cli;
mod conversations;
mod dead_events;
mod dlq;
mod ops;
mod shutdown;
mod telemetry;
mod topology;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command, ConfigAction, ConversationsAction};
use settings::Settings;
use shutdown::{shutdown_on_signal, stop_all_after};
use tokio::sync::Notify;

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
        Command::Worker => {
            let shutdown = shutdown_on_signal();
            // The worker and the webhook dispatcher: whichever stops first
            // stops the other. The worker wakes the dispatcher when it has
            // queued deliveries, so they leave at once, not at the next poll.
            let wake = Arc::new(Notify::new());
            let (worker, delivery) = tokio::join!(
                stop_all_after(
                    &shutdown,
                    worker::run_notifying(settings.clone(), shutdown.clone(), Some(wake.clone()))
                ),
                stop_all_after(
                    &shutdown,
                    delivery::run_woken_by(settings.clone(), shutdown.clone(), Some(wake))
                ),
            );
            worker.and(delivery)
        }
        Command::All => {
            // The all-in-one mode is for development and small sites: bring the
            // schema up to date first, as `escalations migrate` would.
            ops::migrate(&settings).await?;
            let shutdown = shutdown_on_signal();
            let wake = Arc::new(Notify::new());
            let (ingress, worker, delivery) = tokio::join!(
                stop_all_after(&shutdown, ingress::run(settings.clone(), shutdown.clone())),
                stop_all_after(
                    &shutdown,
                    worker::run_notifying(settings.clone(), shutdown.clone(), Some(wake.clone()))
                ),
                stop_all_after(
                    &shutdown,
                    delivery::run_woken_by(settings.clone(), shutdown.clone(), Some(wake))
                ),
            );
            ingress.and(worker).and(delivery)
        }
        Command::Dlq { action } => {
            let store = ops::connect_store(&settings)?;
            dlq::run(&store, action, &mut std::io::stdout().lock()).await
        }
        Command::DeadEvents { action } => {
            dead_events::run(&settings, action, &mut std::io::stdout().lock()).await
        }
        Command::Conversations { action: ConversationsAction::Show { bot, conversation, json } } => {
            let store = ops::connect_store(&settings)?;
            conversations::show(&store, &bot, &conversation, json, &mut std::io::stdout().lock()).await
        }
        Command::Migrate => ops::migrate(&settings).await,
        Command::Shards => ops::shards(&settings).await,
        Command::Config { .. } => Ok(()),
    }
}
