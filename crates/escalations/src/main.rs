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
use tokio_util::sync::CancellationToken;

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
        Command::Worker => worker_and_dispatcher(&settings, &shutdown_on_signal()).await,
        Command::All => {
            // The all-in-one mode is for development and small sites: bring the
            // schema up to date first, as `escalations migrate` would.
            ops::migrate(&settings).await?;
            let shutdown = shutdown_on_signal();
            let (ingress, workers) = tokio::join!(
                stop_all_after(&shutdown, ingress::run(settings.clone(), shutdown.clone())),
                worker_and_dispatcher(&settings, &shutdown),
            );
            ingress.and(workers)
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

/// The worker and the webhook dispatcher of one process: whichever stops first
/// stops the other. The worker wakes the dispatcher when it has queued
/// deliveries, so they leave at once rather than at the next poll.
async fn worker_and_dispatcher(settings: &Settings, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let (worker, delivery) = tokio::join!(
        stop_all_after(
            shutdown,
            worker::run_notifying(settings.clone(), shutdown.clone(), Some(wake.clone()))
        ),
        stop_all_after(shutdown, delivery::run_woken_by(settings.clone(), shutdown.clone(), Some(wake))),
    );
    worker.and(delivery)
}
