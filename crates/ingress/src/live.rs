//! [`LiveHub`]: this ingress instance's end of the live fan-out (SPEC §3).
//!
//! One exclusive, auto-delete queue per instance, bound to the live exchange
//! only for the conversations that have at least one open stream (or
//! `Prefer: wait` caller) here, so the instance receives only what someone
//! is waiting for. Bindings are reference-counted; one consumer task hands
//! each message to the conversation's in-process broadcast channel.
//!
//! Binding happens before [`LiveHub::subscribe`] returns, so a caller that
//! subscribes first and reads the database afterwards cannot miss an event
//! committed in between: it is either in what it read or on its way here.
//!
//! Limitation: if the hub's connection drops, live messages stop until the
//! process restarts; open streams keep their heartbeats and lose nothing,
//! since a reconnecting widget resumes from the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use broker::{declare_live, live_exchange, live_routing_key};
use domain::live::LiveUpdate;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use metrics::counter;
use tokio::sync::broadcast;

/// Messages a slow subscriber may fall behind by before it must catch up
/// from the database (it sees `Lagged`).
const CAPACITY: usize = 256;

type Key = (String, String);

/// The live fan-out of one ingress instance; cheap to clone.
#[derive(Clone)]
pub struct LiveHub(Arc<Hub>);

struct Hub {
    exchange: ShortString,
    queue: ShortString,
    channel: Channel,
    subscribers: Mutex<HashMap<Key, Entry>>,
    /// Serializes bind and unbind, so an unbind for a conversation whose last
    /// stream closed can never overtake the bind of its next one.
    bindings: tokio::sync::Mutex<()>,
    _connection: Connection,
}

struct Entry {
    sender: broadcast::Sender<Arc<LiveUpdate>>,
    refs: usize,
}

impl std::fmt::Debug for LiveHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHub").field("queue", &self.0.queue).finish_non_exhaustive()
    }
}

/// One open interest in one conversation; dropping it releases the binding.
#[derive(Debug)]
pub struct Subscription {
    hub: LiveHub,
    key: Key,
    /// The conversation's live updates, from the moment of subscribing.
    pub receiver: broadcast::Receiver<Arc<LiveUpdate>>,
}

impl LiveHub {
    /// Connects to `url`, declares the live exchange of `prefix` and this
    /// instance's queue, and starts the consumer task.
    ///
    /// # Errors
    ///
    /// Any refusal of the broker, with what was being done.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<LiveHub> {
        use anyhow::Context as _;
        let properties =
            ConnectionProperties::default().with_connection_name(format!("{prefix}-live").into());
        let connection = Connection::connect(url, properties).await.context("connecting for live updates")?;
        let channel = connection.create_channel().await.context("opening the live channel")?;
        declare_live(&channel, prefix).await.context("declaring the live exchange")?;
        let options =
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        let queue = channel
            .queue_declare("".into(), options, FieldTable::default())
            .await
            .context("declaring the live queue")?;
        let queue = queue.name().clone();
        let consume = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let mut consumer = channel
            .basic_consume(queue.clone(), "".into(), consume, FieldTable::default())
            .await
            .context("consuming the live queue")?;
        let exchange =
            ShortString::try_new(live_exchange(prefix)).map_err(|_| anyhow::anyhow!("prefix too long"))?;
        let hub = LiveHub(Arc::new(Hub {
            exchange,
            queue,
            channel,
            subscribers: Mutex::new(HashMap::new()),
            bindings: tokio::sync::Mutex::new(()),
            _connection: connection,
        }));
        // A weak handle: the task must not keep the hub (and its queue) alive.
        let weak = Arc::downgrade(&hub.0);
        tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                let Some(hub) = weak.upgrade() else { break };
                match delivery {
                    Ok(delivery) => hub.dispatch(&delivery.data),
                    Err(error) => {
                        tracing::warn!(%error, "live consumer failed; live updates stop");
                        break;
                    }
                }
            }
        });
        Ok(hub)
    }

    /// Subscribes to one conversation's updates; returns once the binding is
    /// in place (see the module docs).
    ///
    /// # Errors
    ///
    /// The broker refused the binding.
    pub async fn subscribe(&self, bot_id: &str, conversation_id: &str) -> anyhow::Result<Subscription> {
        let key: Key = (bot_id.to_owned(), conversation_id.to_owned());
        let _serial = self.0.bindings.lock().await;
        let (receiver, first) = {
            let mut map = self.0.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = map
                .entry(key.clone())
                .or_insert_with(|| Entry { sender: broadcast::channel(CAPACITY).0, refs: 0 });
            entry.refs += 1;
            (entry.sender.subscribe(), entry.refs == 1)
        };
        // From here on the subscription exists, so a failure below releases it.
        let subscription = Subscription { hub: self.clone(), key, receiver };
        if first {
            self.0.bind(&subscription.key, true).await?;
        }
        Ok(subscription)
    }

    async fn release(&self, key: Key) {
        let _serial = self.0.bindings.lock().await;
        let last = {
            let mut map = self.0.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
            match map.get_mut(&key) {
                Some(entry) if entry.refs > 1 => {
                    entry.refs -= 1;
                    false
                }
                Some(_) => map.remove(&key).is_some(),
                None => false,
            }
        };
        if last && let Err(error) = self.0.bind(&key, false).await {
            tracing::warn!(%error, "unbinding a live conversation failed");
        }
    }
}

impl Hub {
    async fn bind(&self, key: &Key, bind: bool) -> anyhow::Result<()> {
        let routing: ShortString = live_routing_key(&key.0, &key.1).into();
        if bind {
            let options = QueueBindOptions::default();
            self.channel
                .queue_bind(
                    self.queue.clone(),
                    self.exchange.clone(),
                    routing,
                    options,
                    FieldTable::default(),
                )
                .await?;
        } else {
            self.channel
                .queue_unbind(self.queue.clone(), self.exchange.clone(), routing, FieldTable::default())
                .await?;
        }
        Ok(())
    }

    /// Hands one message to its conversation's subscribers, if any.
    fn dispatch(&self, body: &[u8]) {
        let update: LiveUpdate = match serde_json::from_slice(body) {
            Ok(update) => update,
            Err(error) => {
                counter!("ingress_live_messages_total", "outcome" => "undecodable").increment(1);
                tracing::warn!(%error, "undecodable live message dropped");
                return;
            }
        };
        // The routing key is a hash, so the ids in the body decide.
        let key = (update.bot_id.as_str().to_owned(), update.conversation_id.as_str().to_owned());
        let map = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get(&key) {
            // No receiver left is fine: the last one is being released.
            let _ = entry.sender.send(Arc::new(update));
            counter!("ingress_live_messages_total", "outcome" => "delivered").increment(1);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let hub = self.hub.clone();
        let key = std::mem::take(&mut self.key);
        // Unbinding needs the broker; outside a runtime (process exit) the
        // exclusive queue goes away with the connection anyway.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { hub.release(key).await });
        }
    }
}
