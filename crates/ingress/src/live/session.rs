//! The broker side of the [`super::LiveHub`]: a [`Session`] (connection,
//! channel, exclusive queue) and the [`Supervisor`] task that owns it,
//! consumes it, and replaces it with a new one, re-bound, when it is lost.
//!
//! Like the publisher's sessions, a session is never repaired: once given up
//! (`lost`) no bind goes to it, and the next one is installed whole.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context as _;
use broker::nodes::{Nodes, jittered};
use broker::{LiveMessage, declare_live, live_routing_key};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use metrics::counter;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Hub, Key};

/// The first reconnect delay, doubled after each failure up to the maximum.
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);
/// The longest reconnect delay; a connection that stayed up this long resets it.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);
/// Connecting to one node taking longer has failed; so has declaring and
/// consuming once connected.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the supervisor checks the connection and channel status: a
/// channel closed by the broker (a refused bind) only shows up there.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Bound on one bind or unbind, which hold the bindings lock: on a half-open
/// connection they would otherwise wait for the AMQP heartbeat to notice.
const BIND_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on closing a connection that may already be broken.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// One connection, its channel and its exclusive queue.
pub(super) struct Session {
    pub(super) generation: u64,
    connection: Connection,
    channel: Channel,
    queue: ShortString,
    /// Set by the supervisor once it gave the session up, and by a failed bind
    /// (an AMQP error closes the channel anyway).
    pub(super) lost: AtomicBool,
    /// Held for each bind or unbind: one in flight at a time (see [`Session::bind`]).
    binding: tokio::sync::Mutex<()>,
}

impl Session {
    /// The name of its queue: where workers send the verdicts this instance
    /// waits for (`reply_to`).
    pub(super) fn queue_name(&self) -> &str {
        self.queue.as_str()
    }

    /// Connects to any node of `nodes`, declares the exchange and a new
    /// exclusive, auto-delete queue and starts consuming it (no-ack: a lost
    /// message is filled from the database).
    pub(super) async fn open(
        nodes: &Nodes,
        prefix: &str,
        generation: u64,
    ) -> anyhow::Result<(Arc<Session>, Consumer)> {
        let properties =
            ConnectionProperties::default().with_connection_name(format!("{prefix}-live").into());
        let (connection, node) =
            nodes.connect(properties, CONNECT_TIMEOUT).await.context("connecting for live updates")?;
        debug!(%node, generation, "live connection opened");
        let prepared = tokio::time::timeout(CONNECT_TIMEOUT, Self::prepare(&connection, prefix))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no live queue within {CONNECT_TIMEOUT:?}")));
        match prepared {
            Ok((channel, queue, consumer)) => {
                let lost = AtomicBool::new(false);
                let binding = tokio::sync::Mutex::new(());
                Ok((Arc::new(Session { generation, connection, channel, queue, lost, binding }), consumer))
            }
            Err(error) => {
                // Otherwise a persistent declare failure leaks a connection per attempt.
                close_connection(&connection).await;
                Err(error)
            }
        }
    }

    async fn prepare(
        connection: &Connection,
        prefix: &str,
    ) -> anyhow::Result<(Channel, ShortString, Consumer)> {
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
        let consumer = channel
            .basic_consume(queue.clone(), "".into(), consume, FieldTable::default())
            .await
            .context("consuming the live queue")?;
        Ok((channel, queue, consumer))
    }

    /// Not given up, and connection and channel still open: binds may go here.
    pub(super) fn usable(&self) -> bool {
        !self.lost.load(Ordering::Acquire)
            && self.connection.status().connected()
            && self.channel.status().connected()
    }

    /// Binds (or unbinds) `key`'s routing key; any failure gives the session
    /// up, so the supervisor replaces it.
    ///
    /// One at a time per session, in the order asked (a fair lock): the broker
    /// answers a channel's binds one after another anyway, and with up to 64 of
    /// them in flight on the channel that also consumes, the live fan-out stayed
    /// slow long after the binds were done (stream_latency p99 1–3 s against
    /// 0.1 s, docs/benchmarks.md). Opening 10,000 streams takes as long either way.
    pub(super) async fn bind(&self, exchange: &ShortString, key: &Key, bind: bool) -> anyhow::Result<()> {
        let routing: ShortString = live_routing_key(&key.0, &key.1).into();
        let (queue, exchange, args) = (self.queue.clone(), exchange.clone(), FieldTable::default());
        let _one_at_a_time = self.binding.lock().await;
        let done = if bind {
            let options = QueueBindOptions::default();
            tokio::time::timeout(
                BIND_TIMEOUT,
                self.channel.queue_bind(queue, exchange, routing, options, args),
            )
            .await
        } else {
            tokio::time::timeout(BIND_TIMEOUT, self.channel.queue_unbind(queue, exchange, routing, args))
                .await
        };
        let outcome = match done {
            Ok(outcome) => outcome.map_err(anyhow::Error::from),
            Err(_) => Err(anyhow::anyhow!("no answer from the broker within {BIND_TIMEOUT:?}")),
        };
        if outcome.is_err() {
            self.lost.store(true, Ordering::Release);
        }
        outcome.context(if bind { "binding a live conversation" } else { "unbinding a live conversation" })
    }
}

