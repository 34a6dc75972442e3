//! A confirming publisher that survives broker loss.
//!
//! [`Publisher::connect`] returns at once and never fails: a background task
//! connects, declares the topology, opens confirm-mode channels and rebuilds
//! all of it with exponential backoff whenever it breaks. Meanwhile
//! [`Publisher::publish`] answers [`Error::Unavailable`] immediately,
//! so the ingress can turn broker trouble into fast 503s instead of hanging.
//!
//! A successful `publish` means the broker confirmed the message: it is in a
//! durable quorum queue. Any error means "not known to be stored"; the caller
//! retries, which can duplicate a message (at-least-once delivery).

mod session;

use crate::{
    error::{Error, Result},
    nodes::redact_list,
    shard::shard_for,
    topology::{Topology, name},
};
use chrono::{DateTime, SecondsFormat, Utc};
use domain::Envelope;
use lapin::{
    BasicProperties, Confirmation,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use session::Shared;
use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};
use tokio::task::JoinHandle;
use tracing::warn;

const CONFIRM_SECONDS: &str = "escalations_publish_confirm_seconds";
const NACKS_TOTAL: &str = "escalations_publish_nacks_total";
const RETURNS_TOTAL: &str = "escalations_publish_returns_total";
const FAILURES_TOTAL: &str = "escalations_publish_failures_total";

/// Register descriptions and units of the publisher's metrics with the
/// installed recorder. Optional; call once after installing the exporter.
pub fn describe_metrics() {
    describe_histogram!(
        CONFIRM_SECONDS,
        Unit::Seconds,
        "Time from publish to the broker's confirm (ack, nack or return)."
    );
    describe_counter!(NACKS_TOTAL, "Publishes the broker nacked.");
    describe_counter!(RETURNS_TOTAL, "Publishes returned as unroutable.");
    describe_counter!(
        FAILURES_TOTAL,
        "Publishes that did not succeed, by reason (see broker::Error::reason)."
    );
}

/// How to reach the broker and what to declare there.
#[derive(Clone)]
pub struct PublisherConfig {
    /// AMQP URI, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`, or the
    /// comma-separated URIs of a cluster's nodes (see [`crate::nodes`]). Add
    /// `?heartbeat=10` to detect a silently dead peer faster than the
    /// broker's default of 60 s.
    pub url: String,
    /// Topology declared on every (re)connect.
    pub topology: Topology,
    /// Number of confirm-mode channels; shards are spread over them.
    pub channels: usize,
    /// How long a publish waits for the broker's confirm.
    pub confirm_timeout: Duration,
    /// Upper bound for connecting to one node, and for declaring and
    /// opening channels once connected.
    pub connect_timeout: Duration,
    /// First delay before reconnecting; doubles per failed attempt (each
    /// wait is jittered between half and all of it)...
    pub reconnect_delay_min: Duration,
    /// ...up to this.
    pub reconnect_delay_max: Duration,
}

