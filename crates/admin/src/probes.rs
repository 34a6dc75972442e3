//! Readiness: what the role needs, probed in the background once a second,
//! so `/readyz` answers at once from the last result.
//!
//! - `postgres` (worker, all): `SELECT 1` on the admin's own pool, within 2 s.
//! - `rabbitmq` (every role): the admin's own AMQP connection is open; when
//!   it is not, one reconnect per round, within 3 s per node (to any node of
//!   a cluster). The same connection
//!   serves the shard-lag gauges.
//!
//! The probes use connections of their own, on the same URLs as the role's,
//! so they fail when the role's would: a database or broker that went away,
//! or a network path to it that broke.

use domain::report::error_chain;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use broker::Nodes;
use lapin::{Connection, ConnectionProperties};
use store::Store;
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(1);
const POSTGRES_TIMEOUT: Duration = Duration::from_secs(2);
const RABBITMQ_TIMEOUT: Duration = Duration::from_secs(3);

/// The last probe results and the broker connection, shared with the handlers
/// and the gauges.
#[derive(Debug, Clone)]
pub struct Probes {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Option<Store>,
    /// The broker's node URLs (any one that answers will do).
    nodes: Nodes,
    results: Mutex<BTreeMap<&'static str, Result<(), String>>>,
    amqp: Mutex<Option<Arc<Connection>>>,
}

impl Probes {
    /// Probes for a role: PostgreSQL if `store` is given, RabbitMQ always.
    /// Not ready until the first round has run.
    pub fn new(store: Option<Store>, broker_url: String) -> Self {
        let mut results = BTreeMap::new();
        if store.is_some() {
            results.insert("postgres", Err("not probed yet".to_owned()));
        }
        results.insert("rabbitmq", Err("not probed yet".to_owned()));
        Self {
            inner: Arc::new(Inner {
                store,
                nodes: Nodes::new(&broker_url),
                results: Mutex::new(results),
                amqp: Mutex::new(None),
            }),
        }
    }

    /// Each check's last result: `Ok` or why it failed.
    pub fn results(&self) -> BTreeMap<&'static str, Result<(), String>> {
        self.inner.results.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether every check passed in the last round.
    pub fn ready(&self) -> bool {
        self.results().values().all(Result::is_ok)
    }

    /// The broker connection, if it is open.
    pub fn amqp(&self) -> Option<Arc<Connection>> {
        let amqp = self.inner.amqp.lock().unwrap_or_else(PoisonError::into_inner);
        amqp.as_ref().filter(|c| c.status().connected()).cloned()
    }

    /// Probes until `shutdown`, then closes the broker connection.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            self.round().await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(EVERY) => {}
            }
        }
        let amqp = self.inner.amqp.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(connection) = amqp {
            let _ = connection.close(200, "bye".into()).await;
        }
    }

    async fn round(&self) {
        if let Some(store) = &self.inner.store {
            let result = match tokio::time::timeout(POSTGRES_TIMEOUT, ping(store)).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {POSTGRES_TIMEOUT:?}")),
            };
            self.set("postgres", result);
        }
        let result = match self.amqp() {
            Some(_) => Ok(()),
            // Each node gets RABBITMQ_TIMEOUT (a cluster's nodes one after the other).
            None => self.connect().await,
        };
        self.set("rabbitmq", result);
    }

    async fn connect(&self) -> Result<(), String> {
        let (connection, _node) = self
            .inner
            .nodes
            .connect(ConnectionProperties::default(), RABBITMQ_TIMEOUT)
            .await
            .map_err(|error| error.to_string())?;
        *self.inner.amqp.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(connection));
        Ok(())
    }

    fn set(&self, check: &'static str, result: Result<(), String>) {
        let mut results = self.inner.results.lock().unwrap_or_else(PoisonError::into_inner);
        let was_ok = results.get(check).is_some_and(Result::is_ok);
        match (&result, was_ok) {
            (Err(error), true) => tracing::warn!(check, %error, "not ready"),
            (Ok(()), false) => tracing::info!(check, "ready"),
            _ => {}
        }
        results.insert(check, result);
    }
}

async fn ping(store: &Store) -> Result<(), String> {
    let client = store.client().await.map_err(|error| error_chain(&error))?;
    client.batch_execute("SELECT 1").await.map_err(|error| error_chain(&error))
}
