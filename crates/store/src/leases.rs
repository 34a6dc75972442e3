//! `workers` and `shard_leases`: which worker consumes which shard (docs/protocol.md §6,
//! "a dead worker's shards move to the others").
//!
//! A lease is a claim with a deadline; the broker's single active consumer per
//! shard queue is the fence that keeps two consumers from interleaving, the
//! lease only spreads shards over workers. Every deadline is computed with the
//! database clock (`now()`), so workers' clocks need not agree. Each function
//! is one statement, atomic on its own.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use crate::codec::to_u64;
use crate::error::{Error, Result};
use crate::executor::{self, Executor};
use crate::pool::Store;

/// One shard's lease, for the CLI's `shards`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard (`0..shards`).
    pub shard: u16,
    /// The worker holding it, if any (it may have expired).
    pub holder: Option<String>,
    /// When the lease ends unless renewed; `None` if never held or released.
    pub expires_at: Option<DateTime<Utc>>,
    /// Incremented each time the shard changes hands.
    pub epoch: u64,
}

fn shard_from_row(row: &Row) -> Result<u16> {
    let shard: i32 = row.try_get("shard")?;
    u16::try_from(shard).map_err(|_| Error::Corrupt { column: "shard", value: shard.to_string() })
}

fn held_from_rows(rows: &[Row]) -> Result<Vec<(u16, u64)>> {
    let mut held = rows
        .iter()
        .map(|row| Ok((shard_from_row(row)?, to_u64(row.try_get("epoch")?, "epoch")?)))
        .collect::<Result<Vec<_>>>()?;
    held.sort_unstable();
    Ok(held)
}

fn shards_from_rows(rows: &[Row]) -> Result<Vec<u16>> {
    let mut shards = rows.iter().map(shard_from_row).collect::<Result<Vec<_>>>()?;
    shards.sort_unstable();
    Ok(shards)
}

const ENSURE: &str = "
    INSERT INTO {schema}.shard_leases (shard)
    SELECT generate_series(0, $1::integer - 1)
    ON CONFLICT DO NOTHING";

const HEARTBEAT: &str = "
    WITH beat AS (
        INSERT INTO {schema}.workers (id, heartbeat_at) VALUES ($1, now())
        ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
    )
    DELETE FROM {schema}.workers
    WHERE id <> $1 AND heartbeat_at < now() - make_interval(secs => $2)";

const LIVE: &str = "
    SELECT id FROM {schema}.workers
    WHERE heartbeat_at >= now() - make_interval(secs => $1)
    ORDER BY id";

// `max` caps the shards held in total: the worker tops up to it. Free rows are
// those never held, released, or expired (its own expired ones included: they
// come back with a new epoch). `SKIP LOCKED` lets workers acquiring at the same
// moment take disjoint shards instead of queueing on the same rows.
const ACQUIRE: &str = "
    WITH held AS (
        SELECT count(*) AS n FROM {schema}.shard_leases WHERE holder = $1 AND expires_at > now()
    ),
    free AS (
        SELECT shard FROM {schema}.shard_leases
        WHERE holder IS NULL OR expires_at IS NULL OR expires_at <= now()
        ORDER BY shard
        LIMIT GREATEST($2::bigint - (SELECT n FROM held), 0)
        FOR UPDATE SKIP LOCKED
    ),
    taken AS (
        UPDATE {schema}.shard_leases l
        SET holder = $1, expires_at = now() + make_interval(secs => $3), epoch = l.epoch + 1
        FROM free WHERE l.shard = free.shard
        RETURNING l.shard, l.epoch
    )
    SELECT shard, epoch FROM taken
    UNION
    SELECT shard, epoch FROM {schema}.shard_leases WHERE holder = $1 AND expires_at > now()";

const RENEW: &str = "
    UPDATE {schema}.shard_leases
    SET expires_at = now() + make_interval(secs => $2)
    WHERE holder = $1 AND expires_at > now()
    RETURNING shard";

// Only the shards the worker still consumes: one that cannot reach the
// broker stops renewing what it cannot consume, and the lease goes to others.
const RENEW_SHARDS: &str = "
    UPDATE {schema}.shard_leases
    SET expires_at = now() + make_interval(secs => $2)
    WHERE holder = $1 AND expires_at > now() AND shard = ANY($3::integer[])
    RETURNING shard, epoch";

// The fence of a batch (docs/protocol.md §6): inside the batch transaction,
// the worker still holds the shard under the epoch it consumes with. The
// share lock keeps the row from being taken (ACQUIRE skips locked rows)
// until the batch commits or rolls back. A primary-key probe.
const FENCE: &str = "
    SELECT 1 FROM shard_leases
    WHERE shard = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
    FOR SHARE";

const RELEASE: &str = "
    UPDATE {schema}.shard_leases SET holder = NULL, expires_at = NULL
    WHERE shard = $2 AND holder = $1";

const RELEASE_ALL: &str = "
    UPDATE {schema}.shard_leases SET holder = NULL, expires_at = NULL
    WHERE holder = $1
    RETURNING shard";

const DEREGISTER: &str = "DELETE FROM {schema}.workers WHERE id = $1";

const LIST: &str = "SELECT shard, holder, expires_at, epoch FROM {schema}.shard_leases ORDER BY shard";

