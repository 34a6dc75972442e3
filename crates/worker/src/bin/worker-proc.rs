//! The worker as a process of its own, for tests that kill it with SIGKILL.
//! Settings: `ESCALATIONS__*` variables (worker knobs: `ESCALATIONS__WORKER__*`);
//! logs: `RUST_LOG` (default `warn`), to stderr. SIGINT/SIGTERM stop it
//! gracefully.

use anyhow::Context;
use settings::Settings;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = Settings::load(None).context("loading settings from ESCALATIONS__* variables")?;
    let shutdown = CancellationToken::new();
    let cancel = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => None } } => {}
        }
        cancel.cancel();
    });
    worker::run(settings, shutdown, None).await
}
