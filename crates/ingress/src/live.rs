//! [`LiveHub`]: this ingress instance's end of the live fan-out (docs/protocol.md §3).
//!
//! One exclusive, auto-delete queue per instance, bound to the live exchange
//! only for the conversations that have at least one open stream here, so the
//! instance receives only what someone is waiting for. Bindings are
//! reference-counted; the consumer hands each message to the conversation's
//! in-process broadcast channel as a [`LiveSignal::Update`].
//!
//! The same queue takes verdicts: a request that waits for its event's
//! verdict (`Prefer: wait`, `escalate`) registers with
//! [`LiveHub::expect_verdict`] and publishes the event with the queue's name
//! as `reply_to`; the worker sends the verdict straight there after its
//! commit (type `verdicts`), through the default exchange, so no binding is
//! made for it.
//!
//! Binding happens before [`LiveHub::subscribe`] returns, so a caller that
//! subscribes first and reads the database afterwards cannot miss an event
//! committed in between: it is either in what it read or on its way here.
//!
//! A supervisor task owns the connection. When the consumer ends or fails,
//! or the connection or channel is no longer open, it reconnects with backoff
//! (100 ms doubling to 5 s), declares the exchange and a new queue, binds
//! every conversation that has subscribers, starts consuming, and only then
//! serves again (`escalations_ingress_live_reconnects_total`). Live messages published in
//! the gap are gone, so every subscriber is then sent [`LiveSignal::Resync`]:
//! whatever was committed before the new bindings were in place is in the
//! database when it reads after that signal, and whatever is committed later
//! arrives live. While there is no usable connection, [`LiveHub::subscribe`]
//! waits up to 2 s for one, then fails (streams answer 503); a bind that
//! fails (say, on a connection that died a moment ago) fails it too. Not
//! covered: a message lost while the connection stays up (a stream fills
//! that gap at its next live event), and an outage the supervisor cannot
//! end (open streams get only heartbeats until it does).

mod session;
mod waiter;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use broker::nodes::Nodes;
use broker::{LiveInbox, LiveMessage, LiveSession, live_exchange};
use domain::live::LiveUpdate;
use domain::{Phase, ScopedEventId, Verdict};
use metrics::counter;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use self::session::Supervisor;
pub use self::waiter::VerdictWaiter;

/// Messages a slow subscriber may fall behind by before it must catch up
/// from the database (it sees `Lagged`).
const CAPACITY: usize = 256;
/// How long [`LiveHub::subscribe`] waits for a connection before failing.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

type Key = (String, String);

/// What a verdict is waited for by: bot, conversation and (namespaced) event
/// id. Event ids are the callers' own and unique only per conversation and
/// namespace, so the id alone would hand one tenant's verdict to another, or
/// a timer's verdict to a caller who chose the timer's id (issue 11).
type WaitKey = (String, String, ScopedEventId);

/// One registered wait for a verdict: its number and where the verdict goes.
type Waiting = (u64, oneshot::Sender<(Verdict, Phase)>);

/// What a subscriber hears about its conversation.
#[derive(Debug, Clone)]
pub enum LiveSignal {
    /// A committed batch's news.
    Update(Arc<LiveUpdate>),
    /// The hub reconnected to the broker and live messages may have been lost
    /// in the gap: read the database for anything newer than what you have.
    Resync,
}

/// The live fan-out of one ingress instance; cheap to clone.
#[derive(Clone)]
pub struct LiveHub(Arc<Hub>);

