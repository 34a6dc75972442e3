//! `escalations`: the one binary. Arguments → settings → telemetry → the command.
//! Every role serves its admin listener beside it (`admin`); the operator
//! commands call the operations the admin API calls and render the results.
//! Failures exit with a code that tells their kind (`admin::error::exit`).

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

use std::process::ExitCode;

use admin::error::exit;
use clap::Parser;
use cli::{Cli, Command, ConfigAction, ConversationsAction};
use settings::{Role, Settings};
use shutdown::{shutdown_on_signal, stop_all_after};
use tokio_util::sync::CancellationToken;

/// Under load, glibc's allocator took about a fifth of the roles' CPU
/// (docs/benchmarks.md); mimalloc serves the same many small, short-lived
/// allocations (bodies, JSON, rows) for less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Usage errors exit 2 here, from clap.
    let cli = Cli::parse();
    // Without a file, everything but the production roles (and the check of
    // what they would load) runs the built-in development configuration, so
    // one command starts everything on a developer's machine and the operator
    // commands find what it runs.
    let development = cli.config.is_none()
        && !matches!(cli.command, Command::Ingress | Command::Worker | Command::Config { .. });
    // Settings problems are reported plainly, one `key: problem` line each,
    // before any logging is set up.
    let loaded = if development {
        Settings::load_builtin(dev::DEV_TOML)
    } else {
        Settings::load(cli.config.as_deref())
    };
    let settings = match loaded {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: loading settings: {error}");
            return ExitCode::from(exit::USAGE as u8);
        }
    };
    match run(cli.command, settings, development).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit_code(&error) as u8)
        }
    }
}

async fn run(command: Command, settings: Settings, development: bool) -> anyhow::Result<()> {
    if let Command::Config { action: None | Some(ConfigAction::Check) } = command {
        print!("# settings are valid; secrets are shown as \"***\"\n{}", settings.to_redacted_toml()?);
        return Ok(());
    }
    telemetry::init(&settings.log);
    let settings = &settings;
    match command {
        Command::Topology { action } => topology::run(settings, action).await,
        Command::Ingress => {
            dev::refuse_dev_secret_off_loopback(settings)?;
            with_admin(settings, Role::Ingress, |shutdown| ingress::run(settings.clone(), shutdown)).await
        }
        Command::Simulate(args) => {
            let options = dev::simulator_options(settings, &args)?;
            simulate::run(options, shutdown_on_signal()).await
        }
        Command::Worker => {
            with_admin(settings, Role::Worker, |shutdown| async move {
                worker_and_dispatcher(settings, &shutdown).await
            })
            .await
        }
        Command::All => {
            // The all-in-one mode is for development and small sites: bring the
            // schema up to date first, as `escalations migrate` would.
            dev::refuse_dev_secret_off_loopback(settings)?;
            ops::migrate(settings).await?;
            with_admin(settings, Role::All, |shutdown| async move {
                let (ingress, workers, simulator) = tokio::join!(
                    stop_all_after(&shutdown, ingress::run(settings.clone(), shutdown.clone())),
                    worker_and_dispatcher(settings, &shutdown),
                    development_simulator(settings, development, &shutdown),
                );
                ingress.and(workers).and(simulator)
            })
            .await
        }
        Command::Dlq { action } => {
            let store = ops::connect_store(settings)?;
            dlq::run(&store, action, &mut std::io::stdout().lock()).await
        }
        Command::DeadEvents { action } => {
            dead_events::run(settings, action, &mut std::io::stdout().lock()).await
        }
        Command::Conversations { action: ConversationsAction::Show { bot, conversation, json } } => {
            let store = ops::connect_store(settings)?;
            conversations::show(&store, &bot, &conversation, json, &mut std::io::stdout().lock()).await
        }
        Command::Migrate => ops::migrate(settings).await,
        Command::Shards { json } => ops::shards(settings, json).await,
        Command::Config { .. } => Ok(()),
    }
}

/// Runs a role beside its admin listener until a signal, or until either
/// stops (which stops the other). The admin address is bound first, so a
/// taken address fails the start at once, naming `admin.bind`.
async fn with_admin<F, Fut>(settings: &Settings, role: Role, role_task: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let listener = admin::bind(settings, role).await?;
    let shutdown = shutdown_on_signal();
    let admin_task = admin::run(listener, settings.clone(), role, shutdown.clone());
    let (role_result, admin_result) = tokio::join!(
        stop_all_after(&shutdown, role_task(shutdown.clone())),
        stop_all_after(&shutdown, async { admin_task.await.map_err(anyhow::Error::from) }),
    );
    role_result.and(admin_result)
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
/// stops the other. The worker hands the dispatcher the deliveries it claimed
/// as it queued them, and wakes it for the others, so they leave at once
/// rather than at the next poll.
async fn worker_and_dispatcher(settings: &Settings, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let handoff = delivery::Handoff::new();
    let (worker, delivery) = tokio::join!(
        stop_all_after(shutdown, worker::run(settings.clone(), shutdown.clone(), Some(handoff.clone()))),
        stop_all_after(
            shutdown,
            delivery::run_with_handoff(settings.clone(), shutdown.clone(), Some(handoff))
        ),
    );
    worker.and(delivery)
}

/// The exit code of a failure: its kind if an operation said, 2 for
/// settings, 4 for the database or the broker, 1 otherwise.
fn exit_code(error: &anyhow::Error) -> i32 {
    for cause in error.chain() {
        if let Some(ops) = cause.downcast_ref::<admin::OpsError>() {
            return ops.exit_code();
        }
        if cause.is::<settings::Error>() {
            return exit::USAGE;
        }
        if cause.is::<store::Error>() || cause.is::<lapin::Error>() || cause.is::<broker::Error>() {
            return exit::UNAVAILABLE;
        }
    }
    exit::FAILED
}
