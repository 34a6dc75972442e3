//! Chaos against the real binaries (issue 11): 2 ingress and 2 worker
//! processes of `escalations`, conversations under load from this process
//! (agent messages to widget streams, visitor messages to the webhook sink),
//! and one fault per scenario. Each scenario stops by itself (bounded in time
//! and in requests), prints its counts and asserts, on widget streams (live
//! and read again) and webhooks alike: 0 lost, 0 reordered, 0 applied twice,
//! 0 valid events dead-lettered, and no answer but 200 or 503 to a valid
//! request (docs/protocol.md §6; docs/reliability.md lists the figures).
//!
//! One scenario SIGKILLs an ingress under its live widget streams: each
//! must resume on the other ingress with every event once, in order. One
//! cuts the network links of every process to both services
//! (`support/netcut.rs`), leaving the services running.
//!
//! Restarts touch only private nodes (`support/nodes.rs`): a RabbitMQ node
//! and a PostgreSQL cluster started for the scenario and removed after it,
//! never the machine's services, which other tests use meanwhile.
//! Scenarios run one at a time (they share 2 cores); the binary takes about
//! 5–6 minutes.

#[path = "support/deployment.rs"]
mod deployment;
#[path = "support/netcut.rs"]
mod netcut;
#[path = "support/nodes.rs"]
mod nodes;
#[path = "support/scenario.rs"]
mod scenario;
#[path = "support/workload.rs"]
mod workload;

use std::time::{Duration, Instant};

use deployment::Sink;
use netcut::{Proxy, target_of, through};
use nodes::{PrivatePostgres, PrivateRabbit};
use scenario::{Run, layout};

