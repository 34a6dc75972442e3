//! docs/protocol.md §5 end to end: HTTP to the ingress → RabbitMQ → worker → the state,
//! the event log and the outbox rows in PostgreSQL.

use domain::Phase;
use domain::machine::{EndReason, OutcomeKind};
use domain::widget::WidgetEvent;
use e2e::{System, eventually};
use serde_json::{Value, json};
use std::time::Duration;

fn verdicts(events: &[store::EventRecord]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            let verdict = serde_json::to_value(e.verdict).expect("verdict");
            let text = match verdict.get("code") {
                Some(Value::String(code)) => format!("rejected:{code}"),
                _ => verdict["status"].as_str().unwrap_or("?").to_owned(),
            };
            (e.event_type.clone(), text)
        })
        .collect()
}

fn widget_names(events: &[domain::widget::WidgetEnvelope]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.name()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_escalation_from_request_to_visitor_end() {
    let sys = System::start().await;
    let conv = "conv-happy";
    let (escalation_id, token) = sys.escalate(conv).await;
    let (status, body) = sys
        .agent(json!({"eventType": "escalationQueueUpdate", "platformConversationId": conv, "queuePosition": "3", "waitingTime": "12"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "accepted");
    assert_eq!(sys.visitor(conv, &token, "hello?").await, 200);
    assert_eq!(sys.visitor(conv, &token, "anyone there?").await, 200);
    sys.agent(
        json!({"eventType": "escalationSuccess", "platformConversationId": conv, "agent": "John Smith"}),
    )
    .await;
    sys.agent(json!({"eventType": "message", "platformConversationId": conv, "text": "Hello, I'm John"}))
        .await;
    assert_eq!(sys.visitor(conv, &token, "thanks John").await, 200);
    assert_eq!(sys.visitor_end(conv, &token).await, 200);

    let events = sys.wait_events(conv, 8).await;
    assert_eq!(
        verdicts(&events),
        [
            ("escalate", "applied"),
            ("escalationQueueUpdate", "applied"),
            ("visitorMessage", "applied"),
            ("visitorMessage", "applied"),
            ("escalationSuccess", "applied"),
            ("message", "applied"),
            ("visitorMessage", "applied"),
            ("visitorEnd", "applied"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let key = sys.key(conv);
    let state = sys.store.conversation(&key).await.expect("query").expect("stored");
    assert_eq!(state.phase, Phase::Idle);
    let escalation = state.state.escalation.expect("escalation");
    assert_eq!(escalation.id.as_str(), escalation_id);
    let outcome = escalation.outcome.expect("ended");
    assert_eq!((outcome.kind, outcome.reason), (OutcomeKind::Ended, EndReason::VisitorEnded));

    let widget = sys.store.widget_events(&key, 0).await.expect("widget events");
    assert_eq!(
        widget_names(&widget),
        ["escalationRequested", "escalationQueueUpdate", "escalationSuccess", "message", "sessionEnded"]
    );
    assert_eq!(widget.iter().map(|w| w.sequence).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(
        widget[1].event,
        WidgetEvent::EscalationQueueUpdate {
            queue_position: Some("3".into()),
            waiting_time: Some("12".into())
        }
    );
    assert!(matches!(&widget[3].event, WidgetEvent::Message { text, .. } if text == "Hello, I'm John"));

    let webhooks = sys.store.webhook_deliveries_of(&key).await.expect("deliveries");
    let summary: Vec<(u64, &str, Option<&str>)> = webhooks
        .iter()
        .map(|d| (d.sequence, d.event_type.as_str(), d.payload.get("text").and_then(Value::as_str)))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "widgetEscalate", None),
            (2, "widgetMessage", Some("hello?")),
            (3, "widgetMessage", Some("anyone there?")),
            (4, "widgetMessage", Some("thanks John")),
            (5, "widgetEndSession", None),
        ]
    );
    assert!(webhooks.iter().all(|d| d.status == "pending"));
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_recorded_with_their_code_and_reported() {
    let sys = System::start().await;
    // idle: nothing to act on
    sys.agent(json!({"eventType": "message", "platformConversationId": "conv-idle", "text": "hi"})).await;
    // requested: a message before success
    let (first, _) = sys.escalate("conv-early").await;
    sys.agent(json!({"eventType": "message", "platformConversationId": "conv-early", "text": "too early"}))
        .await;
    // a stale escalation id
    sys.agent(json!({"eventType": "escalationFailed", "platformConversationId": "conv-early", "escalationId": "not-the-current-one"})).await;
    // connected: a queue update
    sys.agent(json!({"eventType": "escalationSuccess", "platformConversationId": "conv-early", "escalationId": first})).await;
    sys.agent(json!({"eventType": "escalationQueueUpdate", "platformConversationId": "conv-early", "queuePosition": 1})).await;

    let idle = sys.wait_events("conv-idle", 1).await;
    assert_eq!(verdicts(&idle), [("message".to_owned(), "rejected:no_active_escalation".to_owned())]);
    let early = sys.wait_events("conv-early", 5).await;
    assert_eq!(
        verdicts(&early),
        [
            ("escalate", "applied"),
            ("message", "rejected:not_connected"),
            ("escalationFailed", "rejected:stale_escalation"),
            ("escalationSuccess", "applied"),
            ("escalationQueueUpdate", "rejected:already_connected"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(early[1].phase_before, Phase::Requested);
    assert_eq!(
        sys.store.conversation(&sys.key("conv-early")).await.expect("q").expect("row").phase,
        Phase::Connected
    );

    let rejected: Vec<Value> = sys
        .store
        .webhook_deliveries_of(&sys.key("conv-early"))
        .await
        .expect("deliveries")
        .into_iter()
        .filter(|d| d.event_type == "eventRejected")
        .map(|d| d.payload)
        .collect();
    let codes: Vec<(&str, &str)> = rejected
        .iter()
        .map(|p| (p["code"].as_str().unwrap_or(""), p["currentState"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        codes,
        [
            ("not_connected", "requested"),
            ("stale_escalation", "requested"),
            ("already_connected", "connected")
        ]
    );
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_side_endings_and_a_new_escalation() {
    let sys = System::start().await;
    // requested → failed(escalation_failed)
    sys.escalate("conv-a").await;
    sys.agent(json!({"eventType": "escalationFailed", "platformConversationId": "conv-a"})).await;
    // connected → ended(agent_disconnect), then a second escalation starts fresh
    let (first, _) = sys.escalate("conv-b").await;
    sys.agent(json!({"eventType": "escalationSuccess", "platformConversationId": "conv-b", "agent": "Ann"}))
        .await;
    sys.agent(json!({"eventType": "escalationSuccess", "platformConversationId": "conv-b", "agent": "Bob"}))
        .await;
    sys.agent(json!({"eventType": "agentDisconnect", "platformConversationId": "conv-b"})).await;
    sys.wait_events("conv-b", 4).await;
    let (second, _) = sys.escalate("conv-b").await;
    assert_ne!(first, second);
    // the old escalation's events are stale now
    sys.agent(json!({"eventType": "message", "platformConversationId": "conv-b", "escalationId": first, "text": "x"})).await;

    let a = sys.wait_events("conv-a", 2).await;
    assert_eq!(a[1].phase_after, Phase::Idle);
    let b = sys.wait_events("conv-b", 6).await;
    assert_eq!(verdicts(&b)[5], ("message".to_owned(), "rejected:stale_escalation".to_owned()));
    let widget = sys.store.widget_events(&sys.key("conv-b"), 0).await.expect("widget");
    assert_eq!(
        widget_names(&widget),
        [
            "escalationRequested",
            "escalationSuccess",
            "agentChanged",
            "agentDisconnect",
            "escalationRequested"
        ]
    );
    let state = sys.store.conversation(&sys.key("conv-b")).await.expect("q").expect("row");
    assert_eq!((state.phase, state.state.live().map(|e| e.id.to_string())), (Phase::Requested, Some(second)));
    let failed = sys.store.widget_events(&sys.key("conv-a"), 0).await.expect("widget");
    assert_eq!(failed[1].event, WidgetEvent::EscalationFailed { reason: EndReason::EscalationFailed });
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_is_applied_once() {
    let sys = System::start().await;
    let (_, _) = sys.escalate("conv-dup").await;
    sys.agent(json!({"eventType": "escalationSuccess", "platformConversationId": "conv-dup"})).await;
    let body = json!({"eventType": "message", "platformConversationId": "conv-dup", "text": "only once"});
    for _ in 0..3 {
        let (status, reply) = sys.agent_with_key(body.clone(), Some("agent-msg-1")).await;
        assert_eq!(status, 200);
        assert_eq!(reply["eventId"], "agent-msg-1");
    }
    sys.agent(json!({"eventType": "message", "platformConversationId": "conv-dup", "text": "after"})).await;
    let events = sys.wait_events("conv-dup", 4).await;
    assert_eq!(events.len(), 4, "the repeats are not recorded again");
    let widget = sys.store.widget_events(&sys.key("conv-dup"), 0).await.expect("widget");
    let texts: Vec<&str> = widget
        .iter()
        .filter_map(|w| match &w.event {
            WidgetEvent::Message { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["only once", "after"]);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_no_response_timer_fails_an_unanswered_escalation() {
    let sys = System::start_with(", no_response_timeout_secs = 1").await;
    sys.escalate("conv-timer").await;
    let key = sys.key("conv-timer");
    let widget = eventually("the timer fired", Duration::from_secs(20), || async {
        let w = sys.store.widget_events(&key, 0).await.expect("widget");
        (w.len() >= 2).then_some(w)
    })
    .await;
    assert_eq!(widget[1].event, WidgetEvent::SessionEnded { reason: EndReason::NoResponseTimeout });
    let webhooks = sys.store.webhook_deliveries_of(&key).await.expect("deliveries");
    assert_eq!(webhooks.last().map(|d| d.event_type.as_str()), Some("widgetEndSession"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sys.store.widget_events(&key, 0).await.expect("widget").len(), 2, "fired once");
    sys.stop().await;
}

/// The cells of docs/protocol.md §5 not walked above, each on its own conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_cells_of_the_table_end_to_end() {
    let sys = System::start_with(", max_held_messages = 2").await;
    let ev = |t: &str, c: &str| json!({"eventType": t, "platformConversationId": c});
    // queued × failed, requested × disconnect, queued × disconnect
    sys.escalate("q-failed").await;
    sys.agent(ev("escalationQueueUpdate", "q-failed")).await;
    sys.agent(ev("escalationFailed", "q-failed")).await;
    sys.escalate("r-disc").await;
    sys.agent(ev("agentDisconnect", "r-disc")).await;
    sys.escalate("q-disc").await;
    sys.agent(ev("escalationQueueUpdate", "q-disc")).await;
    sys.agent(ev("agentDisconnect", "q-disc")).await;
    // connected × same agent (duplicate), connected × failed
    sys.escalate("c-failed").await;
    sys.agent(
        json!({"eventType": "escalationSuccess", "platformConversationId": "c-failed", "agent": "Ann"}),
    )
    .await;
    sys.agent(
        json!({"eventType": "escalationSuccess", "platformConversationId": "c-failed", "agent": "Ann"}),
    )
    .await;
    sys.agent(ev("escalationFailed", "c-failed")).await;
    // visitor: held messages are bounded; end before connect cancels; then nothing is live
    let (_, token) = sys.escalate("v-end").await;
    for text in ["one", "two", "three"] {
        assert_eq!(sys.visitor("v-end", &token, text).await, 200, "accepted; the worker decides");
    }
    assert_eq!(sys.visitor_end("v-end", &token).await, 200);
    assert_eq!(sys.visitor("v-end", &token, "after the end").await, 200);

    let outcome = |events: &[store::EventRecord]| events.last().map(|e| e.phase_after);
    for (conv, count) in [("q-failed", 3), ("r-disc", 2), ("q-disc", 3), ("c-failed", 4)] {
        let events = sys.wait_events(conv, count).await;
        assert_eq!(outcome(&events), Some(Phase::Idle), "{conv} ended");
    }
    let ended = |conv: &'static str| {
        let sys = &sys;
        async move {
            let row = sys.store.conversation(&sys.key(conv)).await.expect("q").expect("row");
            let o = row.state.escalation.and_then(|e| e.outcome).expect("outcome");
            (o.kind, o.reason)
        }
    };
    assert_eq!(ended("q-failed").await, (OutcomeKind::Failed, EndReason::EscalationFailed));
    assert_eq!(ended("r-disc").await, (OutcomeKind::Failed, EndReason::DisconnectedBeforeConnect));
    assert_eq!(ended("q-disc").await, (OutcomeKind::Failed, EndReason::DisconnectedBeforeConnect));
    assert_eq!(ended("c-failed").await, (OutcomeKind::Ended, EndReason::FailedAfterConnect));
    let c_failed = sys.wait_events("c-failed", 4).await;
    assert_eq!(verdicts(&c_failed)[2], ("escalationSuccess".to_owned(), "duplicate".to_owned()));

    let v_end = sys.wait_events("v-end", 6).await;
    assert_eq!(
        verdicts(&v_end),
        [
            ("escalate", "applied"),
            ("visitorMessage", "applied"),
            ("visitorMessage", "applied"),
            ("visitorMessage", "rejected:held_messages_full"),
            ("visitorEnd", "applied"),
            ("visitorMessage", "rejected:no_active_escalation"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(ended("v-end").await, (OutcomeKind::Cancelled, EndReason::VisitorEnded));
    let webhooks = sys.store.webhook_deliveries_of(&sys.key("v-end")).await.expect("deliveries");
    let types: Vec<&str> = webhooks.iter().map(|d| d.event_type.as_str()).collect();
    assert_eq!(types, ["widgetEscalate", "widgetEndSession"], "held messages are dropped, never sent");
    sys.stop().await;
}

/// The queue, idle and TTL timers, with short per-bot overrides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_idle_and_ttl_timers_end_to_end() {
    let sys = System::start_with(", queue_timeout_secs = 1, idle_timeout_secs = 2, ttl_secs = 4").await;
    let ev = |t: &str, c: &str| json!({"eventType": t, "platformConversationId": c});
    sys.escalate("t-queue").await;
    sys.agent(ev("escalationQueueUpdate", "t-queue")).await;
    sys.escalate("t-idle").await;
    sys.agent(ev("escalationSuccess", "t-idle")).await;
    sys.escalate("t-ttl").await;
    sys.agent(ev("escalationSuccess", "t-ttl")).await;
    // Keep t-ttl busy so its idle timer keeps moving; only the TTL can end it.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(5500) {
        sys.agent(json!({"eventType": "message", "platformConversationId": "t-ttl", "text": "still here"}))
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (conv, reason) in [
        ("t-queue", EndReason::QueueTimeout),
        ("t-idle", EndReason::IdleTimeout),
        ("t-ttl", EndReason::TtlExpired),
    ] {
        let key = sys.key(conv);
        let widget = eventually(&format!("{conv} ended"), Duration::from_secs(20), || async {
            let w = sys.store.widget_events(&key, 0).await.expect("widget");
            w.iter().any(|e| e.event.is_terminal()).then_some(w)
        })
        .await;
        let ends: Vec<&WidgetEvent> = widget.iter().map(|w| &w.event).filter(|e| e.is_terminal()).collect();
        assert_eq!(ends, [&WidgetEvent::SessionEnded { reason }], "{conv}: one ending, the right one");
        let webhooks = sys.store.webhook_deliveries_of(&key).await.expect("deliveries");
        let end_sessions: Vec<&Value> = webhooks
            .iter()
            .filter(|d| d.event_type == "widgetEndSession")
            .map(|d| &d.payload["reason"])
            .collect();
        assert_eq!(
            end_sessions,
            [&serde_json::to_value(reason).expect("reason")],
            "{conv}: the bot is told once"
        );
    }
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalating_again_while_live_answers_the_live_escalation() {
    let sys = System::start().await;
    // Back to back: the second may reach the ingress before the first is applied.
    let ((first, _), (second, _)) = tokio::join!(sys.escalate("conv-again"), async {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        sys.escalate("conv-again").await
    });
    let (third, _) = sys.escalate("conv-again").await;
    let stored = sys.store.conversation(&sys.key("conv-again")).await.expect("read").expect("stored");
    let live = stored.state.escalation.expect("escalation").id;
    assert_eq!(
        (first.as_str(), second.as_str(), third.as_str()),
        (live.as_str(), live.as_str(), live.as_str())
    );
    let widget = sys.store.widget_events(&sys.key("conv-again"), 0).await.expect("widget");
    assert_eq!(widget.len(), 1, "one escalationRequested: {widget:?}");

    // Once it has ended, escalating starts a new one.
    let (_, token) = sys.escalate("conv-again").await;
    assert_eq!(sys.visitor_end("conv-again", &token).await, 200);
    sys.wait_events("conv-again", 5).await;
    let (fresh, _) = sys.escalate("conv-again").await;
    assert_ne!(fresh, first, "a new escalation after the end");
    let stored = sys.store.conversation(&sys.key("conv-again")).await.expect("read").expect("stored");
    assert_eq!(stored.state.escalation.expect("escalation").id.as_str(), fresh.as_str());
    // The verdicts came straight back from the worker (`reply_to`), not from
    // the event log after the wait ran out.
    let text = ingress::metrics::install().render();
    let replies: f64 = text
        .lines()
        .find(|l| {
            l.starts_with("escalations_ingress_live_messages_total") && l.contains("outcome=\"verdict\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(replies >= 5.0, "verdicts answered through reply_to: {replies}");
    sys.stop().await;
}