impl PublisherConfig {
    /// Defaults: 8 channels, 5 s confirm timeout, 10 s connect timeout,
    /// reconnect backoff from 100 ms doubling to 5 s.
    #[must_use]
    pub fn new(url: impl Into<String>, topology: Topology) -> Self {
        Self {
            url: url.into(),
            topology,
            channels: 8,
            confirm_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            reconnect_delay_min: Duration::from_millis(100),
            reconnect_delay_max: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for PublisherConfig {
    // By hand so that the password in the URL never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublisherConfig")
            .field("url", &redact_list(&self.url))
            .field("topology", &self.topology)
            .field("channels", &self.channels)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_delay_min", &self.reconnect_delay_min)
            .field("reconnect_delay_max", &self.reconnect_delay_max)
            .finish()
    }
}

/// One validated event, ready to be published; built from its [`Envelope`]
/// by [`OutboundMessage::of`], the one place that maps an envelope to the
/// broker's message (body, headers, shard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// Becomes the AMQP `message_id`, which consumers use to de-duplicate.
    pub event_id: String,
    /// Header `bot-id`.
    pub bot_id: String,
    /// Header `conversation-id`.
    pub conversation_id: String,
    /// Header `event-type`.
    pub event_type: String,
    /// When the ingress received the event: header `received-at` (RFC 3339)
    /// and the AMQP `timestamp` (whole seconds).
    pub received_at: DateTime<Utc>,
    /// The JSON body, published as is.
    pub body: Vec<u8>,
    /// The AMQP `reply_to`: a queue that wants the worker's verdict on this
    /// event (the publishing ingress instance's live queue), if any.
    pub reply_to: Option<String>,
    /// `shard_for(bot_id, conversation_id, topology.shards)`.
    pub shard: u16,
}

impl OutboundMessage {
    /// The message carrying `envelope` to its conversation's shard among `shards`.
    #[must_use]
    pub fn of(envelope: &Envelope, shards: u16) -> Self {
        let (bot_id, conversation_id) = (envelope.bot_id.as_str(), envelope.conversation_id.as_str());
        Self {
            event_id: envelope.command.event_id.as_str().to_owned(),
            bot_id: bot_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            event_type: envelope.event_type().to_owned(),
            received_at: envelope.received_at,
            body: envelope.to_bytes(),
            shard: shard_for(bot_id, conversation_id, shards),
            reply_to: None,
        }
    }

    /// The same message, asking the worker to send its verdict to the queue `reply_to`.
    #[must_use]
    pub fn replying_to(mut self, reply_to: Option<String>) -> Self {
        self.reply_to = reply_to;
        self
    }
}

/// Publishes [`OutboundMessage`]s with publisher confirms; see the module docs.
///
/// Share it behind an `Arc`. Dropping it stops the background task, but only
/// [`Publisher::shutdown`] waits for in-flight confirms and a clean close.
pub struct Publisher {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("config", &self.shared.config)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Publisher {
    /// Start the publisher. Never fails and never waits: if the broker is
    /// down the publisher starts unavailable and keeps trying to connect.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime (it spawns the supervisor task).
    #[must_use]
    pub fn connect(config: PublisherConfig) -> Self {
        let shared = Arc::new(Shared::new(config));
        let supervisor = tokio::spawn(session::supervise(shared.clone()));
        Self { shared, supervisor: Mutex::new(Some(supervisor)) }
    }

    /// Publish `msg` to its shard queue and wait for the broker's confirm.
    ///
    /// Events of one conversation always use the same channel, so awaiting
    /// each publish before the next keeps them in order in the shard queue.
    /// Many publishes may be in flight at once; none holds a lock while it
    /// waits for its confirm.
    ///
    /// # Errors
    ///
    /// - [`Error::Unavailable`] at once when there is no connection.
    /// - [`Error::Nacked`], [`Error::Returned`] from the broker.
    /// - [`Error::Timeout`] when no confirm arrives in time.
    /// - [`Error::Channel`] when the channel or connection broke; this
    ///   also triggers a reconnect.
    /// - [`Error::InvalidMessage`] for a caller bug (see its docs).
    pub async fn publish(&self, msg: &OutboundMessage) -> Result<(), Error> {
        let outcome = self.try_publish(msg).await;
        if let Err(error) = &outcome {
            counter!(FAILURES_TOTAL, "reason" => error.reason()).increment(1);
        }
        outcome
    }

    /// [`Publisher::publish`] of `envelope`, to its shard of this publisher's
    /// topology, with `reply_to` for a verdict if given.
    ///
    /// # Errors
    ///
    /// As [`Publisher::publish`].
    pub async fn publish_envelope(&self, envelope: &Envelope, reply_to: Option<String>) -> Result<(), Error> {
        let message = OutboundMessage::of(envelope, self.topology().shards).replying_to(reply_to);
        self.publish(&message).await
    }

