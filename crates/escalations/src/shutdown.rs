//! SIGINT/SIGTERM → one cancellation token for the whole process.

use tokio_util::sync::CancellationToken;

/// One cancellation token for the process, cancelled by SIGINT or SIGTERM
/// (STYLE.md, "Shutdown").
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs `role`, then cancels `shutdown` however it ended, so one role
/// stopping (failure or signal) stops the others.
pub async fn stop_all_after(
    shutdown: &CancellationToken,
    role: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let result = role.await;
    shutdown.cancel();
    result
}
