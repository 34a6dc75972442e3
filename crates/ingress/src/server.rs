//! Running the ingress: [`run`] is what the binary calls; [`serve`] is the
//! listener loop with graceful shutdown, also used by tests and benchmarks
//! that bind their own socket.
//!
//! Shutdown (STYLE.md): when the token is cancelled the server stops
//! accepting connections and lets in-flight requests finish, for at most
//! `http.shutdown_grace_secs`; then the publisher drains its outstanding
//! confirms and closes its connection. A request cut off by the grace period
//! never got a `200`, so its caller retries: nothing confirmed is lost.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use broker::{Publisher, PublisherConfig, Topology};
use settings::{Settings, redact_urls};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::app::{AppState, router};
use crate::error::Error;
use crate::live::LiveHub;

/// The publisher configuration the ingress uses for `settings`.
pub fn publisher_config(settings: &Settings) -> PublisherConfig {
    let broker = &settings.broker;
    let topology = Topology::new(broker.prefix.clone(), broker.shards, broker.delivery_limit)
        .with_quorum_size(broker.quorum_size);
    let mut config = PublisherConfig::new(broker.url.clone(), topology);
    config.channels = broker.publish_channels;
    config.confirm_timeout = Duration::from_millis(broker.confirm_timeout_ms);
    config
}

/// Runs the ingress until `shutdown` is cancelled: starts the publisher (which
/// connects in the background; `/readyz` says when), binds `http.bind`, serves,
/// then shuts down gracefully.
///
/// # Errors
///
/// [`Error::Bind`] if the address cannot be bound, [`Error::Serve`] if the
/// server fails while running (as `anyhow::Error`, like the worker's `run`,
/// so the binary can run both side by side).
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let addr = settings.http.bind;
    let grace = Duration::from_secs(settings.http.shutdown_grace_secs);
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
    info!(
        %addr,
        broker = %redact_urls(&settings.broker.url),
        prefix = %settings.broker.prefix,
        shards = settings.broker.shards,
        "ingress listening"
    );
    let publisher = Arc::new(Publisher::connect(publisher_config(&settings)));
    // Lazy: no connection is opened until a query endpoint is called, so the
    // write path keeps working while the database is down.
    let db = &settings.database;
    let store = store::Store::connect(&db.url, &db.schema, db.pool_size)
        .context("configuring the query endpoints' database pool")?;
    // Never fails on the broker: started while RabbitMQ is away, it keeps
    // trying (streams answer 503 and /readyz is not ready until it is up).
    let hub =
        LiveHub::start(&settings.broker.url, &settings.broker.prefix).context("starting the live hub")?;
    let state = AppState::with_live(settings, publisher.clone(), store, hub);
    let streams = state.clone();
    let closing = shutdown.clone();
    tokio::spawn(async move {
        closing.cancelled().await;
        streams.close_streams();
    });
    let app = router(state);
    let served = serve(listener, app, grace, shutdown).await;
    publisher.shutdown().await;
    info!("ingress stopped");
    Ok(served?)
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops
/// accepting and waits up to `grace` for in-flight requests. Does not touch
/// the publisher: the caller shuts it down afterwards.
///
/// # Errors
///
/// [`Error::Serve`] if the server fails.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    grace: Duration,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        outcome = &mut server => return outcome.map_err(Error::Serve),
        () = shutdown.cancelled() => {}
    }
    info!(?grace, "shutting down: no new connections, finishing in-flight requests");
    match tokio::time::timeout(grace, server).await {
        Ok(outcome) => outcome.map_err(Error::Serve),
        Err(_) => {
            warn!(?grace, "in-flight requests did not finish within the grace period; dropping them");
            Ok(())
        }
    }
}
