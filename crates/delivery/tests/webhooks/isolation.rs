//! One bot's endpoint fails (500s, slowly) for a minute, as the issue asks,
//! while another bot's deliveries keep
//! their normal latency; the failing endpoint is probed, not hammered, and
//! gets everything in order once it recovers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{
    Receiver, Reply, bot, eventually, fast_config, insert, key, message, secret, settings, start, with_store,
};

const OUTAGE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_failing_endpoint_never_delays_another() {
    with_store(|store| async move {
        let failing = Receiver::start().await;
        let healthy = Receiver::start().await;
        let outage_started = Instant::now();
        failing.respond(move |_, _, _| {
            if outage_started.elapsed() < OUTAGE {
                Reply { status: 500, retry_after: None, delay: Duration::from_millis(300) }
            } else {
                Reply::status(200)
            }
        });
        let mut settings = settings(vec![
            bot("failing", &failing.url(), &[secret(1)]),
            bot("healthy", &healthy.url(), &[secret(2)]),
        ]);
        settings.webhooks.breaker_failures = 5;
        settings.webhooks.breaker_cooldown_secs = 2;
        // The backlog must outlive the outage, so its budget is longer than it.
        settings.defaults.delivery_budget_secs = 600;
        let running = start(&settings, &store, None, fast_config());

        // A backlog for the failing bot: 100 conversations, 3 webhooks each.
        let mut backlog = Vec::new();
        for c in 0..100 {
            for sequence in 1..=3 {
                backlog.push((key("failing", &format!("f-{c}")), message(sequence, "x")));
            }
        }
        insert(&store, &backlog).await;

        // Meanwhile the healthy bot gets a webhook every 200 ms.
        let sent: Arc<Mutex<HashMap<(String, u64), Instant>>> = Arc::default();
        let mut sequences: HashMap<String, u64> = HashMap::new();
        let mut n = 0usize;
        while outage_started.elapsed() < OUTAGE - Duration::from_secs(1) {
            let conversation = format!("h-{}", n % 5);
            let sequence = sequences.entry(conversation.clone()).or_default();
            *sequence += 1;
            sent.lock().expect("lock").insert((conversation.clone(), *sequence), Instant::now());
            insert(&store, &[(key("healthy", &conversation), message(*sequence, "y"))]).await;
            n += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eventually(Duration::from_secs(5), "healthy deliveries", || async { healthy.acked().len() == n })
            .await;

        let sent = sent.lock().expect("lock").clone();
        let mut latencies: Vec<Duration> = healthy
            .acked()
            .iter()
            .map(|r| r.at.duration_since(sent[&(r.conversation(), r.sequence())]))
            .collect();
        latencies.sort();
        let median = latencies[latencies.len() / 2];
        let max = latencies[latencies.len() - 1];
        println!("healthy bot: {n} webhooks during the outage, median {median:?}, max {max:?}");
        assert!(max < Duration::from_millis(1500), "healthy bot delayed: max latency {max:?}");
        assert!(median < Duration::from_millis(500), "healthy bot slowed: median latency {median:?}");
        assert_eq!(healthy.count(), n, "the healthy endpoint got each webhook once");

        // The breaker kept the failing endpoint from being hammered: without it
        // 8 concurrent requests every 300 ms would be ~1,600 in 60 s; with a
        // 2 s cooldown the breaker lets through about one probe per cooldown.
        let during_outage = failing.received().iter().filter(|r| r.status == 500).count();
        println!("failing endpoint: {during_outage} attempts during the outage");
        assert!((5..=180).contains(&during_outage), "{during_outage} attempts during the outage");

        // It recovers: everything arrives, each conversation in order.
        eventually(Duration::from_secs(30), "backlog delivered", || async { failing.acked().len() == 300 })
            .await;
        running.stop().await;
        let mut received = failing.received();
        received.sort_by_key(|r| r.at);
        let mut acked: HashMap<String, u64> = HashMap::new();
        for request in received {
            let last = acked.entry(request.conversation()).or_default();
            assert_eq!(request.sequence(), *last + 1, "out of order in {}", request.conversation());
            if request.status == 200 {
                *last += 1;
            }
        }
    })
    .await;
}
