//! `Prefer: wait=N` end to end (docs/protocol.md §2): the agent API answers with the
//! worker's verdict, which the worker sends straight to the ingress's live
//! queue (the command's `reply_to`).

use e2e::System;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_caller_gets_the_verdict() {
    let sys = System::start().await;
    let conv = "conv-wait";
    sys.escalate(conv).await;
    sys.wait_events(conv, 1).await;

    let early = json!({"eventType": "message", "platformConversationId": conv, "text": "hello?"});
    let (status, body) = sys.agent_waiting(early, 5).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        (body["error"].as_str(), body["currentState"].as_str()),
        (Some("not_connected"), Some("requested"))
    );

    let connect = json!({"eventType": "escalationSuccess", "platformConversationId": conv, "agent": "Ann"});
    let (status, body) = sys.agent_waiting(connect, 5).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["currentState"].as_str()),
        (Some("applied"), Some("connected"))
    );

    let message =
        json!({"eventType": "message", "platformConversationId": conv, "text": "hi", "eventId": "w-1"});
    let (status, body) = sys.agent_waiting(message.clone(), 5).await;
    assert_eq!(
        (status, body["status"].as_str(), body["eventId"].as_str()),
        (200, Some("applied"), Some("w-1"))
    );
    let (status, body) = sys.agent_waiting(message, 5).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")), "{body}");

    // Two requests for one event at once: both hear of it, quickly.
    let same =
        json!({"eventType": "message", "platformConversationId": conv, "text": "twice", "eventId": "w-2"});
    let started = std::time::Instant::now();
    let ((a, body_a), (b, body_b)) =
        tokio::join!(sys.agent_waiting(same.clone(), 5), sys.agent_waiting(same, 5));
    assert_eq!((a, b), (200, 200), "{body_a} {body_b}");
    for body in [&body_a, &body_b] {
        assert!(matches!(body["status"].as_str(), Some("applied" | "duplicate")), "{body}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "answered by the reply, not the timeout");

    // Without the preference: the plain acknowledgement, as before.
    let (status, body) =
        sys.agent(json!({"eventType": "message", "platformConversationId": conv, "text": "x"})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("accepted")));
    sys.stop().await;
}

/// Issue 11: a caller's event id that looks like one of ours (`vm:…` is a
/// visitor message's, `timer:…` a fired timer's) is the caller's own event,
/// never a `duplicate` of ours, and never read back as ours (docs/protocol.md §2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_with_the_prefixes_of_ours_are_their_own_events() {
    let sys = System::start().await;
    let conv = "conv-spaces";
    let (_, token) = sys.escalate(conv).await;
    sys.wait_events(conv, 1).await;
    let response = sys
        .http
        .post(format!("{}/widget/v1/conversations/{conv}/messages", sys.base))
        .bearer_auth(&token)
        .json(&json!({"text": "hello", "clientMessageId": "m1"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    sys.wait_events(conv, 2).await;

    for id in ["vm:m1", "timer:x:no_response:1"] {
        let update = json!({"eventType": "escalationQueueUpdate", "platformConversationId": conv,
                            "queuePosition": 2, "eventId": id});
        let (status, body) = sys.agent_waiting(update, 5).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("applied")), "{id}: {body}");
    }
    let (status, body) = sys.get("/agent/converse/events/vm:m1", e2e::KEY).await;
    assert_eq!((status, body["eventType"].as_str()), (200, Some("escalationQueueUpdate")), "{body}");
    // The visitor's own message is still held, applied once.
    let events = sys.wait_events(conv, 4).await;
    let visitor: Vec<_> = events.iter().filter(|e| e.event_type == "visitorMessage").collect();
    assert_eq!(visitor.len(), 1);
    sys.stop().await;
}
