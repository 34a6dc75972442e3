//! docs/protocol.md §2's query endpoints end to end: what the worker recorded, read back
//! over HTTP, scoped to the bot of the API key; and the lenient display fields
//! (values shown as given, a bad avatar dropped with a warning).

use std::time::Duration;

use e2e::{KEY, OTHER_KEY, System, eventually};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_shows_its_state_and_recent_verdicts() {
    let sys = System::start().await;
    let conv = "conv-query";
    let path = format!("/agent/converse/conversations/{conv}");
    let (status, body) = sys.get(&path, KEY).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_conversation")), "{body}");

    let (escalation_id, _token) = sys.escalate(conv).await;
    sys.agent(json!({"eventType": "message", "platformConversationId": conv, "text": "too early"})).await;
    sys.agent(
        json!({"eventType": "escalationQueueUpdate", "platformConversationId": conv, "queuePosition": 2}),
    )
    .await;
    sys.agent(json!({"eventType": "escalationSuccess", "platformConversationId": conv, "agent": "Ann"}))
        .await;
    sys.wait_events(conv, 4).await;

    let (status, body) = sys.get(&path, KEY).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["phase"], "connected");
    assert_eq!(body["escalationId"], escalation_id.as_str());
    assert_eq!(body["agent"]["name"], "Ann");
    assert_eq!(body["queue"]["position"], 2);
    assert_eq!(body["lastWidgetSequence"], 3);
    let events: Vec<(String, String, Option<String>)> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["eventType"].as_str().expect("type").to_owned(),
                e["status"].as_str().expect("status").to_owned(),
                e["code"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let own = |t: &str, s: &str, c: Option<&str>| (t.to_owned(), s.to_owned(), c.map(str::to_owned));
    assert_eq!(
        events,
        [
            own("escalate", "applied", None),
            own("message", "rejected", Some("not_connected")),
            own("escalationQueueUpdate", "applied", None),
            own("escalationSuccess", "applied", None),
        ]
    );

    // Another bot's key: the same answer as a conversation that does not exist.
    let (status, body) = sys.get(&path, OTHER_KEY).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_conversation")), "{body}");
    assert!(body.get("phase").is_none());
    let (status, _) = sys.get(&path, "not-a-key-at-all-000").await;
    assert_eq!(status, 401);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_shows_its_verdict() {
    let sys = System::start().await;
    let conv = "conv-event-query";
    sys.escalate(conv).await;
    let early =
        json!({"eventType": "message", "platformConversationId": conv, "text": "hi", "eventId": "ev-early"});
    assert_eq!(sys.agent(early).await.0, 200);
    let connect =
        json!({"eventType": "escalationSuccess", "platformConversationId": conv, "eventId": "ev-ok"});
    assert_eq!(sys.agent(connect).await.0, 200);

    let (status, body) = eventually("ev-ok applied", Duration::from_secs(20), || async {
        let answer = sys.get("/agent/converse/events/ev-ok", KEY).await;
        (answer.0 == 200).then_some(answer)
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!((body["eventId"].as_str(), body["status"].as_str()), (Some("ev-ok"), Some("applied")));
    assert!(body.get("code").is_none(), "{body}");

    let (status, body) = sys.get("/agent/converse/events/ev-early", KEY).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["status"].as_str(), body["code"].as_str()), (Some("rejected"), Some("not_connected")));

    let (status, body) = sys.get("/agent/converse/events/never-sent", KEY).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_event")), "{body}");
    let (status, body) = sys.get("/agent/converse/events/ev-ok", OTHER_KEY).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_event")), "{body}");
    let (status, _) = sys.get("/agent/converse/events/ev-ok", "Bearer wrong-key-000000000").await;
    assert_eq!(status, 401);
    sys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn display_fields_are_shown_as_given_and_a_bad_avatar_is_dropped_with_a_warning() {
    let sys = System::start().await;
    let conv = "conv-display";
    sys.escalate(conv).await;

    let bad =
        json!({"eventType": "escalationQueueUpdate", "platformConversationId": conv, "queuePosition": true});
    let (status, body) = sys.agent(bad).await;
    assert_eq!((status, body["details"][0]["field"].as_str()), (400, Some("queuePosition")), "{body}");
    let queue = json!({"eventType": "escalationQueueUpdate", "platformConversationId": conv,
                       "queuePosition": "5-10", "waitingTime": 12});
    assert_eq!(sys.agent(queue).await.0, 200);

    let connect = json!({"eventType": "escalationSuccess", "platformConversationId": conv, "agent": "Ann",
                         "agentAvatar": "http://cdn.example/ann.png", "eventId": "ev-avatar"});
    let (status, body) = sys.agent_waiting(connect, 5).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("applied")), "{body}");
    let warning = &body["warnings"][0];
    assert_eq!(
        (warning["field"].as_str(), warning["code"].as_str()),
        (Some("agentAvatar"), Some("not_https"))
    );

    let (status, body) = sys.get("/agent/converse/events/ev-avatar", KEY).await;
    assert_eq!((status, body["warnings"][0]["field"].as_str()), (200, Some("agentAvatar")), "{body}");
    let (_, body) = sys.get(&format!("/agent/converse/conversations/{conv}"), KEY).await;
    assert_eq!((&body["queue"]["position"], &body["queue"]["waitingTime"]), (&json!("5-10"), &json!(12)));
    assert_eq!((&body["agent"]["name"], &body["agent"]["avatar"]), (&json!("Ann"), &Value::Null));

    let widget = sys.store.widget_events(&sys.key(conv), 0).await.expect("widget events");
    let wire: Vec<Value> = widget.iter().map(|w| serde_json::to_value(w).expect("json")).collect();
    assert_eq!((&wire[1]["queuePosition"], &wire[1]["waitingTime"]), (&json!("5-10"), &json!(12)));
    assert_eq!(wire[2]["type"], "escalationSuccess");
    assert!(wire[2].get("agentAvatar").is_none(), "dropped: {}", wire[2]);
    sys.stop().await;
}
