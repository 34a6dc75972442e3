//! The connection behind a [`super::Publisher`] and the task that keeps it up.
//!
//! A [`Session`] is one lapin connection plus its confirm-mode channels
//! ("lanes"). It is immutable once installed: the supervisor replaces a broken
//! session wholesale instead of repairing it, so a publish either sees a
//! complete, declared session or none at all (→ `Unavailable`).

use super::PublisherConfig;
use crate::error::{Error, Result};
use crate::nodes::{Backoff, HEALTH_CHECK_INTERVAL, Nodes, redact_list};
use futures::{StreamExt, stream::BoxStream};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Event,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::ShortString,
};
use std::{
    fmt::Display,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError, RwLock},
    task::{Context, Poll},
    time::Duration,
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

/// Upper bound for closing a connection that is already broken.
const ABORT_TIMEOUT: Duration = Duration::from_secs(1);

/// A persistent connection failure is logged at `warn` on its first attempt
/// and then every this many attempts; the attempts in between go to `debug`.
const WARN_EVERY_N_FAILURES: u32 = 20;

/// State shared between the [`super::Publisher`] handle and its supervisor.
pub(super) struct Shared {
    pub(super) config: PublisherConfig,
    /// The node URLs of `config.url`, and which one to try next.
    nodes: Nodes,
    current: RwLock<Option<Arc<Session>>>,
    /// Lets a failed publish cut the supervisor's health-check wait short.
    wake: Notify,
    pub(super) shutdown: CancellationToken,
    available: watch::Sender<bool>,
}

impl Shared {
    pub(super) fn new(config: PublisherConfig) -> Self {
        Self {
            nodes: Nodes::new(&config.url),
            config,
            current: RwLock::new(None),
            wake: Notify::new(),
            shutdown: CancellationToken::new(),
            available: watch::Sender::new(false),
        }
    }

    /// The live session, if any. The lock is held only to clone the `Arc`,
    /// never across an await.
    pub(super) fn current(&self) -> Option<Arc<Session>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(super) fn subscribe_available(&self) -> watch::Receiver<bool> {
        self.available.subscribe()
    }

    fn install(&self, session: Arc<Session>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(session);
        self.available.send_replace(true);
    }

    /// Withdraw session `generation` if it is still the live one. Returns
    /// whether this call made the publisher unavailable, so that exactly one
    /// party logs the transition.
    fn uninstall(&self, generation: u64) -> bool {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|s| s.generation == generation) {
            *current = None;
            self.available.send_replace(false);
            true
        } else {
            false
        }
    }

    /// A publish on session `generation` failed at the AMQP level: stop
    /// handing that session out right away and wake the supervisor to rebuild.
    pub(super) fn report_failure(&self, generation: u64, error: &dyn Display) {
        if self.uninstall(generation) {
            warn!(
                generation,
                %error,
                "publish failed on the broker connection; publisher unavailable, reconnecting"
            );
        }
        self.wake.notify_one();
    }
}

/// One connection, its topology declared, and `channels` confirm-mode lanes.
pub(super) struct Session {
    pub(super) generation: u64,
    connection: Connection,
    lanes: Vec<Lane>,
}

/// A confirm-mode channel. Publishes to one lane are pipelined: many may await
/// their confirms at once.
struct Lane {
    channel: Channel,
    /// Serialises only the *enqueueing* of a publish; see [`ExclusiveFirstPoll`].
    enqueue: Mutex<()>,
}

