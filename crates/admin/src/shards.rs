//! Shard ownership (docs/protocol.md §6): which worker holds which shard, and
//! which workers are alive. Behind `escalations shards` and `/v1/shards`.

use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use settings::Settings;
use store::Store;
use utoipa::ToSchema;

use crate::error::{OpsError, OpsResult};
use crate::filter::format_time_ms;

/// One shard's lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardLease {
    /// The shard (`0..broker.shards`).
    pub shard: u16,
    /// The worker holding it, if any.
    pub holder: Option<String>,
    /// `held`, `expired` (its holder stopped renewing) or `free`.
    pub state: String,
    /// When the lease ends unless renewed (RFC 3339, ms).
    pub expires_at: Option<String>,
    /// Seconds until then (negative once expired).
    pub expires_in_secs: Option<f64>,
    /// Incremented each time the shard changes hands.
    pub epoch: u64,
}

/// Every shard's lease and the live workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Shards {
    /// One per shard, in shard order (empty before the first worker or `migrate`).
    pub shards: Vec<ShardLease>,
    /// Workers whose heartbeat is younger than `worker.lease_ttl_ms`.
    pub live_workers: Vec<String>,
}

/// The leases and live workers; a worker is alive if it heartbeat within the
/// configured lease TTL (`worker.lease_ttl_ms`).
pub async fn shards(settings: &Settings, store: &Store) -> OpsResult<Shards> {
    let leases =
        store.list_leases().await.map_err(|error| OpsError::unavailable("reading shard leases", error))?;
    let now = Utc::now();
    let shards = leases
        .iter()
        .map(|lease| {
            let state = match (&lease.holder, lease.expires_at) {
                (Some(_), Some(at)) if at > now => "held",
                (Some(_), Some(_)) => "expired",
                _ => "free",
            };
            ShardLease {
                shard: lease.shard,
                holder: lease.holder.clone(),
                state: state.to_owned(),
                expires_at: lease.expires_at.map(format_time_ms),
                expires_in_secs: lease.expires_at.map(|at| (at - now).num_milliseconds() as f64 / 1000.0),
                epoch: lease.epoch,
            }
        })
        .collect();
    let ttl = Duration::from_millis(settings.worker.lease_ttl_ms);
    let live_workers =
        store.live_workers(ttl).await.map_err(|error| OpsError::unavailable("reading workers", error))?;
    Ok(Shards { shards, live_workers })
}
