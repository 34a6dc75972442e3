//! docs/protocol.md §5 paths end to end through the broker and a worker, checked in
//! PostgreSQL: state, event log, widget stream, webhook outbox, timers. And
//! the two kinds of poison: an undecodable body, and an event the store
//! refuses inside an otherwise good batch.

mod support;

use std::time::Duration;

use broker::OutboundMessage;
use domain::machine::{EndReason, OutcomeKind};
use domain::{AgentAction, Phase, RejectCode, Verdict};
use serde_json::{Value, json};
use support::{BOT, agent, agent_message, envelope, escalate, key, success, visitor_message, with_env};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_queue_connect_talk_and_visitor_end() {
    with_env(4, "", |env| async move {
        let worker = env.start_worker().await;
        let c = "conv-path";
        let events = [
            envelope(c, "e1", escalate("esc-1")),
            envelope(
                c,
                "e2",
                agent(AgentAction::QueueUpdate {
                    queue_position: Some(3u32.into()),
                    waiting_time: Some("2-5".into()),
                }),
            ),
            envelope(c, "e3", visitor_message("v1", "hello")),
            envelope(c, "e4", visitor_message("v2", "anyone there?")),
            envelope(c, "e5", agent_message("too early")),
            envelope(c, "e6", success("Ann")),
            envelope(c, "e7", agent_message("Hi, Ann here")),
            envelope(c, "e8", visitor_message("v3", "thanks")),
            // An exact repeat (same event id): applied once, delivered once.
            envelope(c, "e7", agent_message("Hi, Ann here")),
            envelope(c, "e9", domain::Input::VisitorEnd),
        ];
        // An agent event for a conversation with no escalation.
        let idle = envelope("conv-idle", "x1", agent_message("hello?"));
        for event in events.iter().chain([&idle]) {
            env.publish(event).await;
        }
        env.wait_for_count("SELECT count(*) FROM events", 10, WAIT).await;

        let stored = env.store.conversation(&key(c)).await.expect("read").expect("stored");
        assert_eq!(stored.phase, Phase::Idle);
        let outcome = stored.state.escalation.and_then(|e| e.outcome).expect("ended");
        assert_eq!((outcome.kind, outcome.reason), (OutcomeKind::Ended, EndReason::VisitorEnded));

        let verdicts: Vec<(String, Verdict)> = env
            .store
            .events_of(&key(c))
            .await
            .expect("events")
            .into_iter()
            .map(|e| (e.event_id.as_str().to_owned(), e.verdict))
            .collect();
        let applied = Verdict::Applied;
        assert_eq!(
            verdicts,
            vec![
                ("e1".to_owned(), applied),
                ("e2".to_owned(), applied),
                ("e3".to_owned(), applied),
                ("e4".to_owned(), applied),
                ("e5".to_owned(), Verdict::Rejected(RejectCode::NotConnected)),
                ("e6".to_owned(), applied),
                ("e7".to_owned(), applied),
                ("e8".to_owned(), applied),
                ("e9".to_owned(), applied),
            ]
        );

        let widget = env.store.widget_events(&key(c), 0).await.expect("widget");
        let names: Vec<&str> = widget.iter().map(|w| w.event.name()).collect();
        assert_eq!(
            names,
            ["escalationRequested", "escalationQueueUpdate", "escalationSuccess", "message", "sessionEnded"]
        );
        assert_eq!(widget.iter().map(|w| w.sequence).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        let json = |value| serde_json::to_value(value).expect("json");
        assert_eq!(json(&widget[1])["queuePosition"], 3);
        assert_eq!(json(&widget[2])["agent"], "Ann");
        assert_eq!(json(&widget[3])["text"], "Hi, Ann here");
        assert_eq!(json(&widget[4])["reason"], "visitor_ended");

        let webhooks = env.store.webhook_deliveries_of(&key(c)).await.expect("webhooks");
        let summary: Vec<(u64, &str, &str)> =
            webhooks.iter().map(|w| (w.sequence, w.event_type.as_str(), w.status.as_str())).collect();
        assert_eq!(
            summary,
            [
                (1, "widgetEscalate", "pending"),
                (2, "eventRejected", "pending"),
                (3, "widgetMessage", "pending"),
                (4, "widgetMessage", "pending"),
                (5, "widgetMessage", "pending"),
                (6, "widgetEndSession", "pending"),
            ]
        );
        let payload = |i: usize| &webhooks[i].payload;
        assert_eq!(payload(1)["eventId"], "e5");
        assert_eq!(payload(1)["code"], "not_connected");
        assert_eq!(payload(1)["currentState"], "queued");
        // Held visitor messages go out in order right after the connect.
        assert_eq!(
            (payload(2)["text"].clone(), payload(2)["messageId"].clone()),
            (json!("hello"), json!("v1"))
        );
        assert_eq!(payload(3)["text"], "anyone there?");
        assert_eq!(payload(4)["text"], "thanks");
        assert_eq!(payload(5)["reason"], "visitor_ended");
        assert!(webhooks.iter().all(|w| w.payload["escalationId"] == "esc-1"));
        assert_eq!(env.count("SELECT count(*) FROM timers").await, 0, "every timer disarmed at the end");

        // The rejection in an idle conversation: recorded with its code, reported.
        let idle_events = env.store.events_of(&key("conv-idle")).await.expect("events");
        assert_eq!(idle_events.len(), 1);
        assert_eq!(idle_events[0].verdict, Verdict::Rejected(RejectCode::NoActiveEscalation));
        let idle_hooks = env.store.webhook_deliveries_of(&key("conv-idle")).await.expect("webhooks");
        assert_eq!(idle_hooks.len(), 1);
        assert_eq!(idle_hooks[0].event_type, "eventRejected");
        assert_eq!(idle_hooks[0].payload["code"], "no_active_escalation");
        assert_eq!(idle_hooks[0].payload["currentState"], "idle");
        assert_eq!(idle_hooks[0].payload["eventId"], "x1");
        assert!(env.store.widget_events(&key("conv-idle"), 0).await.expect("widget").is_empty());

        worker.stop().await.expect("stops cleanly");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_and_the_rest_of_its_batch_applied() {
    // One shard, published before the worker starts: all of it is one batch.
    with_env(1, "", |env| async move {
        let good = "conv-good";
        env.publish(&envelope(good, "g1", escalate("esc-g"))).await;
        let garbage = OutboundMessage {
            event_id: "garbage-1".to_owned(),
            bot_id: BOT.to_owned(),
            conversation_id: good.to_owned(),
            event_type: "message".to_owned(),
            received_at: chrono::Utc::now(),
            body: b"{not an envelope".to_vec(),
            shard: 0,
            reply_to: None,
        };
        env.publisher.publish(&garbage).await.expect("publish garbage");
        // Decodes, but PostgreSQL refuses a NUL character in JSONB: a
        // deterministic data error for this event only.
        let mut refused = envelope("conv-refused", "r1", escalate("esc-r"));
        if let domain::Input::Escalate { metadata, .. } = &mut refused.command.input {
            *metadata = Some(json!({ "note": "nul \u{0000} here" }));
        }
        env.publish(&refused).await;
        env.publish(&envelope(good, "g2", success("Ann"))).await;
        env.publish(&envelope(good, "g3", agent_message("still in order"))).await;

        let worker = env.start_worker().await;
        env.wait_for_count("SELECT count(*) FROM events", 3, WAIT).await;
        let (connection, channel) = raw().await;
        let mut dead = Vec::new();
        let deadline = std::time::Instant::now() + WAIT;
        while dead.len() < 2 {
            assert!(std::time::Instant::now() < deadline, "both poison messages dead-lettered; got {dead:?}");
            let got = channel
                .basic_get(
                    env.topology.dead_letter_queue().as_str().into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
                .expect("basic.get");
            match got {
                Some(message) => {
                    dead.push(message.delivery.properties.message_id().as_ref().map(|id| id.to_string()));
                }
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        dead.sort();
        assert_eq!(dead, [Some("garbage-1".to_owned()), Some("r1".to_owned())]);

        let events = env.store.events_of(&key(good)).await.expect("events");
        assert!(events.iter().all(|e| e.verdict == Verdict::Applied), "{events:?}");
        let texts: Vec<Value> = env
            .store
            .widget_events(&key(good), 0)
            .await
            .expect("widget")
            .iter()
            .map(|w| serde_json::to_value(w).expect("json")["type"].clone())
            .collect();
        assert_eq!(texts, [json!("escalationRequested"), json!("escalationSuccess"), json!("message")]);
        assert!(env.store.conversation(&key("conv-refused")).await.expect("read").is_none());
        // Nothing is left in the shard queue, acked or in flight.
        worker.stop().await.expect("stops cleanly");
        let remaining = channel
            .queue_declare(
                env.topology.shard_queue(0).as_str().into(),
                lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("queue exists")
            .message_count();
        assert_eq!(remaining, 0);
        let _ = connection.close(200, "OK".into()).await;
    })
    .await;
}

async fn raw() -> (lapin::Connection, lapin::Channel) {
    let connection = lapin::Connection::connect(&support::amqp_url(), lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}