impl Session {
    async fn open(config: &PublisherConfig, nodes: &Nodes, generation: u64) -> Result<Self> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("{}-publisher", config.topology.prefix).into());
        let (connection, node) = nodes.connect(properties, config.connect_timeout).await?;
        match Self::prepare(&connection, config).await {
            Ok(lanes) => {
                info!(generation, %node, "publisher connected to broker node");
                Ok(Self { generation, connection, lanes })
            }
            Err(error) => {
                // Otherwise a persistent declare failure would leak one
                // connection per retry until lapin notices the drop.
                close_connection(&connection).await;
                Err(error)
            }
        }
    }

    async fn prepare(connection: &Connection, config: &PublisherConfig) -> Result<Vec<Lane>> {
        // Declaring on a throwaway channel: a refused declare closes the
        // channel it ran on, and that must not be a publishing lane.
        let setup = connection.create_channel().await.map_err(Error::amqp("open topology channel"))?;
        config.topology.declare(&setup).await?;
        if let Err(error) = setup.close(200, "OK".into()).await {
            debug!(%error, "closing the topology channel failed");
        }

        let mut lanes = Vec::with_capacity(config.channels.max(1));
        for _ in 0..config.channels.max(1) {
            let channel =
                connection.create_channel().await.map_err(Error::amqp("open publishing channel"))?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(Error::amqp("enable publisher confirms"))?;
            lanes.push(Lane { channel, enqueue: Mutex::new(()) });
        }
        Ok(lanes)
    }

    fn lane(&self, shard: u16) -> Option<&Lane> {
        self.lanes.get(usize::from(shard) % self.lanes.len().max(1))
    }

    /// The connection and the lane of `shard` are open. Checked before each
    /// publish so that a connection that died a moment ago (before the
    /// supervisor noticed) yields `Unavailable`, not a channel error.
    pub(super) fn can_publish(&self, shard: u16) -> bool {
        self.connection.status().connected()
            && self.lane(shard).is_some_and(|lane| lane.channel.status().connected())
    }

    /// Connection and every lane still open.
    pub(super) fn healthy(&self) -> bool {
        self.connection.status().connected() && self.lanes.iter().all(|l| l.channel.status().connected())
    }

    /// The broker stopped reading from us (memory or disk alarm). Publishes
    /// would only hang until the confirm timeout, so they fail fast instead.
    pub(super) fn blocked(&self) -> bool {
        self.connection.status().blocked()
    }

    /// Publish on the lane of `shard` and wait for the broker's confirm.
    ///
    /// Taking the lane by shard means all events of one conversation share one
    /// channel, and a channel's messages reach the queues in publish order.
    pub(super) async fn publish(
        &self,
        shard: u16,
        exchange: ShortString,
        routing_key: ShortString,
        body: &[u8],
        properties: BasicProperties,
    ) -> lapin::Result<Option<Confirmation>> {
        let Some(lane) = self.lane(shard) else {
            return Ok(None);
        };
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let send = lane.channel.basic_publish(exchange, routing_key, options, body, properties);
        let confirm = ExclusiveFirstPoll::new(&lane.enqueue, send).await?;
        // No lock is held here: this await is what pipelining overlaps.
        confirm.await.map(Some)
    }

    /// Graceful close: let in-flight publishes get their confirms (bounded by
    /// `drain`), then close lanes and connection.
    async fn close(&self, drain: Duration) {
        for lane in &self.lanes {
            if tokio::time::timeout(drain, lane.channel.wait_for_confirms()).await.is_err() {
                warn!("publisher confirms still pending at shutdown");
            }
            if let Err(error) = lane.channel.close(200, "OK".into()).await {
                debug!(%error, "closing a publishing channel failed");
            }
        }
        close_connection(&self.connection).await;
    }
}

async fn close_connection(connection: &Connection) {
    match tokio::time::timeout(ABORT_TIMEOUT, connection.close(200, "OK".into())).await {
        Ok(Ok(())) => {}
        // Closing an already-broken connection fails; that is expected.
        Ok(Err(error)) => debug!(%error, "closing the broker connection failed"),
        Err(_) => debug!("closing the broker connection timed out"),
    }
}

/// Runs the first poll of `inner` while holding `lock`, later polls without.
///
/// lapin's `basic_publish` allocates the delivery tag that confirms refer to
/// and enqueues the frames in two separate critical sections, both within its
/// first poll. Two tasks publishing on one channel from different threads can
/// interleave between the two, so the broker numbers the messages differently
/// from lapin and confirms (or returns) are attributed to the wrong publish.
/// Making the first poll exclusive per channel closes that window while the
/// confirm itself is still awaited concurrently.
struct ExclusiveFirstPoll<'a, F> {
    lock: &'a Mutex<()>,
    inner: Pin<Box<F>>,
    polled: bool,
}

