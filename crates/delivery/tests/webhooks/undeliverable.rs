//! A `widgetEscalate` out of budget tells the state machine: an
//! `escalateUndeliverable` command is published to the conversation's shard
//! (real RabbitMQ) and only then is the delivery dead; until the broker
//! confirms, the delivery is not sent again and the conversation waits.

use std::sync::Arc;
use std::time::Duration;

use broker::{Publisher, PublisherConfig, Topology, shard_for};
use domain::{Envelope, Input};
use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

use crate::support::{
    Receiver, Reply, amqp_url, bot, escalate, eventually, fast_config, insert, key, message, secret,
    settings, start, statuses, with_store,
};

#[tokio::test]
async fn dead_escalate_is_dead_only_after_the_notice_is_confirmed() {
    with_store(|store| async move {
        let receiver = Receiver::start().await;
        // The escalation fails; the next webhook would go through.
        receiver.respond(|_, _, body| {
            let json: serde_json::Value = serde_json::from_slice(body).expect("json");
            Reply::status(if json["data"]["eventType"] == "widgetEscalate" { 500 } else { 200 })
        });
        let mut settings = settings(vec![bot("esc", &receiver.url(), &[secret(1)])]);
        settings.defaults.escalate_budget_secs = 1;
        let conv = key("esc", "conv-1");
        insert(&store, &[(conv.clone(), escalate(1, "esc-9")), (conv.clone(), message(2, "after"))]).await;

        // No broker: the budget runs out, but the row stays pending with its
        // reason, is not sent again, and blocks the conversation.
        let running = start(&settings, &store, None, fast_config());
        let id = store.webhook_deliveries_of(&conv).await.expect("rows")[0].id;
        eventually(Duration::from_secs(10), "given up", || async {
            store.delivery(id).await.expect("read").expect("row").reason.is_some()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        running.stop().await;
        let record = store.delivery(id).await.expect("read").expect("row");
        assert_eq!(record.status, "pending", "not dead before the notice is confirmed");
        assert_eq!(statuses(&store, &conv).await, ["pending", "pending"]);
        let attempts_before = receiver.count();
        assert!(receiver.acked().is_empty());

        // With the broker: the notice is published, then the row is dead and
        // the conversation moves on.
        let topology = Topology::new(format!("test-delivery-{}", uuid::Uuid::new_v4().simple()), 2, 5);
        let publisher = Arc::new(Publisher::connect(PublisherConfig::new(amqp_url(), topology.clone())));
        assert!(publisher.wait_until_connected(Duration::from_secs(15)).await, "broker at AMQP_URL");
        let running = start(&settings, &store, Some(publisher.clone()), fast_config());
        eventually(Duration::from_secs(10), "dead and next delivered", || async {
            statuses(&store, &conv).await == ["dead", "delivered"]
        })
        .await;
        running.stop().await;
        publisher.shutdown().await;
        assert_eq!(
            receiver.count(),
            attempts_before + 1,
            "only sequence 2 was sent, the escalate was not retried"
        );

        let connection =
            Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("amqp");
        let channel = connection.create_channel().await.expect("channel");
        let queue = topology.shard_queue(shard_for("esc", "conv-1", topology.shards));
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "test".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a message in the shard queue")
            .expect("stream")
            .expect("delivery");
        channel.basic_cancel("test".into(), BasicCancelOptions::default()).await.expect("cancel");
        topology.delete(&channel).await.expect("delete topology");
        let _ = connection.close(200, "OK".into()).await;

        let envelope = Envelope::from_bytes(&delivery.data).expect("envelope");
        assert_eq!(envelope.command.event_id.as_str(), format!("undeliverable:{id}"));
        assert_eq!(envelope.bot_id.as_str(), "esc");
        assert_eq!(envelope.conversation_id.as_str(), "conv-1");
        match envelope.command.input {
            Input::EscalateUndeliverable { escalation_id } => assert_eq!(escalation_id.as_str(), "esc-9"),
            other => panic!("unexpected input {other:?}"),
        }
    })
    .await;
}
