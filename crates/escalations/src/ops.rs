//! Operator commands on the database: `migrate` and `shards` (docs/protocol.md §8).

use admin::OpsError;
use settings::Settings;
use store::Store;

/// Connects to the configured database and schema.
pub fn connect_store(settings: &Settings) -> Result<Store, OpsError> {
    let db = &settings.database;
    Store::connect_for_batches(&db.url, &db.schema, db.pool_size).map_err(|error| {
        OpsError::unavailable(
            &format!("connecting to PostgreSQL at {}", settings::redact_url(&db.url)),
            error,
        )
    })
}

/// `escalations migrate`.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let store = connect_store(settings)?;
    let applied =
        store.migrate().await.map_err(|error| OpsError::unavailable("applying migrations", error))?;
    println!("schema {:?} is up to date ({applied} migration(s) applied now)", store.schema());
    Ok(())
}

/// `escalations shards`: one line per shard, then the live workers (alive:
/// a heartbeat within `worker.lease_ttl_ms`).
pub async fn shards(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let store = connect_store(settings)?;
    let report = admin::shards::shards(settings, &store).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{:<6} {:<40} {:>12} {:>6}", "SHARD", "HOLDER", "EXPIRES IN", "EPOCH");
    for lease in &report.shards {
        let expires = match (lease.state.as_str(), lease.expires_in_secs) {
            ("held", Some(secs)) => format!("{secs:.1}s"),
            ("expired", _) => "expired".to_owned(),
            _ => "-".to_owned(),
        };
        println!(
            "{:<6} {:<40} {:>12} {:>6}",
            lease.shard,
            lease.holder.as_deref().unwrap_or("-"),
            expires,
            lease.epoch
        );
    }
    if report.shards.is_empty() {
        println!("(no shards yet: start a worker, or run `escalations migrate` first)");
    }
    let workers = &report.live_workers;
    println!("\nlive workers: {}", if workers.is_empty() { "none".to_owned() } else { workers.join(", ") });
    Ok(())
}
