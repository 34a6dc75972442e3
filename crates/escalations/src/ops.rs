//! Operator commands on the database: `migrate` and `shards` (docs/protocol.md §8).

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use settings::Settings;
use store::Store;

/// Connects to the configured database and schema.
pub fn connect_store(settings: &Settings) -> anyhow::Result<Store> {
    let db = &settings.database;
    Store::connect_for_batches(&db.url, &db.schema, db.pool_size)
        .with_context(|| format!("connecting to PostgreSQL at {}", settings::redact_url(&db.url)))
}

/// `escalations migrate`.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let store = connect_store(settings)?;
    let applied = store.migrate().await.context("applying migrations")?;
    println!("schema {:?} is up to date ({applied} migration(s) applied now)", store.schema());
    Ok(())
}

/// `escalations shards`: one line per shard, then the live workers.
pub async fn shards(settings: &Settings) -> anyhow::Result<()> {
    let store = connect_store(settings)?;
    let leases = store.list_leases().await.context("reading shard leases")?;
    let now = Utc::now();
    println!("{:<6} {:<40} {:>12} {:>6}", "SHARD", "HOLDER", "EXPIRES IN", "EPOCH");
    for lease in &leases {
        let (holder, expires) = match (&lease.holder, lease.expires_at) {
            (Some(holder), Some(at)) if at > now => {
                (holder.as_str(), format!("{:.1}s", (at - now).num_milliseconds() as f64 / 1000.0))
            }
            (Some(holder), Some(_)) => (holder.as_str(), "expired".to_owned()),
            _ => ("-", "-".to_owned()),
        };
        println!("{:<6} {:<40} {:>12} {:>6}", lease.shard, holder, expires, lease.epoch);
    }
    if leases.is_empty() {
        println!("(no shards yet: start a worker, or run `escalations migrate` first)");
    }
    // Matches the worker's default lease TTL: a worker silent for longer is dead.
    let workers = store.live_workers(Duration::from_secs(10)).await.context("reading workers")?;
    println!("\nlive workers: {}", if workers.is_empty() { "none".to_owned() } else { workers.join(", ") });
    Ok(())
}
