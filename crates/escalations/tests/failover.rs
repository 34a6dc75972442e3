//! A PostgreSQL failover under load (issue 14): a private primary
//! (`support/nodes.rs`) whose commits wait for a streaming standby
//! (`pg_basebackup -R` on another port, synchronous replication), 2 ingress
//! and 2 worker processes of the real binary given both hosts
//! (`database.url` with `target_session_attrs=read-write`), conversations
//! under load as in `chaos.rs`. Mid-load the primary crashes (`pg_ctl stop
//! -m immediate`) and, a moment later, the standby is promoted.
//!
//! Asserted, on widget streams (live and read again) and webhooks alike: 0
//! lost, 0 reordered, 0 applied twice, every `200` applied, nothing
//! dead-lettered: leases, timers and outbox claims live in the database and
//! come through the switch. Printed: the counts and how long the database
//! was away. The machine's PostgreSQL (5432) is never touched; both clusters
//! are removed when the test ends, also when it fails. Bounded: about a
//! minute and a half.

#[path = "support/deployment.rs"]
mod deployment;
#[path = "support/nodes.rs"]
mod nodes;
#[path = "support/scenario.rs"]
mod scenario;
#[path = "support/workload.rs"]
mod workload;

use std::time::{Duration, Instant};

use deployment::Sink;
use nodes::PrivatePostgres;
use scenario::{Run, layout};

const PACE: Duration = Duration::from_millis(150);

/// One test at a time: the load test's figures are for 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_crash_and_a_standby_promotion_lose_nothing() {
    let _serial = SERIAL.lock().await;
    let mut primary = tokio::task::block_in_place(PrivatePostgres::start);
    let standby = tokio::task::block_in_place(|| primary.start_standby());
    tokio::task::block_in_place(|| primary.require_synchronous_standby());
    let sink = Sink::start().await;
    const LEASE_TTL_MS: u64 = 3000;
    let mut layout = layout(&sink, LEASE_TTL_MS);
    layout.database_url = Some(format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port, standby.port
    ));
    let mut run = Run::start("postgres-failover", sink.clone(), layout, PACE, false).await;
    run.load_for(Duration::from_secs(5)).await;

    let crashed = Instant::now();
    tokio::task::block_in_place(|| primary.stop("immediate"));
    // As long as a failover manager takes to notice.
    run.load_for(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| standby.promote());
    let promoted = crashed.elapsed();
    // Every lease renewed on the new primary: an expiry beyond any the old
    // primary could have written (those end by crash + TTL).
    let renewed_beyond = chrono::Utc::now() + chrono::Duration::milliseconds(LEASE_TTL_MS as i64 / 2);
    let store = run.deployment.store.clone();
    deployment::wait_for(Duration::from_secs(60), "every lease renewed on the new primary", || {
        let store = store.clone();
        async move {
            let leases = store.list_leases().await.unwrap_or_default();
            !leases.is_empty()
                && leases.iter().all(|l| l.holder.is_some() && l.expires_at > Some(renewed_beyond))
        }
    })
    .await;
    let writing = crashed.elapsed();
    run.load_for(Duration::from_secs(6)).await;
    run.faults.push(format!(
        "primary crashed; standby promoted {:.1} s later; every lease renewed on the new primary {:.1} s \
         after the crash",
        promoted.as_secs_f64(),
        writing.as_secs_f64()
    ));
    let report = run.finish().await;
    drop(standby);
    drop(primary);
    report.assert_clean();
    assert!(report.accepted > 0, "the load got 200s");
}

/// The pool's side of a failover it did not see coming: a host it holds
/// connections to stops taking writes (as an old primary that came back as
/// a standby would; here `default_transaction_read_only`). A pooled
/// connection idle for over a second is checked before reuse, dropped, and
/// replaced by one to the host that takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_drops_connections_to_a_host_that_stopped_taking_writes() {
    let _serial = SERIAL.lock().await;
    let first = tokio::task::block_in_place(PrivatePostgres::start);
    let second = tokio::task::block_in_place(PrivatePostgres::start);
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        first.port, second.port
    );
    let store = store::Store::connect(&url, "failover_probe", 1).expect("store");
    let port = || async {
        let client = store.client().await.expect("a connection");
        let row = client.query_one("SELECT inet_server_port()", &[]).await.expect("port");
        row.get::<_, i32>(0)
    };
    assert_eq!(port().await, i32::from(first.port), "the first host takes writes");
    tokio::task::block_in_place(|| {
        first.psql(&["ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_reload_conf()"]);
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(port().await, i32::from(second.port), "the read-only host's connection was dropped");
}
