//! The baseline: the same messages published straight with lapin.

use std::sync::Arc;

use broker::{Topology, shard_for};
use chrono::{SecondsFormat, Utc};
use domain::{AgentAction, BotId, Command, ConversationId, Envelope, EventId, Input};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

use crate::load::{RunResult, drive, text};
use crate::{Args, BOT, amqp_url};

/// The message the ingress would publish for event `i`: same body and headers.
pub(crate) fn raw_message(i: usize, args: &Args, shards: u16) -> (Vec<u8>, BasicProperties, u16) {
    let conversation = format!("conv-{}", i % args.conversations);
    let event_id = uuid::Uuid::now_v7().to_string();
    let envelope = Envelope {
        bot_id: BotId::parse(BOT).expect("id"),
        conversation_id: ConversationId::parse(conversation.clone()).expect("id"),
        received_at: Utc::now(),
        command: Command {
            event_id: EventId::parse(event_id.clone()).expect("id"),
            input: Input::Agent {
                escalation_id: None,
                action: AgentAction::Message { text: text(args) },
                warnings: Vec::new(),
            },
        },
    };
    let mut headers = FieldTable::default();
    for (k, v) in [
        ("bot-id", BOT.to_owned()),
        ("conversation-id", conversation.clone()),
        ("event-type", "message".to_owned()),
        ("received-at", envelope.received_at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    ] {
        headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
    }
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(event_id.into())
        .with_timestamp(envelope.received_at.timestamp() as u64)
        .with_headers(headers);
    (envelope.to_bytes(), properties, shard_for(BOT, &conversation, shards))
}

/// `args.events` messages published with confirms by `args.clients` publishers,
/// one confirm-mode channel each.
pub(crate) async fn run_raw(topology: &Topology, args: Args) -> RunResult {
    let connection =
        Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("connect");
    let mut channels = Vec::new();
    for _ in 0..args.clients {
        let channel = connection.create_channel().await.expect("channel");
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        channels.push(channel);
    }
    let channels = Arc::new(channels);
    let exchange = topology.exchange();
    let shards = topology.shards;
    let keys: Arc<Vec<String>> = Arc::new((0..topology.shards).map(|s| topology.routing_key(s)).collect());
    let result = drive(args.events, args.clients, move |client, i| {
        let channels = channels.clone();
        let keys = keys.clone();
        let exchange = exchange.clone();
        async move {
            let (body, properties, shard) = raw_message(i, &args, shards);
            let options = BasicPublishOptions { mandatory: true, immediate: false };
            let channel = &channels[client];
            let key = keys[usize::from(shard)].clone();
            match channel.basic_publish(exchange.into(), key.into(), options, &body, properties).await {
                Ok(confirm) => matches!(confirm.await, Ok(Confirmation::Ack(None))),
                Err(_) => false,
            }
        }
    })
    .await;
    let _ = connection.close(200, "OK".into()).await;
    result
}

/// Empties every shard queue.
pub(crate) async fn purge(topology: &Topology) {
    let connection =
        Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    for shard in 0..topology.shards {
        channel
            .queue_purge(topology.shard_queue(shard).into(), QueuePurgeOptions::default())
            .await
            .expect("purge");
    }
    let _ = connection.close(200, "OK".into()).await;
}

/// Deletes the topology.
pub(crate) async fn delete(topology: &Topology) {
    let connection =
        Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    topology.delete(&channel).await.expect("delete topology");
    let _ = connection.close(200, "OK".into()).await;
}
