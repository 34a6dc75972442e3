//! The worker's one AMQP connection, shared by its shard consumers (each on
//! its own channel), rebuilt on demand after a failure.
//!
//! A shard task whose connection broke ends with an error; the lease loop
//! restarts it on its next tick, and the restart asks for a connection here,
//! which reconnects (and re-declares the topology, which is idempotent) only
//! if the current one is no longer usable.
//!
//! With several node URLs (a cluster, see [`broker::nodes`]) a reconnect goes
//! to any node that answers, the one that went away last. After a failed
//! attempt the next one waits a jittered, doubling delay (up to 5 s); asks in
//! between fail at once, so the shards of a worker whose broker is away do
//! not hammer it, nor all come back in the same instant.

use std::sync::Arc;
use std::time::Duration;

use broker::Topology;
use broker::nodes::{Backoff, Nodes};
use lapin::{Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::Result;

/// Connecting to one node, and declaring once connected, give up after this
/// long, so a broker that is down costs a shard one lease tick, not a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// See the module docs.
pub(crate) struct Amqp {
    nodes: Nodes,
    topology: Topology,
    name: String,
    current: Mutex<State>,
}

struct State {
    connection: Option<Arc<Connection>>,
    /// After a failed connect: no new attempt before this.
    retry_at: Option<Instant>,
    /// The waits after failed connects (100 ms doubling to 5 s, jittered).
    backoff: Backoff,
}

impl std::fmt::Debug for Amqp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the URL carries the password.
        f.debug_struct("Amqp").field("topology", &self.topology).field("name", &self.name).finish()
    }
}

impl Amqp {
    /// `url`: one node's URL or a comma-separated list of them.
    pub(crate) fn new(url: &str, topology: Topology, worker_id: &str) -> Self {
        let name = format!("{}-worker-{worker_id}", topology.prefix);
        Self {
            nodes: Nodes::new(url),
            topology,
            name,
            current: Mutex::new(State { connection: None, retry_at: None, backoff: Backoff::reconnect() }),
        }
    }

    /// The current connection if it is usable, else a new one with the
    /// topology declared on it (unless a failed attempt was too recent: then
    /// an error at once).
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>> {
        let mut current = self.current.lock().await;
        if let Some(connection) = current.connection.as_ref()
            && connection.status().connected()
        {
            return Ok(connection.clone());
        }
        if let Some(retry_at) = current.retry_at
            && Instant::now() < retry_at
        {
            return Err(
                timed_out(format!("reconnect (backing off for {:?})", retry_at - Instant::now())).into()
            );
        }
        match self.connect().await {
            Ok((connection, node)) => {
                tracing::info!(connection = %self.name, %node, "connected to the broker");
                let connection = Arc::new(connection);
                current.connection = Some(connection.clone());
                current.retry_at = None;
                current.backoff.reset();
                Ok(connection)
            }
            Err(error) => {
                current.retry_at = Some(Instant::now() + current.backoff.next_delay());
                current.connection = None;
                Err(error)
            }
        }
    }

    async fn connect(&self) -> Result<(Connection, String)> {
        let properties = ConnectionProperties::default().with_connection_name(self.name.clone().into());
        let (connection, node) = self.nodes.connect(properties, CONNECT_TIMEOUT).await?;
        // Consumers need their queues; declaring here means a worker that
        // starts before any ingress does not fail on a fresh broker.
        let declared = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let channel = connection
                .create_channel()
                .await
                .map_err(|source| broker::Error::Amqp { context: "open channel".to_owned(), source })?;
            self.topology.declare(&channel).await?;
            let _ = channel.close(200, "OK".into()).await;
            Ok::<_, broker::Error>(())
        })
        .await
        .unwrap_or_else(|_| Err(timed_out(format!("declare the topology within {CONNECT_TIMEOUT:?}"))));
        if let Err(error) = declared {
            let _ = tokio::time::timeout(Duration::from_secs(1), connection.close(200, "OK".into())).await;
            return Err(error.into());
        }
        Ok((connection, node))
    }

    /// Closes the connection, if open. Unacked deliveries of any channel
    /// still open go back to their queues.
    pub(crate) async fn close(&self) {
        let connection = self.current.lock().await.connection.take();
        if let Some(connection) = connection
            && connection.status().connected()
            && let Err(error) =
                tokio::time::timeout(Duration::from_secs(5), connection.close(200, "OK".into())).await
        {
            tracing::debug!(%error, "closing the broker connection timed out");
        }
    }
}

fn timed_out(context: String) -> broker::Error {
    broker::Error::Amqp {
        context,
        source: lapin::ErrorKind::IOError(Arc::new(std::io::Error::from(std::io::ErrorKind::TimedOut)))
            .into(),
    }
}
