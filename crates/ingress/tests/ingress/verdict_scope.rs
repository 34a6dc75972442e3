//! `Prefer: wait` verdicts are scoped to the caller's conversation (issue 11,
//! docs/protocol.md §3: nobody learns anything of a conversation they were not given).
//! Event ids are the callers' own, so two bots, or two conversations of one
//! bot, may use the same one: neither the live waiters nor the fallback read
//! of the event log may hand one of them the other's verdict.

use std::time::Duration;

use crate::common::{amqp_url, test_settings};
use chrono::Utc;
use domain::live::{LiveUpdate, LiveVerdict};
use domain::{BotId, ConversationId, EventId, IdSpace, Phase, RejectCode, ScopedEventId, Verdict};
use ingress::routes::verdict::recorded;
use ingress::{AppState, LiveHub};
use lapin::{Connection, ConnectionProperties};
use store::{ConvKey, EventRecord, Store};

fn key(bot: &str, conversation: &str) -> ConvKey {
    ConvKey::new(BotId::parse(bot).expect("id"), ConversationId::parse(conversation).expect("id"))
}

fn update(key: &ConvKey, event_id: &str, verdict: Verdict, phase: Phase) -> LiveUpdate {
    LiveUpdate {
        bot_id: key.bot_id.clone(),
        conversation_id: key.conversation_id.clone(),
        phase,
        events: Vec::new(),
        verdicts: vec![LiveVerdict {
            event_id: EventId::parse(event_id).expect("id"),
            space: IdSpace::Agent,
            verdict,
        }],
    }
}

#[tokio::test]
async fn a_verdict_resolves_only_the_waiters_of_its_own_conversation() {
    let prefix = format!("t-{}", uuid::Uuid::new_v4().simple());
    let hub = LiveHub::connect(&amqp_url(), &prefix).await.expect("live hub");
    let same = ScopedEventId(IdSpace::Agent, EventId::parse("same-id").expect("id"));
    let mine = hub.expect_verdict("acme", "c1", &same);
    let other_bot = hub.expect_verdict("other", "c1", &same);
    let other_conversation = hub.expect_verdict("acme", "c2", &same);
    // Our own id space is not the caller's (docs/protocol.md §2).
    let system = ScopedEventId(IdSpace::System, EventId::parse("same-id").expect("id"));
    let ours = hub.expect_verdict("acme", "c1", &system);

    // What the worker sends after committing acme/c1's event: straight to
    // the queue named as `reply_to`.
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("amqp");
    let channel = connection.create_channel().await.expect("channel");
    let body =
        serde_json::to_vec(&[update(&key("acme", "c1"), "same-id", Verdict::Applied, Phase::Connected)])
            .expect("json");
    broker::publish_reply(&channel, mine.queue().expect("connected"), &body).await.expect("reply");

    assert_eq!(mine.wait(Duration::from_secs(5)).await, Some((Verdict::Applied, Phase::Connected)));
    assert_eq!(other_bot.wait(Duration::from_millis(300)).await, None, "another bot's verdict leaked");
    assert_eq!(
        other_conversation.wait(Duration::from_millis(300)).await,
        None,
        "another conversation's verdict leaked"
    );
    assert_eq!(ours.wait(Duration::from_millis(100)).await, None, "an agent id resolved a system wait");

    let live = broker::live_exchange(&prefix);
    let _ = channel.exchange_delete(live.as_str().into(), Default::default()).await;
    let _ = connection.close(200, "bye".into()).await;
}

#[tokio::test]
async fn the_fallback_read_is_scoped_to_the_conversation() {
    let pg = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let store = Store::connect(&pg, &schema, 2).expect("store");
    store.migrate().await.expect("migrate");

    // acme/c1 had an event "same-id" refused; acme/c2 and other/c1 have none.
    let refused = EventRecord {
        key: key("acme", "c1"),
        event_id: EventId::parse("same-id").expect("id"),
        id_space: IdSpace::Agent,
        event_type: "message".to_owned(),
        verdict: Verdict::Rejected(RejectCode::NotConnected),
        phase_before: Phase::Requested,
        phase_after: Phase::Requested,
        received_at: Utc::now(),
        applied_at: Utc::now(),
        warnings: Vec::new(),
    };
    let client = store.client().await.expect("client");
    store::record_events(&client, &[refused]).await.expect("record");
    drop(client);

    let settings = test_settings();
    let publisher = std::sync::Arc::new(broker::Publisher::connect(ingress::publisher_config(&settings)));
    let app = AppState::with_store(settings, publisher.clone(), store.clone());
    let id = ScopedEventId(IdSpace::Agent, EventId::parse("same-id").expect("id"));
    let system = ScopedEventId(IdSpace::System, id.1.clone());
    let outcome = (
        recorded(&app, &key("acme", "c1"), &id).await,
        recorded(&app, &key("acme", "c2"), &id).await,
        recorded(&app, &key("other", "c1"), &id).await,
        recorded(&app, &key("acme", "c1"), &system).await,
    );
    publisher.shutdown().await;
    store.drop_schema().await.expect("drop schema");

    assert_eq!(outcome.0, Some((Verdict::Rejected(RejectCode::NotConnected), Phase::Requested)));
    assert_eq!(outcome.1, None, "another conversation's verdict leaked");
    assert_eq!(outcome.2, None, "another bot's verdict leaked");
    assert_eq!(outcome.3, None, "an agent event read as a system one");
}