    async fn try_publish(&self, msg: &OutboundMessage) -> Result<()> {
        let config = &self.shared.config;
        let topology = &config.topology;
        let expected = shard_for(&msg.bot_id, &msg.conversation_id, topology.shards);
        if msg.shard != expected {
            // A wrong shard would silently break per-conversation ordering.
            return Err(Error::InvalidMessage(format!(
                "shard {} is not shard_for(bot, conversation, {}) = {expected}",
                msg.shard, topology.shards
            )));
        }
        let message_id = ShortString::try_new(msg.event_id.clone())
            .map_err(|_| Error::InvalidMessage("event_id is longer than 255 bytes".to_owned()))?;
        let exchange = name(topology.exchange())?;
        let routing_key = name(topology.routing_key(msg.shard))?;

        let Some(session) = self.shared.current() else {
            return Err(Error::Unavailable);
        };
        if session.blocked() {
            return Err(Error::Unavailable);
        }
        if !session.can_publish(msg.shard) {
            self.shared.report_failure(session.generation, &"connection or channel closed");
            return Err(Error::Unavailable);
        }

        let started = Instant::now();
        let published = tokio::time::timeout(
            config.confirm_timeout,
            session.publish(msg.shard, exchange, routing_key, &msg.body, properties(msg, message_id.clone())),
        )
        .await;
        let confirmation = match published {
            Err(_elapsed) => return Err(Error::Timeout),
            Ok(Err(error)) => {
                self.shared.report_failure(session.generation, &error);
                return Err(Error::Channel(error.to_string()));
            }
            Ok(Ok(None)) => return Err(Error::Unavailable),
            Ok(Ok(Some(confirmation))) => confirmation,
        };
        histogram!(CONFIRM_SECONDS).record(started.elapsed().as_secs_f64());

        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            // lapin 4 reports a mandatory return as an ack (or nack) that
            // carries the returned message.
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                counter!(RETURNS_TOTAL).increment(1);
                if returned.delivery.properties.message_id().as_ref() != Some(&message_id) {
                    // lapin attaches a return to whichever confirm it resolves
                    // next, which may be another in-flight publish. Failing
                    // this one is safe (it is retried); the owner of the
                    // returned message may have been acked wrongly.
                    warn!(
                        event_id = %msg.event_id,
                        returned = ?returned.delivery.properties.message_id(),
                        "confirm carried another publish's returned message"
                    );
                }
                Err(Error::Returned {
                    reply_code: returned.reply_code,
                    reply_text: returned.reply_text.to_string(),
                })
            }
            Confirmation::Nack(None) => {
                counter!(NACKS_TOTAL).increment(1);
                Err(Error::Nacked)
            }
            Confirmation::NotRequested => {
                // Cannot happen on a lane after confirm_select; if it does,
                // the lane cannot vouch for anything, so rebuild.
                let reason = "channel is not in confirm mode";
                self.shared.report_failure(session.generation, &reason);
                Err(Error::Channel(reason.to_owned()))
            }
        }
    }

    /// The topology this publisher declares and publishes to (its `shards`
    /// is the count to pass to [`shard_for`]).
    #[must_use]
    pub fn topology(&self) -> &Topology {
        &self.shared.config.topology
    }

    /// Whether publishes can currently succeed (connected, topology declared,
    /// channels open, not blocked by a broker alarm). For `/readyz`.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.shared.current().is_some_and(|s| s.healthy() && !s.blocked())
    }

    /// Wait up to `timeout` for the publisher to become available; returns
    /// whether it did. Useful at start-up and in tests; never required.
    pub async fn wait_until_connected(&self, timeout: Duration) -> bool {
        let mut available = self.shared.subscribe_available();
        matches!(tokio::time::timeout(timeout, available.wait_for(|up| *up)).await, Ok(Ok(_)))
    }

    /// Stop reconnecting, let in-flight publishes receive their confirms
    /// (bounded by the confirm timeout), then close channels and connection.
    /// Publishes started after this began fail with `Unavailable`. Idempotent;
    /// a second concurrent call returns without waiting.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        let supervisor = self.supervisor.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(supervisor) = supervisor
            && let Err(error) = supervisor.await
        {
            warn!(%error, "publisher supervisor task failed");
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // Without this the supervisor would reconnect forever for nobody.
        self.shared.shutdown.cancel();
    }
}