async fn close_connection(connection: &Connection) {
    match tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "OK".into())).await {
        Ok(Ok(())) => {}
        // Closing an already-broken connection fails; that is expected.
        Ok(Err(error)) => debug!(%error, "closing the live connection failed"),
        Err(_) => debug!("closing the live connection timed out"),
    }
}

/// The task that owns the connection: consumes, watches, reconnects.
pub(super) struct Supervisor {
    pub(super) hub: Weak<Hub>,
    /// The broker's node URLs; see [`broker::nodes`].
    pub(super) nodes: Arc<Nodes>,
    pub(super) prefix: String,
    pub(super) shutdown: CancellationToken,
}

impl Supervisor {
    pub(super) async fn run(self, first: Option<(Arc<Session>, Consumer)>) {
        let mut delay = RECONNECT_DELAY_MIN;
        let (mut session, mut consumer) = match first {
            Some(first) => first,
            // Started while the broker was away: keep trying until it is back.
            None => match self.reconnect(1, &mut delay).await {
                Some(first) => first,
                None => return,
            },
        };
        loop {
            let connected_at = Instant::now();
            let Some(reason) = self.serve(&session, &mut consumer).await else { break };
            // No bind may go to it any more.
            session.lost.store(true, Ordering::Release);
            if let Some(hub) = self.hub.upgrade() {
                hub.connected.store(false, Ordering::Release);
            }
            warn!(generation = session.generation, %reason, "live connection lost; reconnecting");
            close_connection(&session.connection).await;
            // Only a connection that stayed up for a while resets the backoff.
            if connected_at.elapsed() >= RECONNECT_DELAY_MAX {
                delay = RECONNECT_DELAY_MIN;
            }
            let Some(next) = self.reconnect(session.generation + 1, &mut delay).await else { return };
            (session, consumer) = next;
        }
        close_connection(&session.connection).await;
    }

    /// Hands deliveries to subscribers until the session is lost (why) or
    /// the hub is gone (`None`).
    async fn serve(&self, session: &Session, consumer: &mut Consumer) -> Option<String> {
        let mut tick = tokio::time::interval(HEALTH_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                delivery = consumer.next() => match delivery {
                    Some(Ok(delivery)) => {
                        let kind = delivery.properties.kind().as_ref().map(ShortString::as_str);
                        self.hub.upgrade()?.receive(LiveMessage::decode(kind, &delivery.data));
                    }
                    Some(Err(error)) => return Some(format!("the consumer failed: {error}")),
                    None => return Some("the broker cancelled the consumer".to_owned()),
                },
                _ = tick.tick() => {
                    if !session.usable() {
                        return Some("the connection or its channel is no longer open".to_owned());
                    }
                }
            }
        }
    }

    /// Opens and installs a new session, retrying with backoff; `None` once
    /// the hub is gone.
    async fn reconnect(&self, generation: u64, delay: &mut Duration) -> Option<(Arc<Session>, Consumer)> {
        let mut attempt: u32 = 0;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(jittered(*delay)) => {}
            }
            *delay = delay.saturating_mul(2).min(RECONNECT_DELAY_MAX);
            attempt = attempt.saturating_add(1);
            // Session::open bounds each node's handshake and the declares.
            let open = Session::open(&self.nodes, &self.prefix, generation);
            let opened = tokio::select! {
                () = self.shutdown.cancelled() => return None,
                opened = open => opened,
            };
            let error = match opened {
                Ok((session, consumer)) => {
                    let Some(hub) = self.hub.upgrade() else {
                        close_connection(&session.connection).await;
                        return None;
                    };
                    match hub.install(&session).await {
                        Ok(conversations) => {
                            counter!("escalations_ingress_live_reconnects_total").increment(1);
                            info!(
                                generation,
                                attempt, conversations, "live connection re-established; subscribers resync"
                            );
                            return Some((session, consumer));
                        }
                        Err(error) => {
                            close_connection(&session.connection).await;
                            error
                        }
                    }
                }
                Err(error) => error,
            };
            warn!(error = format!("{error:#}"), attempt, retry_in = ?*delay, "live reconnect failed; retrying");
        }
    }
}