struct Hub {
    /// The live exchange (for logs).
    exchange: String,
    subscribers: Mutex<HashMap<Key, Entry>>,
    /// The session binds go to. Binds and unbinds hold it shared, so a stream
    /// open waits for no other conversation's lock, only for its turn on the
    /// session's channel (one bind in flight, [`LiveSession::bind`]);
    /// re-binding on a new session holds it exclusively, so the subscriber map
    /// cannot change while a new session binds it.
    /// `None` until the first session is up (an ingress may start while
    /// RabbitMQ is away: the supervisor keeps trying, issue 11).
    bindings: tokio::sync::RwLock<Option<Arc<LiveSession>>>,
    /// Whether a session is installed and not known lost: `/readyz`.
    connected: AtomicBool,
    /// One lock per conversation being bound or unbound, so an unbind for a
    /// conversation whose last stream closed can never overtake the bind of
    /// its next one. An entry lives while someone holds or waits for it.
    gates: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// The generation of the installed session, for subscribers waiting for one.
    installed: watch::Sender<u64>,
    /// Cancelled when the last handle goes: the supervisor closes and ends.
    shutdown: CancellationToken,
    /// The installed session's queue (empty before the first): the `reply_to` of commands whose
    /// verdict someone here waits for.
    reply_queue: Mutex<String>,
    /// Those waiters, by bot, conversation and event id (several requests may
    /// wait for one event), each with its number; the worker's reply resolves them.
    waiters: Mutex<HashMap<WaitKey, Vec<Waiting>>>,
    /// The number of the next waiter.
    next_waiter: AtomicU64,
}

struct Entry {
    sender: broadcast::Sender<LiveSignal>,
    refs: usize,
}

impl std::fmt::Debug for LiveHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHub")
            .field("exchange", &self.0.exchange)
            .field("generation", &*self.0.installed.borrow())
            .finish_non_exhaustive()
    }
}

/// One open interest in one conversation; dropping it releases the binding.
#[derive(Debug)]
pub struct Subscription {
    hub: LiveHub,
    key: Key,
    /// The conversation's live signals, from the moment of subscribing.
    pub receiver: broadcast::Receiver<LiveSignal>,
}

