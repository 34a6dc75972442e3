//! Recreating queues declared by an earlier version with the current
//! arguments, messages and their order kept (`escalations topology migrate`).
//!
//! Earlier versions declared the shard queues with `x-delivery-limit` 5 (so
//! the broker dead-lettered valid events after a few worker kills) and the
//! dead-letter queue without a limit (dropped after 20 returns on RabbitMQ
//! 4.x). An argument cannot be changed in place: RabbitMQ refuses a
//! redeclare with other arguments, and a `delivery-limit` policy cannot
//! raise a limit set by an argument (both 3.10 and 4.x take the lower of the
//! two). So each such queue is recreated:
//!
//! 1. its messages move, in order, to a holding queue `{queue}.migrating`;
//! 2. it is deleted and declared with the current arguments;
//! 3. the messages move back, in order, and the holding queue is deleted.
//!
//! Every move publishes a copy (confirmed) before it acks the original, so a
//! crash duplicates at worst (the worker dedupes events by id) and never
//! loses. A run that was interrupted is resumed by running again: a holding
//! queue that still exists is emptied back into its queue first.
//!
//! The migration is offline: no worker may consume (a queue with consumers
//! is refused) and no ingress may publish while it runs, or events published
//! meanwhile would pass the ones being moved.

use std::time::Duration;

use futures::StreamExt;
use lapin::{
    Channel, Confirmation, Connection,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};

use crate::error::{Error, Result};
use crate::topology::{Topology, name};

/// How long a move waits for the next message of a queue that still
/// reports messages before giving up.
const QUIET: Duration = Duration::from_secs(10);

/// What the migration did to one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMigration {
    /// The queue.
    pub queue: String,
    /// Whether it was recreated (`false`: it already had the current arguments).
    pub recreated: bool,
    /// Messages moved back into it (from this run or an interrupted one).
    pub messages: u64,
}

/// Recreates every queue of `topology` whose arguments are not the current
/// ones, then declares the whole topology (bindings included).
///
/// # Errors
///
/// [`Error::Amqp`] if a step fails (run again to resume), and
/// [`Error::Precondition`] if a queue still has consumers (stop the workers)
/// or stops delivering.
pub async fn migrate(topology: &Topology, connection: &Connection) -> Result<Vec<QueueMigration>> {
    let mut queues: Vec<(String, FieldTable)> = (0..topology.shards)
        .map(|shard| (topology.shard_queue(shard), topology.shard_queue_arguments()))
        .collect();
    queues.push((topology.dead_letter_queue(), topology.dead_letter_queue_arguments()));
    let mut report = Vec::with_capacity(queues.len());
    for (queue, arguments) in queues {
        report.push(migrate_queue(connection, &queue, arguments).await?);
    }
    let channel = open(connection).await?;
    topology.declare(&channel).await?;
    let _ = channel.close(200, "OK".into()).await;
    Ok(report)
}

async fn migrate_queue(
    connection: &Connection,
    queue: &str,
    arguments: FieldTable,
) -> Result<QueueMigration> {
    let holding = format!("{queue}.migrating");
    // A refused declare closes its channel, hence a channel of its own.
    let probe = open(connection).await?;
    let declared =
        probe.queue_declare(name(queue.to_owned())?, QueueDeclareOptions::durable(), arguments.clone()).await;
    let recreated = declared.is_err();
    if declared.is_ok() {
        let _ = probe.close(200, "OK".into()).await;
    }
    if recreated {
        let consumers = passive(connection, queue).await?.map_or(0, |(_, consumers)| consumers);
        if consumers > 0 {
            return Err(Error::Precondition(format!(
                "{queue} has {consumers} consumer(s): stop every worker before migrating"
            )));
        }
        let channel = open(connection).await?;
        channel
            .queue_declare(name(holding.clone())?, QueueDeclareOptions::durable(), holding_arguments())
            .await
            .map_err(Error::amqp(format!("declare queue {holding}")))?;
        let moved = move_all(connection, queue, &holding).await?;
        tracing::info!(queue, moved, "moved to the holding queue");
        delete_empty(connection, queue).await?;
        channel
            .queue_declare(name(queue.to_owned())?, QueueDeclareOptions::durable(), arguments)
            .await
            .map_err(Error::amqp(format!("declare queue {queue} anew")))?;
        let _ = channel.close(200, "OK".into()).await;
    }
    let mut messages = 0;
    if passive(connection, &holding).await?.is_some() {
        messages = move_all(connection, &holding, queue).await?;
        delete_empty(connection, &holding).await?;
    }
    if recreated || messages > 0 {
        tracing::info!(queue, messages, "queue recreated with the current arguments");
    }
    Ok(QueueMigration { queue: queue.to_owned(), recreated, messages })
}