impl<'a, F> ExclusiveFirstPoll<'a, F> {
    fn new(lock: &'a Mutex<()>, inner: F) -> Self {
        Self { lock, inner: Box::pin(inner), polled: false }
    }
}

impl<F: Future> Future for ExclusiveFirstPoll<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if this.polled {
            return this.inner.as_mut().poll(cx);
        }
        this.polled = true;
        let _guard = this.lock.lock().unwrap_or_else(PoisonError::into_inner);
        this.inner.as_mut().poll(cx)
    }
}

/// Why a session stopped being used.
enum End {
    Shutdown,
    Lost(String),
}

/// Keep a session up until shutdown: connect, declare, watch, rebuild.
///
/// Runs in a span carrying the topology prefix, so that the log lines of
/// several publishers in one process can be told apart.
pub(super) fn supervise(shared: Arc<Shared>) -> impl Future<Output = ()> + Send + 'static {
    let span = info_span!("publisher", prefix = %shared.config.topology.prefix);
    supervise_in_span(shared).instrument(span)
}

async fn supervise_in_span(shared: Arc<Shared>) {
    let config = &shared.config;
    let min_delay = config.reconnect_delay_min.max(Duration::from_millis(1));
    let mut backoff = Backoff::new(min_delay, config.reconnect_delay_max);
    let mut failures: u32 = 0;
    let mut generation: u64 = 0;
    // Each node gets the connect timeout, and declaring gets it once more.
    let nodes = u32::try_from(shared.nodes.len()).unwrap_or(u32::MAX).max(1);
    let open_timeout = config.connect_timeout.saturating_mul(nodes.saturating_add(1));
    info!(url = %redact_list(&config.url), "publisher starting; unavailable until connected");

    loop {
        generation += 1;
        let attempt = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            attempt = tokio::time::timeout(open_timeout, Session::open(config, &shared.nodes, generation)) => attempt,
        };
        let opened = match attempt {
            Ok(opened) => opened.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no connection within {open_timeout:?}")),
        };
        match opened {
            Ok(session) => {
                failures = 0;
                backoff.connected();
                let session = Arc::new(session);
                let events = session.connection.events_listener().boxed();
                shared.install(session.clone());
                info!(generation, "broker connected and topology declared; publisher available");
                match watch(&shared, &session, events).await {
                    End::Shutdown => {
                        shared.uninstall(generation);
                        info!("publisher shutting down; draining confirms");
                        session.close(config.confirm_timeout).await;
                        info!("publisher closed");
                        return;
                    }
                    End::Lost(reason) => {
                        if shared.uninstall(generation) {
                            warn!(generation, %reason, "broker connection lost; publisher unavailable, reconnecting");
                        }
                        close_connection(&session.connection).await;
                        // Only a connection that stayed up for a while resets
                        // the backoff; one that flaps keeps backing off.
                        backoff.lost();
                    }
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                if failures % WARN_EVERY_N_FAILURES == 1 {
                    warn!(%error, attempt = failures, retry_in = ?backoff.peek(), "cannot connect to the broker; retrying");
                } else {
                    debug!(%error, attempt = failures, retry_in = ?backoff.peek(), "cannot connect to the broker; retrying");
                }
            }
        }
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
    info!("publisher shut down");
}

async fn watch(shared: &Shared, session: &Session, mut events: BoxStream<'static, Event>) -> End {
    let mut tick = tokio::time::interval(HEALTH_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return End::Shutdown,
            () = shared.wake.notified() => {
                // The wake-up may be stale (meant for an earlier session).
                if shared.current().is_none_or(|s| s.generation != session.generation) {
                    return End::Lost("a publish failed on this connection".into());
                }
            }
            event = events.next() => match event {
                Some(Event::Error(error)) => return End::Lost(error.to_string()),
                Some(Event::ConnectionBlocked(reason)) => {
                    warn!(%reason, "broker blocked the connection; publisher unavailable until unblocked");
                }
                Some(Event::ConnectionUnblocked) => {
                    info!("broker unblocked the connection; publisher available");
                }
                Some(_) => {}
                None => return End::Lost("connection event stream ended".into()),
            },
            _ = tick.tick() => {
                if !session.healthy() {
                    return End::Lost("connection or a channel is no longer open".into());
                }
            }
        }
    }
}