impl LiveHub {
    /// Connects to `url` (one node, or any node of a comma-separated list, see
    /// [`broker::nodes`]), declares the live exchange of `prefix` and this
    /// instance's queue, and starts the supervisor task that consumes it and
    /// reconnects when the connection is lost.
    ///
    /// # Errors
    ///
    /// Any refusal of the broker, with what was being done.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<LiveHub> {
        let exchange = exchange_of(prefix)?;
        let nodes = Arc::new(Nodes::new(url));
        let first = LiveSession::open(&nodes, prefix, 1).await.context("opening the live session")?;
        Ok(Self::spawn(exchange, nodes, prefix, Some(first)))
    }

    /// Like [`LiveHub::connect`], but never fails on the broker: with none
    /// reachable the hub starts without a session and its supervisor keeps
    /// trying with backoff, so streams and verdicts work once RabbitMQ is
    /// there, without a restart (issue 11); [`LiveHub::is_connected`] says when.
    ///
    /// # Errors
    ///
    /// Only a prefix too long for an exchange name.
    pub fn start(url: &str, prefix: &str) -> anyhow::Result<LiveHub> {
        let exchange = exchange_of(prefix)?;
        Ok(Self::spawn(exchange, Arc::new(Nodes::new(url)), prefix, None))
    }

    /// Whether live delivery works now: a session is installed and was not
    /// found lost (checked every 250 ms by the supervisor).
    pub fn is_connected(&self) -> bool {
        self.0.connected.load(Ordering::Acquire)
    }

    fn spawn(
        exchange: String,
        nodes: Arc<Nodes>,
        prefix: &str,
        first: Option<(Arc<LiveSession>, LiveInbox)>,
    ) -> LiveHub {
        let session = first.as_ref().map(|(session, _)| session.clone());
        let hub = LiveHub(Arc::new(Hub {
            exchange,
            subscribers: Mutex::new(HashMap::new()),
            connected: AtomicBool::new(session.is_some()),
            installed: watch::Sender::new(session.as_ref().map_or(0, |s| s.generation())),
            reply_queue: Mutex::new(session.as_ref().map(|s| s.queue_name().to_owned()).unwrap_or_default()),
            bindings: tokio::sync::RwLock::new(session),
            gates: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            waiters: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(0),
        }));
        let supervisor = Supervisor {
            // A weak handle: the task must not keep the hub (and its queue) alive.
            hub: Arc::downgrade(&hub.0),
            nodes,
            prefix: prefix.to_owned(),
            shutdown: hub.0.shutdown.clone(),
        };
        let span = info_span!("live", %prefix);
        tokio::spawn(supervisor.run(first).instrument(span));
        hub
    }

    /// Registers a wait for the verdict on `event_id` of one conversation of
    /// one bot (a verdict on the same id elsewhere never resolves it), to be published with the
    /// returned waiter's [`VerdictWaiter::queue`] as its `reply_to`: the
    /// worker then sends the verdict straight to this instance's queue, with
    /// no binding (unlike [`LiveHub::subscribe`]). While the hub is
    /// reconnecting the queue named may be gone; the reply is then lost and
    /// the caller reads the event log when its wait ends.
    pub fn expect_verdict(
        &self,
        bot_id: &str,
        conversation_id: &str,
        event_id: &ScopedEventId,
    ) -> VerdictWaiter {
        let queue = self.0.reply_queue.lock().unwrap_or_else(PoisonError::into_inner).clone();
        // No session yet: no reply can come; the caller reads the event log.
        let queue = Some(queue).filter(|q| !q.is_empty());
        let (sender, receiver) = oneshot::channel();
        let number = self.0.next_waiter.fetch_add(1, Ordering::Relaxed);
        let key: WaitKey = (bot_id.to_owned(), conversation_id.to_owned(), event_id.clone());
        let mut waiters = self.0.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        waiters.entry(key.clone()).or_default().push((number, sender));
        VerdictWaiter { hub: self.clone(), key, number, queue, receiver }
    }

    /// Subscribes to one conversation's updates; returns once the binding is
    /// in place on a working connection (see the module docs), waiting up to
    /// 2 s for the supervisor if there is none.
    ///
    /// # Errors
    ///
    /// No connection within that time, or the broker refused the binding.
    pub async fn subscribe(&self, bot_id: &str, conversation_id: &str) -> anyhow::Result<Subscription> {
        let key: Key = (bot_id.to_owned(), conversation_id.to_owned());
        let deadline = Instant::now() + SUBSCRIBE_WAIT;
        let mut installed = self.0.installed.subscribe();
        loop {
            installed.borrow_and_update();
            let guard = self.0.bindings.read().await;
            if let Some(session) = guard.as_ref().filter(|s| s.usable()) {
                let gate = self.0.gate(&key);
                let registered = {
                    let _gate = gate.lock().await;
                    self.register(key.clone(), session).await
                };
                self.0.ungate(&key, gate);
                return registered;
            }
            drop(guard);
            // Woken when the supervisor installs the next session.
            match tokio::time::timeout_at(deadline, installed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => anyhow::bail!("no live broker connection within {SUBSCRIBE_WAIT:?}"),
            }
        }
    }

    /// Counts one more subscriber of `key` and binds it if it is the first;
    /// the caller holds the bindings lock (shared) and the conversation's gate.
    async fn register(&self, key: Key, session: &LiveSession) -> anyhow::Result<Subscription> {
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
            let (bot, conversation) = (&subscription.key.0, &subscription.key.1);
            session.bind(bot, conversation, true).await.context("binding a live conversation")?;
        }
        Ok(subscription)
    }

    async fn release(&self, key: Key) {
        let session = self.0.bindings.read().await;
        let gate = self.0.gate(&key);
        let guard = gate.lock().await;
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
        // On a lost session there is nothing to unbind: its queue goes with
        // the connection, and the next one binds only what is subscribed then.
        if last
            && let Some(session) = session.as_ref().filter(|s| s.usable())
            && let Err(error) = session.bind(&key.0, &key.1, false).await
        {
            warn!(error = format!("{error:#}"), "unbinding a live conversation failed");
        }
        drop(guard);
        self.0.ungate(&key, gate);
    }
}

