//! A consumer of one shard queue, yielding typed deliveries.
//!
//! [`ShardConsumer::start`] opens its own channel on the caller's connection,
//! sets `basic.qos` (the prefetch bounds the unacknowledged deliveries, hence
//! the largest batch the worker can build) and starts `basic.consume` with
//! manual acks. Shard queues are quorum queues with `x-single-active-consumer`:
//! a second consumer on the same shard (another worker taking over) stays idle
//! until this one goes away, which is the broker-side fence that keeps two
//! workers from interleaving one shard's messages.
//!
//! Deliveries come out in broker order through [`ShardConsumer::next`];
//! [`ShardConsumer::try_next`] returns one that is already buffered without
//! waiting, so a caller can turn "everything that arrived meanwhile" into one
//! batch. Settling is by delivery tag: [`ShardConsumer::ack_through`] acks
//! every outstanding delivery up to a tag (`multiple = true`), so one ack
//! settles a whole committed batch.
//!
//! Stopping is [`ShardConsumer::close`], which closes the channel, and so
//! is dropping a consumer that was not cancelled (an aborted task, an early
//! return): see the `Drop` impl. Either way every
//! delivery not yet settled goes back to the queue, ahead of everything else,
//! and only then does the next waiting consumer become active — so it gets
//! them first, in order. A plain `basic.cancel` is deliberately not offered:
//! with a consumer already waiting, RabbitMQ activates that one at the cancel
//! and feeds it the following messages while this consumer still holds its
//! unacked ones, which return later, out of order (observed with quorum
//! queues on RabbitMQ 3.10; deliveries racing the cancel are also dropped by
//! lapin, so "drain after cancel" is not reliable either).

use domain::Envelope;
use std::fmt;

use futures::{FutureExt, StreamExt};
use lapin::{
    Channel, Connection, Consumer,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions},
    types::FieldTable,
};

use crate::{
    error::{Error, Result},
    topology::{Topology, name},
};

/// One message of a shard queue, as the worker needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The channel's delivery tag: what [`ShardConsumer::ack_through`],
    /// [`ShardConsumer::reject`] and [`ShardConsumer::requeue`] take.
    pub tag: u64,
    /// The message body (an `Envelope` as JSON, for the relay).
    pub body: Vec<u8>,
    /// The AMQP `message_id` (the event id, for the relay), if set.
    pub message_id: Option<String>,
    /// Whether the broker delivered this message before (to this or another
    /// consumer) without it being acked: processing may have happened already.
    pub redelivered: bool,
    /// The AMQP `reply_to`: where the publisher wants the verdict, if anywhere.
    pub reply_to: Option<String>,
    /// Every property as published (headers included), kept so that a dead
    /// letter carries what the publisher wrote.
    pub properties: lapin::BasicProperties,
}

impl Delivery {
    /// The [`Envelope`] the body carries (the counterpart of
    /// [`crate::OutboundMessage::of`]); an error is a poison message, for the
    /// caller to dead-letter alone.
    ///
    /// # Errors
    ///
    /// The body is not an envelope's JSON.
    pub fn envelope(&self) -> Result<Envelope, serde_json::Error> {
        Envelope::from_bytes(&self.body)
    }

    fn from_lapin(delivery: lapin::message::Delivery) -> Self {
        Self {
            tag: delivery.delivery_tag,
            message_id: delivery.properties.message_id().as_ref().map(|id| id.as_str().to_owned()),
            redelivered: delivery.redelivered,
            reply_to: delivery.properties.reply_to().as_ref().map(|queue| queue.as_str().to_owned()),
            properties: delivery.properties,
            body: delivery.data,
        }
    }
}

/// A manual-ack consumer of one shard queue on its own channel; see the
/// module docs.
pub struct ShardConsumer {
    shard: u16,
    queue: String,
    tag: String,
    channel: Channel,
    consumer: Consumer,
    /// Set once the stream ended: lapin's stream yields its end only once and
    /// would wait forever if polled again.
    ended: bool,
}

