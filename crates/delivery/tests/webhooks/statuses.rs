//! Final statuses dead-letter at the first attempt; `Retry-After` is
//! honoured within its clamp; the endpoint's concurrency limit holds.

use std::time::Duration;

use store::DeadReason;

use crate::support::{
    Receiver, Reply, bot, eventually, fast_config, insert, key, message, secret, settings, start, statuses,
    with_store,
};

#[tokio::test]
async fn gone_and_bad_request_are_final_at_the_first_attempt() {
    with_store(|store| async move {
        let gone = Receiver::start().await;
        gone.always(410);
        let bad = Receiver::start().await;
        bad.always(400);
        let settings =
            settings(vec![bot("gone", &gone.url(), &[secret(1)]), bot("bad", &bad.url(), &[secret(1)])]);
        let running = start(&settings, &store, None, fast_config());
        let (g, b) = (key("gone", "c"), key("bad", "c"));
        insert(
            &store,
            &[(g.clone(), message(1, "x")), (g.clone(), message(2, "y")), (b.clone(), message(1, "z"))],
        )
        .await;
        eventually(Duration::from_secs(10), "dead letters", || async {
            statuses(&store, &g).await == ["dead", "dead"] && statuses(&store, &b).await == ["dead"]
        })
        .await;
        running.stop().await;
        assert_eq!((gone.count(), bad.count()), (2, 1), "one attempt each, no retry");
        for record in store
            .deliveries_with_attempts(&g)
            .await
            .expect("deliveries")
            .into_iter()
            .chain(store.deliveries_with_attempts(&b).await.expect("deliveries"))
        {
            let (delivery, attempts) = record;
            assert_eq!(delivery.reason, Some(DeadReason::FinalStatus));
            assert_eq!(attempts.len(), 1);
            assert!(matches!(attempts[0].status_code, Some(400 | 410)));
        }
    })
    .await;
}

