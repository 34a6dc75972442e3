//! The live fan-out against the real broker: one message for a batch's
//! conversations reaches each queue bound to any of them exactly once.

use std::time::Duration;

use crate::common::raw;
use broker::{declare_live, live_exchange, live_routing_key, publish_live};
use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

/// Every message waiting on `queue`, as (body, had a BCC header).
async fn drain(channel: &lapin::Channel, queue: &str) -> Vec<(String, bool)> {
    let mut got = Vec::new();
    while let Some(message) =
        channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("get")
    {
        let bcc = message
            .properties
            .headers()
            .as_ref()
            .is_some_and(|headers| headers.inner().keys().any(|key| key.as_str() == "BCC"));
        got.push((String::from_utf8_lossy(&message.data).into_owned(), bcc));
    }
    got
}

#[tokio::test]
async fn one_message_reaches_every_queue_bound_to_one_of_its_conversations_once() {
    crate::common::init_tracing();
    let prefix = format!("test-{}", uuid::Uuid::new_v4());
    let (connection, channel) = raw().await;
    declare_live(&channel, &prefix).await.expect("declare");
    let exclusive =
        QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    // `both` watches a and b; `only_c` watches c; `neither` watches z.
    let mut queues = Vec::new();
    for convs in [vec!["a", "b"], vec!["c"], vec!["z"]] {
        let queue = channel.queue_declare("".into(), exclusive, FieldTable::default()).await.expect("queue");
        for conv in convs {
            let key = live_routing_key("bot", conv);
            channel
                .queue_bind(
                    queue.name().clone(),
                    live_exchange(&prefix).as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind");
        }
        queues.push(queue.name().as_str().to_owned());
    }

    publish_live(&channel, &prefix, [("bot", "a"), ("bot", "b"), ("bot", "c"), ("bot", "d")], b"batch-1")
        .await
        .expect("publish");
    publish_live(&channel, &prefix, [("bot", "z")], b"batch-2").await.expect("publish");
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(drain(&channel, &queues[0]).await, vec![("batch-1".to_owned(), false)], "bound to a and b");
    assert_eq!(drain(&channel, &queues[1]).await, vec![("batch-1".to_owned(), false)], "bound to c");
    assert_eq!(drain(&channel, &queues[2]).await, vec![("batch-2".to_owned(), false)], "bound to z");

    let none: [(&str, &str); 0] = [];
    assert!(publish_live(&channel, &prefix, none, b"x").await.is_err(), "a message for nobody is refused");

    let _ = channel
        .exchange_delete(live_exchange(&prefix).as_str().into(), ExchangeDeleteOptions::default())
        .await;
    let _ = connection.close(200, "OK".into()).await;
}
