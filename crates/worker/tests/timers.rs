//! docs/protocol.md §5 timers: durable, fired through the broker, once — with two
//! workers polling, and across a worker restart before the deadline.

mod support;

use std::time::Duration;

use domain::machine::{EndReason, OutcomeKind};
use domain::{Phase, Verdict};
use support::{TestEnv, envelope, escalate, key, with_env};

/// The bot's "no answer to widgetEscalate" timer is 2 s.
const BOTS: &str = r#"
[[bots]]
id = "acme"
api_keys = ["acme-key-0123456789abcdef"]
overrides = { no_response_timeout_secs = 2 }
"#;

/// Every conversation ended once by the no-response timer: one applied
/// `timerFired`, one `sessionEnded` to the widget, one `widgetEndSession`
/// webhook, no timer left.
async fn assert_fired_once(env: &TestEnv, conversations: &[String]) {
    for conversation in conversations {
        let key = key(conversation);
        let stored = env.store.conversation(&key).await.expect("read").expect("stored");
        assert_eq!(stored.phase, Phase::Idle, "{conversation}");
        let outcome = stored.state.escalation.and_then(|e| e.outcome).expect("ended");
        assert_eq!((outcome.kind, outcome.reason), (OutcomeKind::Failed, EndReason::NoResponseTimeout));

        let events = env.store.events_of(&key).await.expect("events");
        let timer_events: Vec<_> = events.iter().filter(|e| e.event_type == "timerFired").collect();
        assert_eq!(timer_events.len(), 1, "{conversation}: {events:?}");
        assert_eq!(timer_events[0].verdict, Verdict::Applied);
        assert!(timer_events[0].event_id.as_str().starts_with("timer:"), "{:?}", timer_events[0].event_id);

        let widget: Vec<&str> =
            env.store.widget_events(&key, 0).await.expect("widget").iter().map(|w| w.event.name()).collect();
        assert_eq!(widget, ["escalationRequested", "sessionEnded"], "{conversation}");
        let webhooks = env.store.webhook_deliveries_of(&key).await.expect("webhooks");
        let types: Vec<&str> = webhooks.iter().map(|w| w.event_type.as_str()).collect();
        assert_eq!(types, ["widgetEscalate", "widgetEndSession"], "{conversation}");
        assert_eq!(webhooks[1].payload["reason"], "no_response_timeout");
    }
    assert_eq!(env.count("SELECT count(*) FROM timers").await, 0, "no timer left armed");
}

/// The same with 4 s, room for a worker restart before the deadline.
const SLOWER_BOTS: &str = r#"
[[bots]]
id = "acme"
api_keys = ["acme-key-0123456789abcdef"]
overrides = { no_response_timeout_secs = 4 }
"#;

async fn escalate_all(env: &TestEnv, conversations: &[String]) {
    for conversation in conversations {
        env.publish(&envelope(
            conversation,
            &format!("{conversation}-esc"),
            escalate(&format!("esc-{conversation}")),
        ))
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_once_with_two_workers_polling() {
    with_env(8, BOTS, |env| async move {
        let a = env.start_worker().await;
        let b = env.start_worker().await;
        let conversations: Vec<String> = (0..40).map(|i| format!("timer-{i}")).collect();
        escalate_all(&env, &conversations).await;
        env.wait_for_count(
            "SELECT count(*) FROM events WHERE event_type = 'timerFired'",
            40,
            Duration::from_secs(20),
        )
        .await;
        // Time for a second firing, had there been one.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_fired_once(&env, &conversations).await;
        a.stop().await.expect("a stops");
        b.stop().await.expect("b stops");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_armed_before_a_restart_fires_once_after_it() {
    with_env(4, SLOWER_BOTS, |env| async move {
        let conversations: Vec<String> = (0..5).map(|i| format!("restart-{i}")).collect();
        let first = env.start_worker().await;
        escalate_all(&env, &conversations).await;
        env.wait_for_count(
            "SELECT count(*) FROM timers WHERE kind = 'no_response'",
            5,
            Duration::from_secs(10),
        )
        .await;
        // Gone before the deadline; the timers wait in PostgreSQL.
        first.stop().await.expect("stops");
        assert_eq!(env.count("SELECT count(*) FROM events WHERE event_type = 'timerFired'").await, 0);
        tokio::time::sleep(Duration::from_millis(500)).await;

        let second = env.start_worker().await;
        env.wait_for_count(
            "SELECT count(*) FROM events WHERE event_type = 'timerFired'",
            5,
            Duration::from_secs(20),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_fired_once(&env, &conversations).await;
        second.stop().await.expect("stops");
    })
    .await;
}