fn properties(msg: &OutboundMessage, message_id: ShortString) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (key, value) in [
        ("bot-id", msg.bot_id.clone()),
        ("conversation-id", msg.conversation_id.clone()),
        ("event-type", msg.event_type.clone()),
        ("received-at", msg.received_at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    ] {
        headers.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
    let properties = BasicProperties::default()
        // 2 = persistent. Quorum queues persist everything anyway; this keeps
        // the message persistent if it is ever dead-lettered elsewhere.
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message_id)
        // AMQP timestamps are whole seconds; pre-1970 cannot happen here.
        .with_timestamp(u64::try_from(msg.received_at.timestamp()).unwrap_or(0))
        .with_headers(headers);
    match msg.reply_to.as_deref().and_then(|queue| ShortString::try_new(queue).ok()) {
        Some(queue) => properties.with_reply_to(queue),
        None => properties,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        use crate::nodes::redact;
        assert_eq!(redact("amqp://guest:secret@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact("amqp://user@host"), "amqp://user:***@host");
        assert_eq!(redact("not a url"), "not a url");
        let config = PublisherConfig::new("amqp://u:pw@h/", Topology::new("p", 1, 1));
        assert!(!format!("{config:?}").contains("pw"));
        let config = PublisherConfig::new("amqp://u:pw@h/,amqp://u:pw2@i/", Topology::new("p", 1, 1));
        assert!(!format!("{config:?}").contains("pw"));
    }

    #[test]
    fn an_envelope_becomes_its_message_on_its_conversations_shard() {
        use domain::{BotId, Command, ConversationId, EventId, Input};
        let envelope = Envelope {
            bot_id: BotId::parse("bot").expect("id"),
            conversation_id: ConversationId::parse("conv-7").expect("id"),
            received_at: DateTime::from_timestamp(1_800_000_000, 0).expect("time"),
            command: Command { event_id: EventId::parse("evt-9").expect("id"), input: Input::VisitorEnd },
        };
        let message = OutboundMessage::of(&envelope, 16);
        assert_eq!(message.event_id, "evt-9");
        assert_eq!((message.bot_id.as_str(), message.conversation_id.as_str()), ("bot", "conv-7"));
        assert_eq!(message.event_type, "visitorEnd");
        assert_eq!(message.received_at, envelope.received_at);
        assert_eq!(message.shard, shard_for("bot", "conv-7", 16));
        assert_eq!(Envelope::from_bytes(&message.body).expect("decodes"), envelope);
        assert_eq!(message.reply_to, None);
        let replying = OutboundMessage::of(&envelope, 16).replying_to(Some("amq.gen-1".into()));
        assert_eq!(replying.reply_to.as_deref(), Some("amq.gen-1"));
    }

    #[test]
    fn properties_carry_ids_headers_and_timestamp() {
        let received_at =
            DateTime::parse_from_rfc3339("2025-01-02T03:04:05.678Z").expect("valid").with_timezone(&Utc);
        let msg = OutboundMessage {
            event_id: "evt-1".into(),
            bot_id: "bot-1".into(),
            conversation_id: "conv-1".into(),
            event_type: "message".into(),
            received_at,
            body: b"{}".to_vec(),
            shard: 0,
            reply_to: None,
        };
        let p = properties(&msg, "evt-1".into());
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(p.content_type().as_ref().map(ShortString::as_str), Some("application/json"));
        assert_eq!(p.message_id().as_ref().map(ShortString::as_str), Some("evt-1"));
        assert_eq!(p.timestamp(), &Some(1_735_787_045));
        let headers = p.headers().as_ref().expect("headers").inner();
        let header = |k: &str| match headers.get(k) {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(header("bot-id"), "bot-1");
        assert_eq!(header("conversation-id"), "conv-1");
        assert_eq!(header("event-type"), "message");
        assert_eq!(header("received-at"), "2025-01-02T03:04:05.678Z");
    }
}