#[tokio::test]
async fn retry_after_is_honoured_within_the_clamp() {
    with_store(|store| async move {
        let asked = Receiver::start().await;
        // First answer: 429, come back in 2 s.
        asked.respond(|n, _, _| match n {
            0 => Reply { status: 429, retry_after: Some("2".into()), delay: Duration::ZERO },
            _ => Reply::status(200),
        });
        let greedy = Receiver::start().await;
        // Asks for an hour; the clamp (3 s in this test) wins.
        greedy.respond(|n, _, _| match n {
            0 => Reply { status: 503, retry_after: Some("3600".into()), delay: Duration::ZERO },
            _ => Reply::status(200),
        });
        let settings = settings(vec![
            bot("asked", &asked.url(), &[secret(1)]),
            bot("greedy", &greedy.url(), &[secret(1)]),
        ]);
        let mut config = fast_config();
        config.retry.retry_after_max = Some(Duration::from_secs(3));
        config.retry.retry_after_min = Some(Duration::from_millis(500));
        let running = start(&settings, &store, None, config);
        insert(&store, &[(key("asked", "c"), message(1, "x")), (key("greedy", "c"), message(1, "x"))]).await;
        eventually(Duration::from_secs(10), "both delivered", || async {
            asked.acked().len() == 1 && greedy.acked().len() == 1
        })
        .await;
        running.stop().await;

        let gap = |receiver: &Receiver| {
            let received = receiver.received();
            received[1].at.duration_since(received[0].at)
        };
        let (asked_gap, greedy_gap) = (gap(&asked), gap(&greedy));
        println!("Retry-After 2 → {asked_gap:?}; Retry-After 3600 clamped to 3 s → {greedy_gap:?}");
        assert!(
            asked_gap >= Duration::from_millis(1950) && asked_gap < Duration::from_millis(2800),
            "{asked_gap:?}"
        );
        assert!(
            greedy_gap >= Duration::from_millis(2950) && greedy_gap < Duration::from_secs(4),
            "{greedy_gap:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn concurrency_per_endpoint_is_bounded() {
    with_store(|store| async move {
        let slow = Receiver::start().await;
        slow.respond(|_, _, _| Reply { status: 200, retry_after: None, delay: Duration::from_millis(300) });
        let mut settings = settings(vec![bot("slow", &slow.url(), &[secret(1)])]);
        settings.webhooks.max_concurrency_per_endpoint = 2;
        let running = start(&settings, &store, None, fast_config());
        insert(&store, &(0..8).map(|c| (key("slow", &format!("c{c}")), message(1, "x"))).collect::<Vec<_>>())
            .await;
        eventually(Duration::from_secs(10), "all delivered", || async { slow.acked().len() == 8 }).await;
        running.stop().await;
        assert_eq!(slow.max_in_flight(), 2, "two at a time, concurrently");
    })
    .await;
}

#[tokio::test]
async fn a_configured_wake_starts_a_claim_round_before_the_next_poll() {
    with_store(|store| async move {
        let receiver = Receiver::start().await;
        receiver.always(200);
        let settings = settings(vec![bot("woken", &receiver.url(), &[secret(1)])]);
        let handoff = delivery::Handoff::new();
        // Polls once at start, then not for a minute: only a wake-up can send.
        let config = delivery::DispatcherConfig {
            poll_interval: Duration::from_secs(60),
            handoff: Some(handoff.clone()),
            listen: false,
            ..fast_config()
        };
        let running = start(&settings, &store, None, config);
        tokio::time::sleep(Duration::from_millis(300)).await;
        insert(&store, &[(key("woken", "c"), message(1, "x"))]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(receiver.count(), 0, "sent without a wake-up: the poll interval is not what this tests");
        handoff.wake();
        eventually(Duration::from_secs(5), "the delivery after the wake-up", || async {
            receiver.count() == 1
        })
        .await;
        running.stop().await;
    })
    .await;
}

#[tokio::test]
async fn deliveries_of_an_unconfigured_bot_stay_pending_and_are_counted() {
    with_store(|store| async move {
        let receiver = Receiver::start().await;
        receiver.always(200);
        let settings = settings(vec![bot("kept", &receiver.url(), &[secret(1)])]);
        let (kept, gone) = (key("kept", "c"), key("removed", "c"));
        insert(&store, &[(kept.clone(), message(1, "x")), (gone.clone(), message(1, "y"))]).await;
        let running = start(&settings, &store, None, fast_config());
        eventually(Duration::from_secs(10), "the configured bot's delivery", || async {
            statuses(&store, &kept).await == ["delivered"]
        })
        .await;
        running.stop().await;
        assert_eq!(statuses(&store, &gone).await, ["pending"], "never claimed, never dropped");
        let counted = store.pending_of_other_bots(&["kept"], 1_000).await.expect("count");
        assert_eq!(counted, [("removed".to_owned(), 1)]);
        assert!(store.pending_of_other_bots(&["kept", "removed"], 1_000).await.expect("count").is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_delivery_committed_elsewhere_is_sent_before_the_next_poll() {
    with_store(|store| async move {
        let receiver = Receiver::start().await;
        receiver.always(200);
        let settings = settings(vec![bot("told", &receiver.url(), &[secret(1)])]);
        // Polls once at start, then not for a minute, and nothing in this
        // process wakes it: only the NOTIFY a worker sends after its commit,
        // heard through LISTEN.
        let config = delivery::DispatcherConfig { poll_interval: Duration::from_secs(60), ..fast_config() };
        let running = start(&settings, &store, None, config);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = std::time::Instant::now();
        insert(&store, &[(key("told", "c"), message(1, "x"))]).await;
        store.announce_outbox().await.expect("notify");
        eventually(Duration::from_secs(5), "the delivery after the notification", || async {
            receiver.count() == 1
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        running.stop().await;
    })
    .await;
}
