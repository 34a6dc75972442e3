//! Issue 4, through HTTP: 1,000 conversations × 20 events posted to the
//! ingress concurrently across conversations (serially within each), two
//! workers sharing the shards. Every conversation's effects arrive in order,
//! none missing, none twice.

use std::time::{Duration, Instant};

use domain::widget::WidgetEvent;
use e2e::{System, eventually};
use futures::StreamExt;
use serde_json::json;
use worker::{Worker, WorkerConfig};

const CONVERSATIONS: usize = 1_000;
const MESSAGES: usize = 18; // + escalate + success = 20 events each

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_conversations_of_twenty_events_with_two_workers() {
    let sys = System::start().await;
    let config = WorkerConfig {
        lease_ttl: Duration::from_secs(3),
        renew_every: Duration::from_millis(500),
        ..WorkerConfig::default()
    };
    let second = Worker::start(&sys.settings, config, None).await.expect("second worker");
    eventually("the second worker holds a share", Duration::from_secs(20), || async {
        (!second.shards().is_empty()).then_some(())
    })
    .await;

    let started = Instant::now();
    let sys_ref = &sys;
    futures::stream::iter(0..CONVERSATIONS)
        .map(|c| async move {
            let conv = format!("load-{c}");
            sys_ref.escalate(&conv).await;
            let (status, body) = sys_ref
                .agent(json!({"eventType": "escalationSuccess", "platformConversationId": conv, "agent": "Ann"}))
                .await;
            assert_eq!(status, 200, "{body}");
            for m in 1..=MESSAGES {
                let (status, body) = sys_ref
                    .agent(json!({"eventType": "message", "platformConversationId": conv, "text": format!("m-{m}")}))
                    .await;
                assert_eq!(status, 200, "{body}");
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    let posted = started.elapsed();
    let total = (CONVERSATIONS * (MESSAGES + 2)) as u64;
    eventually("every event recorded", Duration::from_secs(120), || async {
        (sys.store.count_events().await.expect("count") >= total).then_some(())
    })
    .await;
    println!("{total} events posted in {posted:?}, all committed after {:?}", started.elapsed());
    assert_eq!(sys.store.count_events().await.expect("count"), total, "none applied twice");

    for c in 0..CONVERSATIONS {
        let conv = format!("load-{c}");
        let widget = sys.store.widget_events(&sys.key(&conv), 0).await.expect("widget");
        let sequences: Vec<u64> = widget.iter().map(|w| w.sequence).collect();
        assert_eq!(sequences, (1..=(MESSAGES as u64 + 2)).collect::<Vec<_>>(), "{conv}: no gap, no repeat");
        let texts: Vec<&str> = widget
            .iter()
            .filter_map(|w| match &w.event {
                WidgetEvent::Message { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let expected: Vec<String> = (1..=MESSAGES).map(|m| format!("m-{m}")).collect();
        assert_eq!(texts, expected, "{conv}: in order");
    }
    second.stop().await.expect("second worker stops");
    sys.stop().await;
}
