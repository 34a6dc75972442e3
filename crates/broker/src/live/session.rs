//! An ingress instance's end of the live fan-out: a [`LiveSession`]
//! (connection, channel, exclusive queue, the bindings made on it) and its
//! [`LiveInbox`], which yields what arrives, decoded ([`LiveMessage`]).
//!
//! A session is never repaired: once given up ([`LiveSession::give_up`], or a
//! failed bind) its owner opens a new one and binds again what it needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use tracing::debug;

use super::{LiveMessage, declare_live, live_exchange, live_routing_key};
use crate::error::{Error, Result};
use crate::nodes::Nodes;
use crate::topology::name;

/// Connecting to one node taking longer has failed; so has declaring and
/// consuming once connected.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one bind or unbind once its turn came: on a half-open connection it
/// would otherwise wait for the AMQP heartbeat to notice.
const BIND_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on closing a connection that may already be broken.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// One connection, its channel and its exclusive, auto-delete queue.
pub struct LiveSession {
    generation: u64,
    connection: Connection,
    channel: Channel,
    exchange: ShortString,
    queue: ShortString,
    /// Set once given up, and by a failed bind (an AMQP error closes the channel anyway).
    lost: AtomicBool,
    /// Held for each bind or unbind: one in flight at a time (see [`LiveSession::bind`]).
    binding: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("generation", &self.generation)
            .field("queue", &self.queue)
            .field("usable", &self.usable())
            .finish_non_exhaustive()
    }
}

/// What a [`LiveInbox`] yields next.
#[derive(Debug)]
pub enum Inbound {
    /// A message, decoded (an error is a message nobody can read: drop it).
    Message(std::result::Result<LiveMessage, serde_json::Error>),
    /// The consumer ended (why): the session is lost.
    Ended(String),
}

/// The consumer of a session's queue.
pub struct LiveInbox(Consumer);

impl std::fmt::Debug for LiveInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveInbox").finish_non_exhaustive()
    }
}

impl LiveInbox {
    /// The next message, or why there will be none.
    pub async fn next(&mut self) -> Inbound {
        match self.0.next().await {
            Some(Ok(delivery)) => {
                let kind = delivery.properties.kind().as_ref().map(ShortString::as_str);
                Inbound::Message(LiveMessage::decode(kind, &delivery.data))
            }
            Some(Err(error)) => Inbound::Ended(format!("the consumer failed: {error}")),
            None => Inbound::Ended("the broker cancelled the consumer".to_owned()),
        }
    }
}

impl LiveSession {
    /// Connects to any node of `nodes`, declares the live exchange of `prefix`
    /// and a new exclusive, auto-delete queue, and starts consuming it (no-ack:
    /// a lost message is filled from the database).
    ///
    /// # Errors
    ///
    /// No node accepted the connection, or the broker refused a declare or
    /// the consume (within 10 s each).
    pub async fn open(nodes: &Nodes, prefix: &str, generation: u64) -> Result<(Arc<LiveSession>, LiveInbox)> {
        let exchange = name(live_exchange(prefix))?;
        let properties =
            ConnectionProperties::default().with_connection_name(format!("{prefix}-live").into());
        let (connection, node) = nodes.connect(properties, CONNECT_TIMEOUT).await?;
        debug!(%node, generation, "live connection opened");
        let prepared = tokio::time::timeout(CONNECT_TIMEOUT, prepare(&connection, prefix))
            .await
            .unwrap_or_else(|_| Err(Error::Channel(format!("no live queue within {CONNECT_TIMEOUT:?}"))));
        match prepared {
            Ok((channel, queue, consumer)) => {
                let session = LiveSession {
                    generation,
                    connection,
                    channel,
                    exchange,
                    queue,
                    lost: AtomicBool::new(false),
                    binding: tokio::sync::Mutex::new(()),
                };
                Ok((Arc::new(session), LiveInbox(consumer)))
            }
            Err(error) => {
                // Otherwise a persistent declare failure leaks a connection per attempt.
                close_connection(&connection).await;
                Err(error)
            }
        }
    }

    /// Which session of its owner this is (1 for the first).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The name of its queue: where workers send the verdicts this instance
    /// waits for (`reply_to`).
    #[must_use]
    pub fn queue_name(&self) -> &str {
        self.queue.as_str()
    }

    /// Not given up, and connection and channel still open: binds may go here.
    #[must_use]
    pub fn usable(&self) -> bool {
        !self.lost.load(Ordering::Acquire)
            && self.connection.status().connected()
            && self.channel.status().connected()
    }

    /// Marks the session lost: no bind goes to it any more.
    pub fn give_up(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// Binds (or unbinds) the conversation's routing key; any failure gives
    /// the session up, so its owner replaces it.
    ///
    /// One at a time per session, in the order asked (a fair lock): the broker
    /// answers a channel's binds one after another anyway, and with up to 64 of
    /// them in flight on the channel that also consumes, the live fan-out stayed
    /// slow long after the binds were done (stream_latency p99 1–3 s against
    /// 0.1 s, docs/benchmarks.md). Opening 10,000 streams takes as long either way.
    ///
    /// # Errors
    ///
    /// The broker refused, or did not answer within 2 s.
    pub async fn bind(&self, bot_id: &str, conversation_id: &str, bind: bool) -> Result<()> {
        let routing: ShortString = live_routing_key(bot_id, conversation_id).into();
        let (queue, exchange, args) = (self.queue.clone(), self.exchange.clone(), FieldTable::default());
        let what = if bind { "bind a live conversation" } else { "unbind a live conversation" };
        let _one_at_a_time = self.binding.lock().await;
        if self.lost.load(Ordering::Acquire) {
            // A bind before this one failed: the session is being replaced.
            return Err(Error::Channel(format!("{what}: the live session was given up")));
        }
        let done = tokio::time::timeout(BIND_TIMEOUT, async {
            if bind {
                let options = QueueBindOptions::default();
                self.channel.queue_bind(queue, exchange, routing, options, args).await
            } else {
                self.channel.queue_unbind(queue, exchange, routing, args).await
            }
        })
        .await;
        let outcome = match done {
            Ok(outcome) => outcome.map_err(Error::amqp(what)),
            Err(_) => {
                Err(Error::Channel(format!("{what}: no answer from the broker within {BIND_TIMEOUT:?}")))
            }
        };
        if outcome.is_err() {
            self.give_up();
        }
        outcome
    }

    /// Closes the connection (its queue goes with it), bounded at 1 s.
    pub async fn close(&self) {
        close_connection(&self.connection).await;
    }
}

async fn prepare(connection: &Connection, prefix: &str) -> Result<(Channel, ShortString, Consumer)> {
    let channel = connection.create_channel().await.map_err(Error::amqp("open the live channel"))?;
    declare_live(&channel, prefix).await?;
    let options =
        QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    let queue = channel
        .queue_declare("".into(), options, FieldTable::default())
        .await
        .map_err(Error::amqp("declare the live queue"))?;
    let queue = queue.name().clone();
    let consume = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
    let consumer = channel
        .basic_consume(queue.clone(), "".into(), consume, FieldTable::default())
        .await
        .map_err(Error::amqp("consume the live queue"))?;
    Ok((channel, queue, consumer))
}

async fn close_connection(connection: &Connection) {
    match tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "OK".into())).await {
        Ok(Ok(())) => {}
        // Closing an already-broken connection fails; that is expected.
        Ok(Err(error)) => debug!(%error, "closing the live connection failed"),
        Err(_) => debug!("closing the live connection timed out"),
    }
}
