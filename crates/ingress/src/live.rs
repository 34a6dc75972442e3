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
//! serves again (`ingress_live_reconnects_total`). Live messages published in
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use broker::live_exchange;
use domain::live::LiveUpdate;
use domain::{Phase, Verdict};
use lapin::types::ShortString;
use metrics::counter;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use self::session::{Session, Supervisor};

/// Messages a slow subscriber may fall behind by before it must catch up
/// from the database (it sees `Lagged`).
const CAPACITY: usize = 256;
/// How long [`LiveHub::subscribe`] waits for a connection before failing.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

type Key = (String, String);

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
    exchange: ShortString,
    subscribers: Mutex<HashMap<Key, Entry>>,
    /// The session binds go to. The lock also serializes bind, unbind and
    /// re-binding, so an unbind for a conversation whose last stream closed can
    /// never overtake the bind of its next one, and the subscriber map cannot
    /// change while a new session binds it.
    bindings: tokio::sync::Mutex<Arc<Session>>,
    /// The generation of the installed session, for subscribers waiting for one.
    installed: watch::Sender<u64>,
    /// Cancelled when the last handle goes: the supervisor closes and ends.
    shutdown: CancellationToken,
    /// The installed session's queue: the `reply_to` of commands whose
    /// verdict someone here waits for.
    reply_queue: Mutex<String>,
    /// Those waiters, by event id (several requests may wait for one event),
    /// each with its number; the worker's reply resolves them.
    waiters: Mutex<HashMap<String, Vec<Waiting>>>,
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
    /// Connects to `url`, declares the live exchange of `prefix` and this
    /// instance's queue, and starts the supervisor task that consumes it and
    /// reconnects when the connection is lost.
    ///
    /// # Errors
    ///
    /// Any refusal of the broker, with what was being done.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<LiveHub> {
        let exchange =
            ShortString::try_new(live_exchange(prefix)).map_err(|_| anyhow::anyhow!("prefix too long"))?;
        let (session, consumer) = Session::open(url, prefix, 1).await?;
        let hub = LiveHub(Arc::new(Hub {
            exchange,
            subscribers: Mutex::new(HashMap::new()),
            bindings: tokio::sync::Mutex::new(session.clone()),
            installed: watch::Sender::new(session.generation),
            shutdown: CancellationToken::new(),
            reply_queue: Mutex::new(session.queue_name().to_owned()),
            waiters: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(0),
        }));
        let supervisor = Supervisor {
            // A weak handle: the task must not keep the hub (and its queue) alive.
            hub: Arc::downgrade(&hub.0),
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            shutdown: hub.0.shutdown.clone(),
        };
        let span = info_span!("live", %prefix);
        tokio::spawn(supervisor.run(session, consumer).instrument(span));
        Ok(hub)
    }

    /// Registers a wait for `event_id`'s verdict, to be published with the
    /// returned waiter's [`VerdictWaiter::queue`] as its `reply_to`: the
    /// worker then sends the verdict straight to this instance's queue, with
    /// no binding (unlike [`LiveHub::subscribe`]). While the hub is
    /// reconnecting the queue named may be gone; the reply is then lost and
    /// the caller reads the event log when its wait ends.
    pub fn expect_verdict(&self, event_id: &str) -> VerdictWaiter {
        let queue = self.0.reply_queue.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let (sender, receiver) = oneshot::channel();
        let number = self.0.next_waiter.fetch_add(1, Ordering::Relaxed);
        let mut waiters = self.0.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        waiters.entry(event_id.to_owned()).or_default().push((number, sender));
        VerdictWaiter { hub: self.clone(), event_id: event_id.to_owned(), number, queue, receiver }
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
            let session = self.0.bindings.lock().await;
            if session.usable() {
                return self.register(key, &session).await;
            }
            drop(session);
            // Woken when the supervisor installs the next session.
            match tokio::time::timeout_at(deadline, installed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => anyhow::bail!("no live broker connection within {SUBSCRIBE_WAIT:?}"),
            }
        }
    }

    /// Counts one more subscriber of `key` and binds it if it is the first;
    /// the caller holds the bindings lock.
    async fn register(&self, key: Key, session: &Session) -> anyhow::Result<Subscription> {
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
            session.bind(&self.0.exchange, &subscription.key, true).await?;
        }
        Ok(subscription)
    }

    async fn release(&self, key: Key) {
        let session = self.0.bindings.lock().await;
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
            && session.usable()
            && let Err(error) = session.bind(&self.0.exchange, &key, false).await
        {
            warn!(error = format!("{error:#}"), "unbinding a live conversation failed");
        }
    }
}

