//! docs/protocol.md §3's widget stream end to end: agent events in over HTTP, out of the
//! worker's live fan-out and the database backlog, onto `text/event-stream`.

use std::time::{Duration, Instant};

use e2e::{SseEvent, System};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events.iter().map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_escalation_arrives_on_the_stream_in_order() {
    let sys = System::start().await;
    let conv = "conv-stream";
    let (escalation_id, token) = sys.escalate(conv).await;
    let mut stream = sys.stream(&sys.base, conv, &token, None).await.expect("stream opens");
    let first = stream.take(1, WAIT).await;
    assert_eq!(names(&first), ["escalationRequested"]);

    sys.agent(json!({"eventType": "escalationQueueUpdate", "platformConversationId": conv, "queuePosition": 4, "waitingTime": "7"}))
        .await;
    sys.agent(json!({"eventType": "escalationSuccess", "platformConversationId": conv, "agent": "Jo"})).await;
    sys.agent(json!({"eventType": "message", "platformConversationId": conv, "text": "Hi, Jo here", "eventId": "m-1"}))
        .await;
    assert_eq!(sys.visitor_end(conv, &token).await, 200);
    let rest = stream.take(4, WAIT).await;
    assert_eq!(names(&rest), ["escalationQueueUpdate", "escalationSuccess", "message", "sessionEnded"]);
    assert_eq!(ids(&rest), [2, 3, 4, 5]);
    assert_eq!(rest[0].data["queuePosition"], 4);
    assert_eq!(rest[0].data["waitingTime"], "7", "display values are shown as given");
    assert_eq!(rest[1].data["agent"], "Jo");
    assert_eq!(rest[2].data["text"], "Hi, Jo here");
    assert!(rest.iter().all(|e| e.data["escalationId"] == escalation_id.as_str()));
    assert!(rest.iter().all(|e| e.data["sequence"] == e.id));
    assert_eq!(stream.next(Duration::from_millis(500)).await, None, "nothing more");
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_to_another_instance_resumes_without_loss_or_repeat() {
    let mut sys = System::start().await;
    let other = sys.start_ingress().await;
    let conv = "conv-resume";
    let (_, token) = sys.escalate(conv).await;
    let mut stream = sys.stream(&sys.base, conv, &token, None).await.expect("stream opens");
    sys.agent(
        json!({"eventType": "escalationQueueUpdate", "platformConversationId": conv, "queuePosition": 9}),
    )
    .await;
    assert_eq!(ids(&stream.take(2, WAIT).await), [1, 2]);
    drop(stream);

    sys.agent(
        json!({"eventType": "escalationQueueUpdate", "platformConversationId": conv, "queuePosition": 8}),
    )
    .await;
    sys.agent(json!({"eventType": "escalationSuccess", "platformConversationId": conv})).await;
    sys.wait_events(conv, 4).await;

    let mut resumed = sys.stream(&other, conv, &token, Some(2)).await.expect("stream opens");
    let missed = resumed.take(2, WAIT).await;
    assert_eq!(ids(&missed), [3, 4]);
    assert_eq!(missed[0].data["queuePosition"], 8);
    assert_eq!(resumed.next(Duration::from_millis(500)).await, None, "no repeats");
    sys.agent(json!({"eventType": "message", "platformConversationId": conv, "text": "live again"})).await;
    let live = resumed.take(1, WAIT).await;
    assert_eq!((ids(&live), live[0].data["text"].clone()), (vec![5], json!("live again")));
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_opens_only_its_own_conversation() {
    let sys = System::start().await;
    let (_, token_a) = sys.escalate("conv-a").await;
    sys.escalate("conv-b").await;
    assert_eq!(sys.stream(&sys.base, "conv-b", &token_a, None).await.err(), Some(401));
    assert_eq!(sys.stream(&sys.base, "conv-a", "forged.token", None).await.err(), Some(401));
    let expired = e2e::widget_token("conv-a", chrono::Utc::now() - chrono::TimeDelta::seconds(61));
    assert_eq!(sys.stream(&sys.base, "conv-a", &expired, None).await.err(), Some(401), "expired");
    let fresh = e2e::widget_token("conv-a", chrono::Utc::now());
    assert!(sys.stream(&sys.base, "conv-a", &fresh, None).await.is_ok(), "the same token, unexpired");
    assert!(sys.stream(&sys.base, "conv-a", &token_a, None).await.is_ok());
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_streams_each_get_their_own_events_in_order() {
    const N: usize = 500;
    let sys = System::start().await;
    let started = Instant::now();
    let convs: Vec<String> = (0..N).map(|i| format!("conv-load-{i}")).collect();
    let mut opened = Vec::with_capacity(N);
    for chunk in convs.chunks(50) {
        let batch = chunk.iter().map(|conv| async {
            let (escalation, token) = sys.escalate(conv).await;
            let stream = sys.stream(&sys.base, conv, &token, None).await.expect("stream opens");
            (escalation, stream)
        });
        opened.extend(futures_join(batch).await);
    }
    for round in 0..2u32 {
        let posts = convs.iter().enumerate().map(|(i, conv)| {
            sys.agent(json!({"eventType": "escalationQueueUpdate", "platformConversationId": conv, "queuePosition": i as u32 * 10 + round}))
        });
        for (status, body) in futures_join(posts).await {
            assert_eq!(status, 200, "{body}");
        }
    }
    let checks = opened.into_iter().enumerate().map(|(i, (escalation, mut stream))| async move {
        let events = stream.take(3, Duration::from_secs(30)).await;
        assert_eq!(ids(&events), [1, 2, 3], "conversation {i}");
        assert!(events.iter().all(|e| e.data["escalationId"] == escalation.as_str()), "conversation {i}");
        assert_eq!(events[1].data["queuePosition"], i * 10);
        assert_eq!(events[2].data["queuePosition"], i * 10 + 1);
        assert_eq!(stream.next(Duration::from_millis(200)).await, None, "conversation {i}: nothing else");
    });
    futures_join(checks).await;
    assert!(started.elapsed() < Duration::from_secs(90), "took {:?}", started.elapsed());
    sys.stop().await;
}

async fn futures_join<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<F> = futures.into_iter().collect();
    let mut out = Vec::with_capacity(handles.len());
    // join_all keeps order and polls concurrently.
    out.extend(futures::future::join_all(handles).await);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_heartbeats() {
    let mut sys = System::start().await;
    sys.settings.http.sse_heartbeat_secs = 1;
    let fast = sys.start_ingress().await;
    let conv = "conv-idle";
    let (_, token) = sys.escalate(conv).await;
    let mut stream = sys.stream(&fast, conv, &token, Some(1)).await.expect("stream opens");
    assert_eq!(stream.next(Duration::from_millis(2500)).await, None, "nothing after sequence 1");
    assert!(stream.heartbeats >= 1, "heartbeats: {}", stream.heartbeats);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_keeps_receiving_after_the_live_connection_drops() {
    const QUICK: Duration = Duration::from_secs(5);
    let sys = System::start().await;
    let conv = "conv-live-drop";
    let (_, token) = sys.escalate(conv).await;
    let mut stream = sys.stream(&sys.base, conv, &token, None).await.expect("stream opens");
    assert_eq!(ids(&stream.take(1, WAIT).await), [1]);
    let reconnects = sys.counter("escalations_ingress_live_reconnects_total").await;

    assert_eq!(sys.close_live_connections().await, 1, "the hub's connection is found by its name");
    // Posted at once: some land while the hub is disconnected, some after.
    for position in 1..=5 {
        let event = json!({"eventType": "escalationQueueUpdate", "platformConversationId": conv, "queuePosition": position});
        assert_eq!(sys.agent(event).await.0, 200);
    }
    // Well within the 15 s heartbeat: the same stream, nothing lost or repeated.
    let started = Instant::now();
    let after = stream.take(5, QUICK).await;
    assert_eq!(ids(&after), [2, 3, 4, 5, 6], "after {:?}", started.elapsed());
    let positions: Vec<_> = after.iter().map(|e| e.data["queuePosition"].clone()).collect();
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    e2e::eventually("the hub counts its reconnect", QUICK, || async {
        (sys.counter("escalations_ingress_live_reconnects_total").await > reconnects).then_some(())
    })
    .await;

    // And the new connection's binding carries what comes next.
    sys.agent(json!({"eventType": "escalationSuccess", "platformConversationId": conv, "agent": "Jo"})).await;
    let next = stream.take(1, QUICK).await;
    assert_eq!((ids(&next), names(&next)), (vec![7], vec!["escalationSuccess"]));
    assert_eq!(stream.next(Duration::from_millis(500)).await, None, "no repeats");
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_takes_the_token_from_the_query_string() {
    let sys = System::start().await;
    let conv = "conv-query-token";
    let (_, token) = sys.escalate(conv).await;
    let (_, other_token) = sys.escalate("conv-query-other").await;
    let mut stream = sys.stream_with_query_token(&sys.base, conv, &token).await.expect("stream opens");
    assert_eq!(names(&stream.take(1, WAIT).await), ["escalationRequested"]);
    sys.agent(json!({"eventType": "escalationSuccess", "platformConversationId": conv, "agent": "Jo"})).await;
    let live = stream.take(1, WAIT).await;
    assert_eq!((ids(&live), names(&live)), (vec![2], vec!["escalationSuccess"]));

    assert_eq!(sys.stream_with_query_token(&sys.base, conv, "forged.token").await.err(), Some(401));
    assert_eq!(sys.stream_with_query_token(&sys.base, conv, &other_token).await.err(), Some(401));
    assert_eq!(sys.stream_with_query_token(&sys.base, conv, "").await.err(), Some(401));
    // Only the stream takes it: the widget's other endpoints keep to the header.
    let end = sys
        .http
        .post(format!("{}/widget/v1/conversations/{conv}/end", sys.base))
        .query(&[("access_token", token.as_str())])
        .send()
        .await
        .expect("request");
    assert_eq!(end.status().as_u16(), 401);
    sys.stop().await;
}

/// docs/protocol.md §5, issue 11: a refused visitor message (held queue full) or `end`
/// (no escalation left) is told to the widget on its stream as
/// `visitorRejected{code}`, and stays in the conversation's widget stream
/// (which `escalations conversations show` lists).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_visitor_messages_and_ends_are_told_on_the_stream() {
    let sys = System::start_with(", max_held_messages = 1").await;
    let conv = "conv-refused";
    let (_, token) = sys.escalate(conv).await;
    let mut stream = sys.stream(&sys.base, conv, &token, None).await.expect("stream opens");
    assert_eq!(names(&stream.take(1, WAIT).await), ["escalationRequested"]);

    assert_eq!(sys.visitor(conv, &token, "held").await, 200);
    let response = sys
        .http
        .post(format!("{}/widget/v1/conversations/{conv}/messages", sys.base))
        .bearer_auth(&token)
        .json(&json!({"text": "one too many", "clientMessageId": "c-2"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200, "accepted; refused by the worker");
    let refused = stream.take(1, WAIT).await;
    assert_eq!(names(&refused), ["visitorRejected"]);
    assert_eq!(refused[0].data["code"], "held_messages_full");
    assert_eq!(refused[0].data["messageId"], "c-2");

    assert_eq!(sys.visitor_end(conv, &token).await, 200);
    assert_eq!(sys.visitor_end(conv, &token).await, 200);
    let rest = stream.take(2, WAIT).await;
    assert_eq!(names(&rest), ["sessionEnded", "visitorRejected"]);
    assert_eq!(rest[1].data["code"], "no_active_escalation");
    assert!(rest[1].data.get("messageId").is_none());

    let stored = sys.store.widget_events(&sys.key(conv), 0).await.expect("widget events");
    let names: Vec<_> = stored.iter().map(|e| e.event.name()).collect();
    assert_eq!(names, ["escalationRequested", "visitorRejected", "sessionEnded", "visitorRejected"]);
    sys.stop().await;
}