/// A plain durable quorum queue: no single active consumer, and the limit
/// no move reaches (the broker's default replica count: it lives only for
/// the migration).
fn holding_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(crate::BROKER_DELIVERY_LIMIT));
    args
}

/// Moves every message of `from` to the end of `to`, in order. Returns how many.
async fn move_all(connection: &Connection, from: &str, to: &str) -> Result<u64> {
    let mut moved = 0;
    loop {
        // Nobody consumes `from` (checked, or it is our holding queue), so
        // every message it has is ready and counted.
        let ready = passive(connection, from).await?.map_or(0, |(ready, _)| ready);
        if ready == 0 {
            return Ok(moved);
        }
        moved += move_some(connection, from, to, ready).await?;
    }
}

/// Moves the first `count` messages of `from` to `to`: each one is published
/// (mandatory, confirmed) before it is acked. A message delivered beyond
/// `count` goes back to the head of `from` when the reader's channel closes.
async fn move_some(connection: &Connection, from: &str, to: &str, count: u32) -> Result<u64> {
    let reader = open(connection).await?;
    let writer = open(connection).await?;
    writer
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(Error::amqp(format!("confirm.select for {to}")))?;
    reader.basic_qos(64, BasicQosOptions::default()).await.map_err(Error::amqp("basic.qos"))?;
    let mut consumer = reader
        .basic_consume(
            name(from.to_owned())?,
            "escalations-migrate".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(Error::amqp(format!("basic.consume on {from}")))?;
    for _ in 0..count {
        let next = tokio::time::timeout(QUIET, consumer.next()).await.map_err(|_| {
            Error::Precondition(format!("{from} reported messages but delivered none for {QUIET:?}"))
        })?;
        let Some(delivery) = next else {
            return Err(Error::Precondition(format!("the consumer of {from} was cancelled")));
        };
        let delivery = delivery.map_err(Error::amqp(format!("consuming {from}")))?;
        let confirm = writer
            .basic_publish(
                "".into(),
                name(to.to_owned())?,
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &delivery.data,
                delivery.properties.clone(),
            )
            .await
            .map_err(Error::amqp(format!("publish to {to}")))?
            .await
            .map_err(Error::amqp(format!("confirm of {to}")))?;
        if !matches!(confirm, Confirmation::Ack(None)) {
            return Err(Error::Precondition(format!("{to} did not take a message ({confirm:?})")));
        }
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(Error::amqp(format!("ack on {from}")))?;
    }
    // Closing (not cancelling) returns anything prefetched beyond `count`
    // to the head of the queue, in order.
    let _ = reader.close(200, "OK".into()).await;
    drop(consumer);
    let _ = writer.close(200, "OK".into()).await;
    Ok(u64::from(count))
}

/// Deletes `queue` after checking that it is empty and unused. Quorum queues
/// refuse `if-empty` deletes, so the check is a passive declare just before;
/// the migration being offline, nothing can arrive in between.
async fn delete_empty(connection: &Connection, queue: &str) -> Result<()> {
    // A quorum queue reports a closed consumer gone a moment later (its
    // removal goes through the queue's log): wait for that, briefly.
    let mut state = passive(connection, queue).await?;
    for _ in 0..50 {
        match state {
            Some((_, consumers)) if consumers > 0 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                state = passive(connection, queue).await?;
            }
            _ => break,
        }
    }
    if let Some((ready, consumers)) = state
        && (ready > 0 || consumers > 0)
    {
        return Err(Error::Precondition(format!(
            "{queue} still has {ready} message(s) and {consumers} consumer(s): is an ingress or worker \
             running? Stop them all and run the migration again"
        )));
    }
    let channel = open(connection).await?;
    let deleted = channel
        .queue_delete(name(queue.to_owned())?, QueueDeleteOptions::default())
        .await
        .map_err(Error::amqp(format!("delete queue {queue}")))?;
    let _ = channel.close(200, "OK".into()).await;
    if deleted > 0 {
        tracing::error!(
            queue,
            deleted,
            "messages arrived during the migration and were deleted with the queue"
        );
    }
    Ok(())
}

/// `(messages ready, consumers)` of `queue`, or `None` if it does not exist.
async fn passive(connection: &Connection, queue: &str) -> Result<Option<(u32, u32)>> {
    // A passive declare of a missing queue closes its channel.
    let channel = open(connection).await?;
    let declared = channel
        .queue_declare(
            name(queue.to_owned())?,
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    match declared {
        Ok(q) => {
            let _ = channel.close(200, "OK".into()).await;
            Ok(Some((q.message_count(), q.consumer_count())))
        }
        Err(error) if reply_code(&error) == Some(404) => Ok(None),
        Err(error) => Err(Error::Amqp { context: format!("passive declare of {queue}"), source: error }),
    }
}

fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

async fn open(connection: &Connection) -> Result<Channel> {
    connection.create_channel().await.map_err(Error::amqp("open channel"))
}