/// One scenario at a time: each loads both cores, and a restart in one
/// would blur another's figures.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PACE: Duration = Duration::from_millis(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_sigkilled_every_few_seconds_under_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let sink = Sink::start().await;
    let mut run = Run::start("sigkill", sink.clone(), layout(&sink, 3000), PACE, false).await;
    const KILLS: usize = 6;
    for kill in 0..KILLS {
        run.load_for(Duration::from_secs(3)).await;
        // The older of the two, then the other: every worker dies once in a while.
        run.deployment.kill_worker(kill % 2);
        run.deployment.spawn_worker("worker.toml");
    }
    run.load_for(Duration::from_secs(3)).await;
    run.faults.push(format!("{KILLS} SIGKILLs of a worker, 3 s apart, each replaced at once"));
    run.finish().await.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_restart_loses_nothing_and_the_ingress_answers_503_meanwhile() {
    let _serial = SERIAL.lock().await;
    let mut rabbit = tokio::task::block_in_place(PrivateRabbit::start);
    let sink = Sink::start().await;
    let mut layout = layout(&sink, 3000);
    layout.amqp_url = Some(rabbit.url());
    let mut run = Run::start("rabbitmq-restart", sink.clone(), layout, PACE, false).await;
    run.load_for(Duration::from_secs(4)).await;
    let stopping = Instant::now();
    tokio::task::block_in_place(|| rabbit.stop());
    let down = Instant::now();
    run.load_for(Duration::from_secs(6)).await;
    let restarting = Instant::now();
    tokio::task::block_in_place(|| rabbit.start_again());
    let up = Instant::now();
    // While the node was down (from shortly after it exited to the moment it
    // was started again) nothing can be confirmed: no 200.
    let (ok, unavailable) = run.clients.tally.answered_between(down + Duration::from_millis(500), restarting);
    run.load_for(Duration::from_secs(6)).await;
    run.faults.push(format!(
        "RabbitMQ node stopped ({:.1} s to stop), down {:.1} s, {:.1} s to start; while down: {ok} × 200, {unavailable} × 503",
        (down - stopping).as_secs_f64(),
        (up - down).as_secs_f64(),
        (up - restarting).as_secs_f64()
    ));
    let report = run.finish().await;
    drop(rabbit);
    assert_eq!(ok, 0, "no 200 while the broker was down");
    assert!(unavailable > 0, "the ingress answered 503 while the broker was down");
    report.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_longer_than_the_lease_ttl_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut postgres = tokio::task::block_in_place(PrivatePostgres::start);
    let sink = Sink::start().await;
    const LEASE_TTL_MS: u64 = 2000;
    let mut layout = layout(&sink, LEASE_TTL_MS);
    layout.database_url = Some(postgres.url());
    let mut run = Run::start("postgres-restart", sink.clone(), layout, PACE, false).await;
    run.load_for(Duration::from_secs(4)).await;
    tokio::task::block_in_place(|| postgres.stop("fast"));
    let down = Instant::now();
    run.load_for(Duration::from_millis(3 * LEASE_TTL_MS)).await;
    tokio::task::block_in_place(|| postgres.start_again());
    let outage = down.elapsed();
    run.deployment.wait_for_shards().await;
    run.load_for(Duration::from_secs(5)).await;
    run.faults.push(format!(
        "PostgreSQL down {:.1} s (lease TTL {:.1} s)",
        outage.as_secs_f64(),
        LEASE_TTL_MS as f64 / 1000.0
    ));
    let report = run.finish().await;
    drop(postgres);
    report.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_from_both_services_loses_nothing_and_the_ingress_answers_503_meanwhile() {
    let _serial = SERIAL.lock().await;
    // Every process reaches RabbitMQ and PostgreSQL through a proxy of this
    // test's; cutting both drops every connection and refuses new ones, as a
    // broken link would, while the services themselves keep running.
    let (amqp, pg) = (deployment::amqp_url(), deployment::database_url());
    let rabbitmq = Proxy::start(target_of(&amqp)).await;
    let postgres = Proxy::start(target_of(&pg)).await;
    let sink = Sink::start().await;
    let mut layout = layout(&sink, 3000);
    layout.amqp_url = Some(through(&amqp, rabbitmq.addr.port()));
    layout.database_url = Some(through(&pg, postgres.addr.port()));
    let mut run = Run::start("network-cut", sink.clone(), layout, PACE, false).await;
    run.load_for(Duration::from_secs(4)).await;
    rabbitmq.cut();
    postgres.cut();
    let cut = Instant::now();
    run.load_for(Duration::from_secs(6)).await;
    let restoring = Instant::now();
    rabbitmq.restore().await;
    postgres.restore().await;
    // While cut off, nothing can be confirmed: no 200.
    let (ok, unavailable) = run.clients.tally.answered_between(cut + Duration::from_millis(500), restoring);
    run.deployment.wait_for_shards().await;
    run.load_for(Duration::from_secs(6)).await;
    run.faults.push(format!(
        "RabbitMQ and PostgreSQL links cut {:.1} s (lease TTL 3 s); while cut: {ok} × 200, {unavailable} × 503",
        (restoring - cut).as_secs_f64()
    ));
    let report = run.finish().await;
    assert_eq!(ok, 0, "no 200 while the broker was out of reach");
    assert!(unavailable > 0, "the ingress answered 503 while the broker was out of reach");
    report.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_endpoint_failing_then_recovering_gets_everything_in_order() {
    let _serial = SERIAL.lock().await;
    let sink = Sink::start().await;
    let mut run = Run::start("endpoint-down", sink.clone(), layout(&sink, 3000), PACE, false).await;
    run.load_for(Duration::from_secs(3)).await;
    let before = sink.requests();
    sink.answer(500);
    run.load_for(Duration::from_secs(8)).await;
    let refused = sink.requests() - before;
    sink.answer(200);
    run.load_for(Duration::from_secs(4)).await;
    run.faults.push(format!("endpoint answered 500 for 8 s ({refused} requests refused)"));
    let report = run.finish().await;
    assert!(refused > 0, "the dispatcher tried the failing endpoint");
    report.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_widget_stream_resumes_on_the_other_ingress_when_its_own_is_sigkilled() {
    let _serial = SERIAL.lock().await;
    let sink = Sink::start().await;
    // Every live stream opens on ingress 0 (a follower's first attempt) and
    // stays there until it breaks; then it reconnects to ingress 1 with
    // `Last-Event-ID` (docs/protocol.md §3.3).
    let mut run = Run::start("ingress-sigkill", sink.clone(), layout(&sink, 3000), PACE, false).await;
    run.load_for(Duration::from_secs(4)).await;
    let killed = Instant::now();
    run.deployment.kill_ingress(0);
    // Agent and visitor messages keep coming (each client moves to ingress 1
    // once ingress 0 refuses it); ingress 0 is not started again.
    run.load_for(Duration::from_secs(6)).await;
    let (ok, _) = run.clients.tally.answered_between(killed, Instant::now());
    run.faults.push(format!("ingress 0 SIGKILLed mid-stream, not restarted; {ok} × 200 after the kill"));
    let report = run.finish().await;
    assert!(ok > 0, "events kept flowing after the kill");
    assert_eq!(
        report.streams_switched, report.conversations,
        "every live stream broke on the killed ingress and resumed on the other: {report:#?}"
    );
    assert!(
        report.live_by_ingress.len() == 2 && report.live_by_ingress.iter().all(|&n| n > 0),
        "live events came from both ingress: {:?}",
        report.live_by_ingress
    );
    // Exactly once, in order, no gap, on the live streams (and read again).
    report.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_events_posted_twice_are_applied_once() {
    let _serial = SERIAL.lock().await;
    let sink = Sink::start().await;
    let mut run = Run::start("posted-twice", sink.clone(), layout(&sink, 3000), PACE, true).await;
    run.replay = true;
    run.load_for(Duration::from_secs(8)).await;
    run.faults.push("every event posted twice (the second to the other ingress)".into());
    run.finish().await.assert_clean();
}