/// The live exchange of `prefix`, if AMQP can name it (at most 255 bytes).
fn exchange_of(prefix: &str) -> anyhow::Result<String> {
    let exchange = live_exchange(prefix);
    anyhow::ensure!(exchange.len() <= 255, "prefix too long for the live exchange's name");
    Ok(exchange)
}

impl Hub {
    /// The lock of `key`'s binds and unbinds.
    fn gate(&self, key: &Key) -> Arc<tokio::sync::Mutex<()>> {
        self.gates.lock().unwrap_or_else(PoisonError::into_inner).entry(key.clone()).or_default().clone()
    }

    /// Gives `gate` back, forgetting it if nobody else holds or awaits it.
    fn ungate(&self, key: &Key, gate: Arc<tokio::sync::Mutex<()>>) {
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        drop(gate);
        // Only the map's own reference left: new users need this lock to get one.
        if gates.get(key).is_some_and(|g| Arc::strong_count(g) == 1) {
            gates.remove(key);
        }
    }

    /// Binds every subscribed conversation on `session`, makes it the one
    /// binds go to, then tells every subscriber to resync. Returns how many
    /// conversations it bound.
    async fn install(&self, session: &Arc<LiveSession>) -> anyhow::Result<usize> {
        let mut current = self.bindings.write().await;
        let keys: Vec<Key> =
            self.subscribers.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        for key in &keys {
            session.bind(&key.0, &key.1, true).await.context("re-binding a live conversation")?;
        }
        *current = Some(session.clone());
        self.connected.store(true, Ordering::Release);
        *self.reply_queue.lock().unwrap_or_else(PoisonError::into_inner) = session.queue_name().to_owned();
        self.installed.send_replace(session.generation());
        // After binding: anything committed before now is in the database.
        let map = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in map.values() {
            let _ = entry.sender.send(LiveSignal::Resync);
        }
        Ok(keys.len())
    }

    /// Takes one message from the live queue (decoded by
    /// [`LiveMessage::decode`]): news goes to the streams, verdicts to the
    /// requests waiting for them; an undecodable one is counted and dropped.
    fn receive(&self, message: Result<LiveMessage, serde_json::Error>) {
        match message {
            Ok(LiveMessage::News(updates)) => self.deliver_news(updates),
            Ok(LiveMessage::Verdicts(updates)) => self.resolve_verdicts(&updates),
            Err(error) => {
                counter!("escalations_ingress_live_messages_total", "outcome" => "undecodable").increment(1);
                warn!(%error, "undecodable live message dropped");
            }
        }
    }

    /// Hands a committed batch's updates to their conversations' subscribers, if any.
    fn deliver_news(&self, updates: Vec<LiveUpdate>) {
        let map = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        for update in updates {
            // The routing key is a hash, so the ids in the body decide.
            let key = (update.bot_id.as_str().to_owned(), update.conversation_id.as_str().to_owned());
            if let Some(entry) = map.get(&key) {
                // No receiver left is fine: the last one is being released.
                let _ = entry.sender.send(LiveSignal::Update(Arc::new(update)));
                counter!("escalations_ingress_live_messages_total", "outcome" => "delivered").increment(1);
            }
        }
    }

    /// Resolves the waiters of this instance whose verdicts `updates` carry
    /// (streams get the same batch as news, through their bindings).
    fn resolve_verdicts(&self, updates: &[LiveUpdate]) {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        for update in updates {
            let (bot, conversation) = (update.bot_id.as_str(), update.conversation_id.as_str());
            for verdict in &update.verdicts {
                let id = ScopedEventId(verdict.space, verdict.event_id.clone());
                let key = (bot.to_owned(), conversation.to_owned(), id);
                for (_, waiter) in waiters.remove(&key).unwrap_or_default() {
                    let _ = waiter.send((verdict.verdict, update.phase));
                    counter!("escalations_ingress_live_messages_total", "outcome" => "verdict").increment(1);
                }
            }
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shutdown.cancel();
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
