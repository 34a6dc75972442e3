//! Budgets that mean what they say, and an outbox without poison
//! (docs/protocol.md §4): a final attempt at the deadline, a `Retry-After`
//! past the budget gets that attempt too, a `widgetEscalate` whose escalation
//! ended is skipped, not sent, and a row that does not decode is dead-lettered
//! alone while everything else goes on. Error messages never carry the URL's
//! query string.

use std::time::Duration;

use store::DeadReason;

use crate::support::{
    Receiver, Reply, bot, end_escalation, escalate, eventually, fast_config, insert, key, message, secret,
    settings, start, statuses, with_store,
};

#[tokio::test]
async fn a_retry_after_past_the_budget_gets_one_final_attempt_at_the_deadline() {
    with_store(|store| async move {
        let receiver = Receiver::start().await;
        receiver.respond(|_, _, _| Reply { retry_after: Some("600".into()), ..Reply::status(503) });
        let mut settings = settings(vec![bot("late", &receiver.url(), &[secret(1)])]);
        settings.defaults.delivery_budget_secs = 2;
        let conv = key("late", "c");
        insert(&store, &[(conv.clone(), message(1, "x"))]).await;
        let running = start(&settings, &store, None, fast_config());
        eventually(Duration::from_secs(10), "dead after the final attempt", || async {
            statuses(&store, &conv).await == ["dead"]
        })
        .await;
        running.stop().await;
        let id = store.webhook_deliveries_of(&conv).await.expect("rows")[0].id;
        let attempts = store.delivery_attempts(id).await.expect("attempts");
        assert_eq!(attempts.len(), 2, "the first, then one at the deadline: {attempts:?}");
        let gap = attempts[1].at - attempts[0].at;
        assert!(
            gap >= chrono::TimeDelta::milliseconds(1_800) && gap < chrono::TimeDelta::seconds(4),
            "the final attempt comes at the deadline, not at the Retry-After nor at once: {gap}"
        );
        let row = store.delivery(id).await.expect("read").expect("row");
        assert_eq!(row.reason, Some(DeadReason::OutOfBudget));
    })
    .await;
}

#[tokio::test]
async fn a_widget_escalate_whose_escalation_ended_is_skipped_and_never_sent() {
    with_store(|store| async move {
        let receiver = Receiver::start().await;
        receiver.always(200);
        let settings = settings(vec![bot("ghost", &receiver.url(), &[secret(1)])]);
        let (ended, live) = (key("ghost", "ended"), key("ghost", "live"));
        insert(&store, &[(ended.clone(), escalate(1, "esc-1")), (ended.clone(), message(2, "bye"))]).await;
        insert(&store, &[(live.clone(), escalate(1, "esc-2"))]).await;
        // The escalation timed out while its webhook waited unclaimed.
        end_escalation(&store, &ended).await;
        let running = start(&settings, &store, None, fast_config());
        eventually(Duration::from_secs(10), "settled", || async {
            statuses(&store, &ended).await == ["skipped", "delivered"]
                && statuses(&store, &live).await == ["delivered"]
        })
        .await;
        running.stop().await;
        let sent: Vec<(String, String)> = receiver
            .received()
            .iter()
            .map(|r| (r.conversation(), r.json()["data"]["eventType"].as_str().unwrap_or("").to_owned()))
            .collect();
        assert!(
            !sent.contains(&("ended".to_owned(), "widgetEscalate".to_owned())),
            "an ended escalation's widgetEscalate was sent: {sent:?}"
        );
        let id = store.webhook_deliveries_of(&ended).await.expect("rows")[0].id;
        let row = store.delivery(id).await.expect("read").expect("row");
        assert_eq!(row.reason, Some(DeadReason::EscalationEnded));
        assert!(store.delivery_attempts(id).await.expect("attempts").is_empty());
        let listed = store.list_dead_letters(&store::DeadLetterFilter::default(), 10).await.expect("list");
        assert_eq!(listed.iter().map(|d| d.id).collect::<Vec<_>>(), [id], "visible in dlq list");
    })
    .await;
}

#[tokio::test]
async fn an_undecodable_row_is_dead_lettered_alone() {
    with_store(|store| async move {
        let receiver = Receiver::start().await;
        receiver.always(200);
        let settings = settings(vec![bot("poison", &receiver.url(), &[secret(1)])]);
        let (bad, good) = (key("poison", "bad"), key("poison", "good"));
        insert(&store, &[(bad.clone(), message(1, "x")), (bad.clone(), message(2, "y"))]).await;
        insert(&store, &[(good.clone(), message(1, "z"))]).await;
        let client = store.client().await.expect("client");
        client
            .execute(
                "UPDATE webhook_deliveries SET payload = '[1, 2, 3]' WHERE conversation_id = 'bad' AND sequence = 1",
                &[],
            )
            .await
            .expect("corrupt a row");
        let running = start(&settings, &store, None, fast_config());
        eventually(Duration::from_secs(10), "the rest delivered", || async {
            statuses(&store, &bad).await == ["dead", "delivered"] && statuses(&store, &good).await == ["delivered"]
        })
        .await;
        running.stop().await;
        let id = store.webhook_deliveries_of(&bad).await.expect("rows")[0].id;
        let row = store.delivery(id).await.expect("read").expect("row");
        assert_eq!(row.reason, Some(DeadReason::Undecodable));
        let why = row.last_error.unwrap_or_default();
        assert!(why.contains("deserializ"), "says why: {why}");
        assert_eq!(receiver.count(), 2, "the undecodable row was never sent");
    })
    .await;
}

#[tokio::test]
async fn attempt_errors_never_show_the_urls_query_string() {
    with_store(|store| async move {
        // Nothing listens there: a connection error, whose message would
        // name the URL.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let url = format!("http://127.0.0.1:{port}/hook?token=s3cr3t-in-query");
        let mut settings = settings(vec![bot("secret", &url, &[secret(1)])]);
        settings.defaults.delivery_budget_secs = 1;
        let conv = key("secret", "c");
        insert(&store, &[(conv.clone(), message(1, "x"))]).await;
        let running = start(&settings, &store, None, fast_config());
        eventually(Duration::from_secs(10), "dead", || async { statuses(&store, &conv).await == ["dead"] })
            .await;
        running.stop().await;
        let id = store.webhook_deliveries_of(&conv).await.expect("rows")[0].id;
        let row = store.delivery(id).await.expect("read").expect("row");
        let mut texts: Vec<String> = row.last_error.into_iter().collect();
        texts
            .extend(store.delivery_attempts(id).await.expect("attempts").into_iter().filter_map(|a| a.error));
        assert!(!texts.is_empty());
        for text in texts {
            assert!(!text.contains("s3cr3t"), "the query string leaked: {text}");
        }
    })
    .await;
}
