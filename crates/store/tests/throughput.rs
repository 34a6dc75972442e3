//! One transaction writing a batch of 1,000 events: the worker's write path
//! must be set-based, a handful of statements whatever the batch size.

mod support;

use std::time::{Duration, Instant};

use domain::{Conversation, Verdict};
use store::{
    ConvKey, EventRecord, applied_event_ids, insert_webhook_deliveries, insert_widget_events,
    lock_conversations, record_events, save_conversations, upsert_timers,
};
use support::{at, escalate, key, split, step, with_store};

const EVENTS: usize = 1_000;
/// Generous: a debug build on a busy CI machine. Expect tens of milliseconds.
const BOUND: Duration = Duration::from_secs(5);

/// Writes one batch of `EVENTS` escalations (one per conversation, `round`
/// distinguishing event ids) as the worker would, and returns how long it took.
async fn write_batch(store: &store::Store, round: usize) -> Duration {
    let keys: Vec<ConvKey> = (0..EVENTS).map(|i| key("bot", &format!("conv-{i}"))).collect();
    let commands: Vec<_> =
        (0..EVENTS).map(|i| escalate(&format!("r{round}-e{i}"), &format!("r{round}-esc{i}"))).collect();

    let started = Instant::now();
    let mut client = store.client().await.expect("client");
    let tx = client.transaction().await.expect("begin");
    let mut states = lock_conversations(&tx, &keys).await.expect("lock");
    let ids: Vec<_> = keys.iter().cloned().zip(commands.iter().map(|c| c.scoped_id())).collect();
    let seen = applied_event_ids(&tx, &ids).await.expect("applied ids");
    assert!(seen.is_empty());

    let (mut saved, mut records, mut widget, mut webhooks, mut timers) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (key, command) in keys.iter().zip(&commands) {
        let state = states.remove(key).unwrap_or_default();
        let transition = step(&state, command, at(1));
        records.push(EventRecord {
            key: key.clone(),
            event_id: command.event_id.clone(),
            id_space: command.input.id_space(),
            event_type: command.input.name().to_owned(),
            verdict: transition.verdict,
            phase_before: state.phase(),
            phase_after: transition.next.phase(),
            received_at: at(0),
            applied_at: at(1),
            warnings: Vec::new(),
        });
        let effects = split(&transition.effects);
        widget.extend(effects.widget.into_iter().map(|e| (key.clone(), e)));
        webhooks.extend(effects.webhooks.into_iter().map(|e| (key.clone(), e)));
        timers.extend(effects.set_timers.into_iter().map(|(esc, kind, due)| (key.clone(), esc, kind, due)));
        saved.push((key.clone(), transition.next));
    }
    save_conversations(&tx, &saved, at(1)).await.expect("save");
    assert_eq!(record_events(&tx, &records).await.expect("record"), EVENTS as u64);
    insert_widget_events(&tx, &widget).await.expect("widget");
    insert_webhook_deliveries(&tx, &webhooks, at(1)).await.expect("webhooks");
    upsert_timers(&tx, &timers).await.expect("timers");
    tx.commit().await.expect("commit");
    let elapsed = started.elapsed();
    assert!(records.iter().all(|r| r.verdict == Verdict::Applied || r.verdict == Verdict::Duplicate));
    elapsed
}

#[tokio::test]
async fn a_batch_of_a_thousand_events_commits_well_under_a_second() {
    with_store(|store| async move {
        // First round inserts every conversation; the second updates them.
        let insert = write_batch(&store, 0).await;
        let update = write_batch(&store, 1).await;
        println!("batch of {EVENTS} events: {insert:?} (new conversations), {update:?} (existing ones)");
        assert!(insert < BOUND && update < BOUND, "{insert:?} / {update:?}");
        assert_eq!(store.count_events().await.expect("count"), 2 * EVENTS as u64);
        let one = store.conversation(&key("bot", "conv-7")).await.expect("read").expect("stored");
        assert_ne!(one.state, Conversation::default());
    })
    .await;
}
