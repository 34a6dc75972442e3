//! `escalations`: the one binary. Arguments → settings → telemetry → the command.

mod cli;
mod conversations;
mod dead_events;
mod dev;
mod dlq;
mod ops;
mod shutdown;
mod simulate;
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
    // Without a file, everything but the production roles (and the check of
    // what they would load) runs the built-in development configuration, so
    // one command starts everything on a developer's machine and the operator
    // commands find what it runs.
    let development = cli.config.is_none()
        && !matches!(cli.command, Command::Ingress | Command::Worker | Command::Config { .. });
    let settings = if development {
        Settings::load_builtin(dev::DEV_TOML).context("loading the built-in development settings")?
    } else {
        Settings::load(cli.config.as_deref()).context("loading settings")?
    };
    if let Command::Config { action: None | Some(ConfigAction::Check) } = cli.command {
        println!("settings are valid:\n{settings:#?}");
        return Ok(());
    }
    telemetry::init(&settings.log);
    match cli.command {
        Command::Topology { action } => topology::run(&settings, action).await,
        Command::Ingress => {
            dev::refuse_dev_secret_off_loopback(&settings)?;
            ingress::run(settings, shutdown_on_signal()).await
        }
        Command::Simulate(args) => {
            let options = dev::simulator_options(&settings, &args)?;
            simulate::run(options, shutdown_on_signal()).await
        }
        Command::Worker => worker_and_dispatcher(&settings, &shutdown_on_signal()).await,
        Command::All => {
            // The all-in-one mode is for development and small sites: bring the
            // schema up to date first, as `escalations migrate` would.
            dev::refuse_dev_secret_off_loopback(&settings)?;
            ops::migrate(&settings).await?;
            let shutdown = shutdown_on_signal();
            let simulator = development_simulator(&settings, development, &shutdown);
            let (ingress, workers, simulator) = tokio::join!(
                stop_all_after(&shutdown, ingress::run(settings.clone(), shutdown.clone())),
                worker_and_dispatcher(&settings, &shutdown),
                simulator,
            );
            ingress.and(workers).and(simulator)
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

/// In the development configuration, the contact centre of its demo bot,
/// stopping everything when it stops; otherwise nothing.
async fn development_simulator(
    settings: &Settings,
    development: bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    if !development {
        return Ok(());
    }
    tracing::warn!(
        "no --config: running the built-in development configuration (config/dev.toml); \
         the demo is at http://{}/demo",
        settings.http.bind
    );
    let options = dev::simulator_options(settings, &default_simulation())?;
    stop_all_after(shutdown, simulate::run(options, shutdown.clone())).await
}

/// The simulator's default flags (those of a bare `escalations simulate`).
fn default_simulation() -> cli::SimulateArgs {
    match Cli::parse_from(["escalations", "simulate"]).command {
        Command::Simulate(args) => args,
        _ => unreachable!("`simulate` parses as Command::Simulate"),
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