impl fmt::Debug for ShardConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardConsumer")
            .field("shard", &self.shard)
            .field("queue", &self.queue)
            .field("tag", &self.tag)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl ShardConsumer {
    /// Open a channel on `connection`, set the prefetch and start consuming
    /// shard `shard` of `topology` under `consumer_tag`.
    ///
    /// The queue must exist (declare the topology first). If another consumer
    /// is active on it, this one is registered but receives nothing until that
    /// one is cancelled or its connection closes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an overlong queue name or tag, and
    /// [`Error::Amqp`] if the channel cannot be opened or the broker refuses
    /// the qos or consume (e.g. 404 when the queue does not exist).
    pub async fn start(
        connection: &Connection,
        topology: &Topology,
        shard: u16,
        prefetch: u16,
        consumer_tag: &str,
    ) -> Result<Self> {
        let queue = topology.shard_queue(shard);
        let queue_name = name(queue.clone())?;
        let tag_name = name(consumer_tag.to_owned())?;
        let channel =
            connection.create_channel().await.map_err(Error::amqp(format!("open channel for {queue}")))?;
        // 0 would mean "unlimited" in AMQP; a consumer always wants a bound.
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(Error::amqp(format!("basic.qos on {queue}")))?;
        let consumer = channel
            .basic_consume(queue_name, tag_name, BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(Error::amqp(format!("basic.consume on {queue}")))?;
        Ok(Self { shard, queue, tag: consumer_tag.to_owned(), channel, consumer, ended: false })
    }

    /// The shard this consumer reads.
    #[must_use]
    pub fn shard(&self) -> u16 {
        self.shard
    }

    /// The queue this consumer reads.
    #[must_use]
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next delivery, waiting for one. `None` once the consumer ended:
    /// the broker cancelled it (e.g. the queue was deleted) or the channel
    /// closed (an error comes first in that case). Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        if self.ended {
            return None;
        }
        let item = self.consumer.next().await;
        self.map_item(item)
    }

    /// A delivery that has already arrived, without waiting; `None` if there
    /// is none right now (or the consumer ended).
    pub fn try_next(&mut self) -> Option<Result<Delivery>> {
        if self.ended {
            return None;
        }
        let item = self.consumer.next().now_or_never()?;
        self.map_item(item)
    }

    /// Whether the stream has ended (see [`ShardConsumer::next`]).
    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    fn map_item(
        &mut self,
        item: Option<lapin::Result<lapin::message::Delivery>>,
    ) -> Option<Result<Delivery>> {
        match item {
            Some(Ok(delivery)) => Some(Ok(Delivery::from_lapin(delivery))),
            Some(Err(source)) => {
                Some(Err(Error::Amqp { context: format!("consuming {}", self.queue), source }))
            }
            None => {
                self.ended = true;
                None
            }
        }
    }

    /// Ack every outstanding delivery up to and including `tag`
    /// (`basic.ack` with `multiple = true`). Deliveries already rejected or
    /// requeued are not outstanding and are unaffected.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] if the channel is closed: the deliveries were not acked
    /// and will be redelivered.
    pub async fn ack_through(&self, tag: u64) -> Result<()> {
        self.channel
            .basic_ack(tag, BasicAckOptions { multiple: true })
            .await
            .map_err(Error::amqp(format!("basic.ack on {}", self.queue)))
    }

    /// Ack one delivery alone (`multiple = false`), e.g. once its copy is in
    /// the dead-letter queue.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] if the channel is closed (the message will be redelivered).
    pub async fn ack(&self, tag: u64) -> Result<()> {
        self.channel
            .basic_ack(tag, BasicAckOptions { multiple: false })
            .await
            .map_err(Error::amqp(format!("basic.ack on {}", self.queue)))
    }

    /// Reject one delivery without requeueing it: the queue dead-letters it to
    /// the topology's dead-letter exchange. The worker does not use this for
    /// poison (it publishes the dead letter itself, see [`crate::dead`]).
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] if the channel is closed (the message will be redelivered).
    pub async fn reject(&self, tag: u64) -> Result<()> {
        self.channel
            .basic_reject(tag, BasicRejectOptions { requeue: false })
            .await
            .map_err(Error::amqp(format!("basic.reject on {}", self.queue)))
    }

    /// Give one delivery back to the queue (`basic.nack`, `requeue = true`).
    /// A quorum queue counts this towards its delivery limit.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] if the channel is closed (the message goes back anyway).
    pub async fn requeue(&self, tag: u64) -> Result<()> {
        self.channel
            .basic_nack(tag, BasicNackOptions { multiple: false, requeue: true })
            .await
            .map_err(Error::amqp(format!("basic.nack on {}", self.queue)))
    }

    /// Stop consuming by closing the channel. Every delivery not yet acked or
    /// rejected goes back to the queue, ahead of the rest and in order, before
    /// the next consumer (if one waits) becomes active. A quorum queue counts
    /// each returned delivery towards its delivery limit, so settle what you
    /// can before.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] if closing failed; the broker returns the deliveries
    /// when the channel or connection goes away in any case.
    pub async fn close(self) -> Result<()> {
        // `self` is dropped afterwards; `Drop` finds the channel closed.
        if !self.channel.status().connected() {
            return Ok(());
        }
        self.channel
            .close(200, "OK".into())
            .await
            .map_err(Error::amqp(format!("close channel of {}", self.queue)))
    }
}

/// A consumer dropped without [`ShardConsumer::close`] (its task aborted,
/// an early return) closes its channel too, never leaving a bare
/// `basic.cancel` behind: lapin's own consumer drop sends `basic.cancel`
/// while the channel is open, which is the reordering the module docs
/// describe. Polling `channel.close` once marks the channel closing and
/// queues the close before the consumer field is dropped; lapin then skips
/// the cancel of a consumer whose channel is not connected.
impl Drop for ShardConsumer {
    fn drop(&mut self) {
        if self.channel.status().connected() {
            let closing = self.channel.close(200, "OK".into()).now_or_never();
            tracing::debug!(queue = %self.queue, done = closing.is_some(), "shard consumer dropped; channel closed");
        }
    }
}
