//! The worker's one AMQP connection, shared by its shard consumers (each on
//! its own channel), rebuilt on demand after a failure.
//!
//! A shard task whose connection broke ends with an error; the lease loop
//! restarts it on its next tick, and the restart asks for a connection here,
//! which reconnects (and re-declares the topology, which is idempotent) only
//! if the current one is no longer usable.

use std::sync::Arc;
use std::time::Duration;

use broker::Topology;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::Mutex;

use crate::error::Result;

/// Connecting and declaring give up after this long, so a broker that is down
/// costs a shard one lease tick, not a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// See the module docs.
pub(crate) struct Amqp {
    url: String,
    topology: Topology,
    name: String,
    current: Mutex<Option<Arc<Connection>>>,
}

impl std::fmt::Debug for Amqp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the URL carries the password.
        f.debug_struct("Amqp").field("topology", &self.topology).field("name", &self.name).finish()
    }
}

impl Amqp {
    pub(crate) fn new(url: &str, topology: Topology, worker_id: &str) -> Self {
        let name = format!("{}-worker-{worker_id}", topology.prefix);
        Self { url: url.to_owned(), topology, name, current: Mutex::new(None) }
    }

    /// The current connection if it is usable, else a new one with the
    /// topology declared on it.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>> {
        let mut current = self.current.lock().await;
        if let Some(connection) = current.as_ref()
            && connection.status().connected()
        {
            return Ok(connection.clone());
        }
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
            Ok(connected) => connected?,
            Err(_elapsed) => {
                return Err(broker::Error::Amqp {
                    context: format!("connect within {CONNECT_TIMEOUT:?}"),
                    source: lapin::ErrorKind::IOError(Arc::new(std::io::Error::from(
                        std::io::ErrorKind::TimedOut,
                    )))
                    .into(),
                }
                .into());
            }
        };
        tracing::info!(connection = %self.name, "connected to the broker");
        let connection = Arc::new(connection);
        *current = Some(connection.clone());
        Ok(connection)
    }

    async fn connect(&self) -> Result<Connection> {
        let properties = ConnectionProperties::default().with_connection_name(self.name.clone().into());
        let connection = Connection::connect(&self.url, properties)
            .await
            .map_err(|source| broker::Error::Amqp { context: "connect".to_owned(), source })?;
        // Consumers need their queues; declaring here means a worker that
        // starts before any ingress does not fail on a fresh broker.
        let channel = connection
            .create_channel()
            .await
            .map_err(|source| broker::Error::Amqp { context: "open channel".to_owned(), source })?;
        self.topology.declare(&channel).await?;
        let _ = channel.close(200, "OK".into()).await;
        Ok(connection)
    }

    /// Closes the connection, if open. Unacked deliveries of any channel
    /// still open go back to their queues.
    pub(crate) async fn close(&self) {
        let connection = self.current.lock().await.take();
        if let Some(connection) = connection
            && connection.status().connected()
            && let Err(error) =
                tokio::time::timeout(Duration::from_secs(5), connection.close(200, "OK".into())).await
        {
            tracing::debug!(%error, "closing the broker connection timed out");
        }
    }
}
