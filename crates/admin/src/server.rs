//! [`run`]: the admin listener of one process, until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use settings::{Role, Settings, redact_url};
use store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::{AdminState, router};
use crate::probes::Probes;

/// Why the admin listener could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is taken or not ours.
    #[error(
        "cannot listen for the admin API on {addr} ({source}); set admin.bind \
         (ESCALATIONS__ADMIN__BIND) to a free address, one per process on a host"
    )]
    Bind {
        /// `admin.bind`, or the role's default.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The database pool could not be configured.
    #[error("configuring the admin API's database pool for {url}: {source}")]
    Store {
        /// The database URL, password hidden.
        url: String,
        /// Why.
        source: store::Error,
    },
    /// The server failed while running.
    #[error("the admin listener failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Binds the admin address of `role` (`admin.bind`, or the role's default).
///
/// # Errors
///
/// [`Error::Bind`] naming the address and the setting to change.
pub async fn bind(settings: &Settings, role: Role) -> Result<TcpListener, Error> {
    let addr = settings.admin.bind_for(role);
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })
}

/// Serves the admin API on `listener` until `shutdown`: probes run in the
/// background for `/readyz`; in-flight requests are cut at shutdown (they
/// are reads, or operations that are safe to repeat).
///
/// # Errors
///
/// [`Error::Store`] or [`Error::Serve`].
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    role: Role,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let db = &settings.database;
    let store = Store::connect_for_batches(&db.url, &db.schema, 4)
        .map_err(|source| Error::Store { url: redact_url(&db.url), source })?;
    let needs_postgres = matches!(role, Role::Worker | Role::All);
    let probes = Probes::new(needs_postgres.then(|| store.clone()), settings.broker.url.clone());
    let probing = tokio::spawn(probes.clone().run(shutdown.clone()));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, role = role.as_str(), token = !settings.admin.token.is_empty(), "admin listening");
    }
    let app = router(AdminState::new(Arc::new(settings), role, store, probes));
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    let _ = probing.await;
    served.map_err(Error::Serve)
}
