//! Helpers shared by the integration tests. Every test works on its own
//! `test-{uuid}` topology against the real broker and deletes it afterwards.

use broker::{OutboundMessage, Topology, shard_for};
use chrono::Utc;
use futures::StreamExt;
use lapin::{
    Channel, Connection, ConnectionProperties, ErrorKind,
    message::{BasicGetMessage, Delivery},
    options::{BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, QueueDeclareOptions},
    types::FieldTable,
};
use std::{future::Future, time::Duration};

/// Logs go to the test output; `RUST_LOG=broker=debug` shows state changes.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn unique_topology(shards: u16, delivery_limit: u32) -> Topology {
    init_tracing();
    Topology::new(format!("test-{}", uuid::Uuid::new_v4()), shards, delivery_limit)
}

/// A plain lapin connection for inspecting the broker behind the publisher.
pub async fn raw() -> (Connection, Channel) {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ must run at AMQP_URL (rabbitmq-server -detached)");
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

/// Run `body`, then delete `topology` whether or not `body` panicked.
pub async fn with_cleanup<Fut>(topology: &Topology, body: Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(body).await;
    let (connection, channel) = raw().await;
    topology.delete(&channel).await.expect("delete topology");
    let _ = connection.close(200, "OK".into()).await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

pub fn message(topology: &Topology, bot: &str, conversation: &str, n: usize) -> OutboundMessage {
    OutboundMessage {
        event_id: format!("evt-{conversation}-{n}"),
        bot_id: bot.into(),
        conversation_id: conversation.into(),
        event_type: "message".into(),
        received_at: Utc::now(),
        body: format!(r#"{{"n":{n}}}"#).into_bytes(),
        shard: shard_for(bot, conversation, topology.shards),
        reply_to: None,
    }
}

/// Shard queues have a single active consumer, and RabbitMQ refuses
/// `basic.get` on such quorum queues, so tests read them with a consumer:
/// up to `n` deliveries (auto-ack), giving up after 10 s of silence.
pub async fn consume(channel: &Channel, queue: &str, n: usize) -> Vec<Delivery> {
    let tag = format!("test-{}", uuid::Uuid::new_v4());
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("basic_consume");
    let mut deliveries = Vec::with_capacity(n);
    while deliveries.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
            Ok(Some(delivery)) => deliveries.push(delivery.expect("delivery")),
            _ => break,
        }
    }
    channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await.expect("basic_cancel");
    deliveries
}

/// Ready messages in `queue` (passive declare, so it also asserts existence).
pub async fn message_count(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::default().passive(), FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("{queue} must exist: {e}"))
        .message_count()
}

/// `basic.get`: only for queues without single active consumer (the dead-letter queue).
pub async fn get(channel: &Channel, queue: &str) -> Option<BasicGetMessage> {
    channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic_get")
}

/// Poll `queue` until a message shows up (dead-lettering is asynchronous).
pub async fn get_eventually(channel: &Channel, queue: &str) -> Option<BasicGetMessage> {
    for _ in 0..50 {
        if let Some(message) = get(channel, queue).await {
            return Some(message);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The AMQP reply code of a channel error (e.g. 404, 406), if it is one.
pub fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

pub fn header(delivery: &Delivery, key: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(key)? {
        lapin::types::AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into()),
        _ => None,
    }
}
