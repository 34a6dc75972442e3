//! With the receiver failing then recovering, each conversation's deliveries
//! arrive in sequence order, each `webhook-id` sent until acknowledged; and
//! two dispatchers sharing the outbox keep that.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use delivery::webhook_id;

use crate::support::{
    Received, Receiver, Reply, bot, eventually, fast_config, insert, key, message, secret, settings, start,
    statuses, with_store,
};

const CONVERSATIONS: usize = 6;
const SEQUENCES: u64 = 5;

/// Every conversation's requests, in arrival order.
fn by_conversation(received: &[Received]) -> HashMap<String, Vec<Received>> {
    let mut sorted = received.to_vec();
    sorted.sort_by_key(|r| r.at);
    let mut out: HashMap<String, Vec<Received>> = HashMap::new();
    for request in sorted {
        out.entry(request.conversation()).or_default().push(request);
    }
    out
}

/// Nothing of sequence n+1 arrives before n was acknowledged, and every
/// sequence is sent (same id) until acknowledged.
fn assert_ordered(bot_id: &str, received: &[Received]) {
    let conversations = by_conversation(received);
    assert_eq!(conversations.len(), CONVERSATIONS);
    for (conversation, requests) in conversations {
        let mut acked = 0u64;
        for request in &requests {
            let sequence = request.sequence();
            assert_eq!(
                sequence,
                acked + 1,
                "{conversation}: got {sequence} while {acked} was the last acked"
            );
            assert_eq!(request.id(), webhook_id(bot_id, &conversation, sequence));
            if (200..300).contains(&request.status) {
                acked = sequence;
            }
        }
        assert_eq!(acked, SEQUENCES, "{conversation}: every sequence acknowledged");
    }
}

async fn queue_all(store: &store::Store, bot_id: &str) {
    let mut rows = Vec::new();
    for c in 0..CONVERSATIONS {
        for sequence in 1..=SEQUENCES {
            rows.push((key(bot_id, &format!("conv-{c}")), message(sequence, &format!("m{sequence}"))));
        }
    }
    insert(store, &rows).await;
}

#[tokio::test]
async fn failing_then_recovering_receiver_gets_every_conversation_in_order() {
    with_store(|store| async move {
        let receiver = Receiver::start().await;
        // Down for a second, then every third request fails (5xx or timeout-ish 503).
        let started = Instant::now();
        receiver.respond(move |n, _, _| {
            if started.elapsed() < Duration::from_secs(1) || n % 3 == 0 {
                Reply::status(if n % 2 == 0 { 500 } else { 503 })
            } else {
                Reply::status(200)
            }
        });
        let settings = settings(vec![bot("flaky", &receiver.url(), &[secret(1)])]);
        let running = start(&settings, &store, None, fast_config());
        queue_all(&store, "flaky").await;
        eventually(Duration::from_secs(30), "all delivered", || async {
            receiver.acked().len() == CONVERSATIONS * SEQUENCES as usize
        })
        .await;
        running.stop().await;
        assert!(receiver.count() > receiver.acked().len(), "some attempts failed");
        assert_ordered("flaky", &receiver.received());
        for c in 0..CONVERSATIONS {
            assert!(
                statuses(&store, &key("flaky", &format!("conv-{c}"))).await.iter().all(|s| s == "delivered")
            );
        }
    })
    .await;
}

#[tokio::test]
async fn two_dispatchers_share_the_outbox_without_breaking_order() {
    with_store(|store| async move {
        let receiver = Receiver::start().await;
        receiver
            .respond(|n, _, _| Reply { status: if n % 4 == 1 { 502 } else { 200 }, ..Reply::status(200) });
        let settings = settings(vec![bot("shared", &receiver.url(), &[secret(1)])]);
        let one = start(&settings, &store, None, fast_config());
        let two = start(&settings, &store, None, fast_config());
        queue_all(&store, "shared").await;
        eventually(Duration::from_secs(30), "all delivered", || async {
            receiver.acked().len() >= CONVERSATIONS * SEQUENCES as usize
        })
        .await;
        one.stop().await;
        two.stop().await;
        assert_eq!(
            receiver.acked().len(),
            CONVERSATIONS * SEQUENCES as usize,
            "no delivery acknowledged twice"
        );
        assert_ordered("shared", &receiver.received());
    })
    .await;
}