impl Hub {
    /// Binds every subscribed conversation on `session`, makes it the one
    /// binds go to, then tells every subscriber to resync. Returns how many
    /// conversations it bound.
    async fn install(&self, session: &Arc<Session>) -> anyhow::Result<usize> {
        let mut current = self.bindings.lock().await;
        let keys: Vec<Key> =
            self.subscribers.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        for key in &keys {
            session.bind(&self.exchange, key, true).await.context("re-binding a live conversation")?;
        }
        *current = session.clone();
        *self.reply_queue.lock().unwrap_or_else(PoisonError::into_inner) = session.queue_name().to_owned();
        self.installed.send_replace(session.generation);
        // After binding: anything committed before now is in the database.
        let map = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in map.values() {
            let _ = entry.sender.send(LiveSignal::Resync);
        }
        Ok(keys.len())
    }

    /// Hands one message's updates to their conversations' subscribers, if
    /// any. The body is one conversation's update, or a JSON array of them
    /// (a committed batch published as one message for all its conversations).
    fn dispatch(&self, body: &[u8], reply: bool) {
        let batch = body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'[');
        let decoded = if batch {
            serde_json::from_slice::<Vec<LiveUpdate>>(body)
        } else {
            serde_json::from_slice::<LiveUpdate>(body).map(|update| vec![update])
        };
        let updates = match decoded {
            Ok(updates) => updates,
            Err(error) => {
                counter!("ingress_live_messages_total", "outcome" => "undecodable").increment(1);
                warn!(%error, "undecodable live message dropped");
                return;
            }
        };
        if reply {
            // Verdicts for this instance's waiters, not news for its streams
            // (which get the same batch through their bindings).
            let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            for update in &updates {
                for verdict in &update.verdicts {
                    for (_, waiter) in waiters.remove(verdict.event_id.as_str()).unwrap_or_default() {
                        let _ = waiter.send((verdict.verdict, update.phase));
                        counter!("ingress_live_messages_total", "outcome" => "verdict").increment(1);
                    }
                }
            }
            return;
        }
        let map = self.subscribers.lock().unwrap_or_else(PoisonError::into_inner);
        for update in updates {
            // The routing key is a hash, so the ids in the body decide.
            let key = (update.bot_id.as_str().to_owned(), update.conversation_id.as_str().to_owned());
            if let Some(entry) = map.get(&key) {
                // No receiver left is fine: the last one is being released.
                let _ = entry.sender.send(LiveSignal::Update(Arc::new(update)));
                counter!("ingress_live_messages_total", "outcome" => "delivered").increment(1);
            }
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A wait for one event's verdict; see [`LiveHub::expect_verdict`].
#[derive(Debug)]
pub struct VerdictWaiter {
    hub: LiveHub,
    event_id: String,
    number: u64,
    queue: String,
    receiver: oneshot::Receiver<(Verdict, Phase)>,
}

impl VerdictWaiter {
    /// The queue to name as the command's `reply_to`.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The verdict and the phase after it, if the worker's reply comes within
    /// `wait` (it does not when this instance reconnected meanwhile: the
    /// caller then reads the event log).
    pub async fn wait(mut self, wait: Duration) -> Option<(Verdict, Phase)> {
        tokio::time::timeout(wait, &mut self.receiver).await.ok()?.ok()
    }
}

impl Drop for VerdictWaiter {
    fn drop(&mut self) {
        let mut waiters = self.hub.0.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = waiters.get_mut(&self.event_id) {
            list.retain(|(number, _)| *number != self.number);
            if list.is_empty() {
                waiters.remove(&self.event_id);
            }
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