/// What a batch must still hold to commit: its shard's lease, under the
/// epoch the worker started consuming with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseFence {
    /// The worker.
    pub worker_id: String,
    /// The shard the batch's deliveries came from.
    pub shard: u16,
    /// The lease epoch when the worker started consuming the shard.
    pub epoch: u64,
}

/// Checks `fence` inside the transaction of `tx` and keeps the lease row
/// share-locked until it ends. Run it on a batch connection (its
/// `search_path` names the schema), pipelined with the batch's reads.
///
/// # Errors
///
/// [`Error::LeaseLost`] if the worker no longer holds the shard under that
/// epoch, or a statement error.
pub async fn check_lease(tx: &impl Executor, fence: &LeaseFence) -> Result<()> {
    let epoch = i64::try_from(fence.epoch).map_err(|_| Error::OutOfRange("epoch"))?;
    let rows = executor::query(tx, FENCE, &[&i32::from(fence.shard), &fence.worker_id, &epoch]).await?;
    if rows.is_empty() {
        return Err(Error::LeaseLost { shard: fence.shard, epoch: fence.epoch });
    }
    Ok(())
}

impl Store {
    /// Makes sure shards `0..shards` have a lease row (free when new).
    pub async fn ensure_shards(&self, shards: u16) -> Result<()> {
        self.execute(ENSURE, &[&i32::from(shards)]).await?;
        Ok(())
    }

    /// Records that `worker_id` is alive, and forgets workers silent for
    /// longer than `ttl`.
    pub async fn heartbeat(&self, worker_id: &str, ttl: Duration) -> Result<()> {
        self.execute(HEARTBEAT, &[&worker_id, &ttl.as_secs_f64()]).await?;
        Ok(())
    }

    /// Workers that sent a heartbeat within `ttl`, sorted by id.
    pub async fn live_workers(&self, ttl: Duration) -> Result<Vec<String>> {
        let rows = self.query(LIVE, &[&ttl.as_secs_f64()]).await?;
        Ok(rows.iter().map(|row| row.try_get("id")).collect::<Result<_, _>>()?)
    }

    /// Takes free or expired shards until `worker_id` holds `max` (or none is
    /// left), each for `ttl` with its epoch bumped. Returns every shard the
    /// worker now holds, sorted.
    pub async fn acquire_leases(&self, worker_id: &str, max: usize, ttl: Duration) -> Result<Vec<u16>> {
        Ok(self.acquire_leases_with_epochs(worker_id, max, ttl).await?.into_iter().map(|(s, _)| s).collect())
    }

    /// [`Store::acquire_leases`], with each held shard's epoch (what a
    /// [`LeaseFence`] checks).
    pub async fn acquire_leases_with_epochs(
        &self,
        worker_id: &str,
        max: usize,
        ttl: Duration,
    ) -> Result<Vec<(u16, u64)>> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = self.query(ACQUIRE, &[&worker_id, &max, &ttl.as_secs_f64()]).await?;
        held_from_rows(&rows)
    }

    /// Like [`Store::renew_leases`], for `shards` only (the others lapse),
    /// returning each renewed shard with its epoch.
    pub async fn renew_shards(
        &self,
        worker_id: &str,
        ttl: Duration,
        shards: &[u16],
    ) -> Result<Vec<(u16, u64)>> {
        let shards: Vec<i32> = shards.iter().copied().map(i32::from).collect();
        let rows = self.query(RENEW_SHARDS, &[&worker_id, &ttl.as_secs_f64(), &shards]).await?;
        held_from_rows(&rows)
    }

    /// Extends `worker_id`'s unexpired leases by `ttl` from now. Returns the
    /// shards it still holds, sorted: a lease that expired is lost, even if no
    /// one took it yet (the worker must stop consuming it and acquire again).
    pub async fn renew_leases(&self, worker_id: &str, ttl: Duration) -> Result<Vec<u16>> {
        let rows = self.query(RENEW, &[&worker_id, &ttl.as_secs_f64()]).await?;
        shards_from_rows(&rows)
    }

    /// Gives one shard back, if `worker_id` holds it. Returns whether it did.
    pub async fn release_lease(&self, worker_id: &str, shard: u16) -> Result<bool> {
        Ok(self.execute(RELEASE, &[&worker_id, &i32::from(shard)]).await? > 0)
    }

    /// Gives back every shard `worker_id` holds. Returns them, sorted.
    pub async fn release_all(&self, worker_id: &str) -> Result<Vec<u16>> {
        let rows = self.query(RELEASE_ALL, &[&worker_id]).await?;
        shards_from_rows(&rows)
    }

    /// Forgets `worker_id` at once (on shutdown, after [`Store::release_all`]),
    /// so the others rebalance without waiting for its heartbeat to go stale.
    pub async fn deregister_worker(&self, worker_id: &str) -> Result<()> {
        self.execute(DEREGISTER, &[&worker_id]).await?;
        Ok(())
    }

    /// Every shard's lease, by shard.
    pub async fn list_leases(&self) -> Result<Vec<Lease>> {
        let rows = self.query(LIST, &[]).await?;
        rows.iter()
            .map(|row| {
                Ok(Lease {
                    shard: shard_from_row(row)?,
                    holder: row.try_get("holder")?,
                    expires_at: row.try_get("expires_at")?,
                    epoch: to_u64(row.try_get("epoch")?, "epoch")?,
                })
            })
            .collect()
    }
}
