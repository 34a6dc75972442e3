//! The worker's own knobs: identity, lease timing, batch size, timer polling.
//!
//! They come from the settings file's `[worker]` section (env-overridable like
//! every key: `ESCALATIONS__WORKER__LEASE_TTL_MS`), validated with the rest of
//! the settings; [`WorkerConfig::from_settings`] turns them into durations.

use std::time::Duration;

use settings::WorkerSettings;

use crate::error::{Error, Result};

/// How one worker process behaves. `Default` gives the documented defaults
/// and a fresh id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// This worker's id in the `workers` and `shard_leases` tables and in its
    /// consumer tags. Unique per running process. Default: a new UUIDv7.
    pub worker_id: String,
    /// How long a lease (and a heartbeat) stays valid without renewal: a
    /// worker killed without warning loses its shards this long after its
    /// last renewal. Default 10 s.
    pub lease_ttl: Duration,
    /// How often the worker heartbeats, renews its leases and rebalances.
    /// Must be well below `lease_ttl`. Default 2 s.
    pub renew_every: Duration,
    /// Most deliveries applied in one transaction. Default 256.
    pub max_batch: usize,
    /// How often due timers are looked for. Default 250 ms.
    pub timer_poll_every: Duration,
    /// Most timers fired per poll (one transaction). Default 100.
    pub timer_batch: usize,
    /// How long a stopping shard may spend finishing its in-flight and
    /// already-delivered messages before the rest is left for redelivery.
    /// Default 10 s.
    pub drain_deadline: Duration,
    /// First pause before retrying a batch the store could not take; doubles
    /// per attempt. Default 100 ms.
    pub retry_delay_min: Duration,
    /// Longest pause between retries of one batch. Default 5 s.
    pub retry_delay_max: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: uuid::Uuid::now_v7().to_string(),
            lease_ttl: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
            max_batch: 256,
            timer_poll_every: Duration::from_millis(250),
            timer_batch: 100,
            drain_deadline: Duration::from_secs(10),
            retry_delay_min: Duration::from_millis(100),
            retry_delay_max: Duration::from_secs(5),
        }
    }
}

impl WorkerConfig {
    /// The knobs of a `[worker]` section; an empty `id` gets a fresh UUIDv7.
    pub fn from_settings(worker: &WorkerSettings) -> Self {
        let ms = Duration::from_millis;
        Self {
            worker_id: if worker.id.is_empty() {
                uuid::Uuid::now_v7().to_string()
            } else {
                worker.id.clone()
            },
            lease_ttl: ms(worker.lease_ttl_ms),
            renew_every: ms(worker.renew_every_ms),
            max_batch: worker.max_batch,
            timer_poll_every: ms(worker.timer_poll_ms),
            timer_batch: worker.timer_batch,
            drain_deadline: ms(worker.drain_deadline_ms),
            retry_delay_min: ms(worker.retry_delay_min_ms),
            retry_delay_max: ms(worker.retry_delay_max_ms),
        }
    }

    /// Checks the relations between the knobs (the settings' validation checks
    /// the same for `[worker]`; this covers configs built in code).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first knob that is out of range.
    pub fn validate(&self) -> Result<()> {
        let problem = |key: &str, message: &str| Err(Error::Config(format!("{key}: {message}")));
        if self.worker_id.is_empty() || self.worker_id.len() > 128 {
            return problem("worker_id", "must be 1-128 bytes");
        }
        if self.lease_ttl < Duration::from_millis(100) {
            return problem("lease_ttl", "must be at least 100 ms");
        }
        // Two renewals per lease lifetime at least, or one slow round trip
        // to the database would cost the worker its shards.
        if self.renew_every.is_zero() || self.renew_every * 2 > self.lease_ttl {
            return problem("renew_every", "must be above 0 and at most half of lease_ttl");
        }
        if self.max_batch == 0 {
            return problem("max_batch", "must be at least 1");
        }
        if self.timer_poll_every.is_zero() || self.timer_batch == 0 {
            return problem("timer_poll_every / timer_batch", "must be above 0");
        }
        if self.retry_delay_min.is_zero() || self.retry_delay_min > self.retry_delay_max {
            return problem("retry_delay_min", "must be above 0 and at most retry_delay_max");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ids_are_fresh() {
        let a = WorkerConfig::default();
        assert!(a.validate().is_ok());
        assert_eq!(a.lease_ttl, Duration::from_secs(10));
        assert_eq!(a.renew_every, Duration::from_secs(2));
        assert_eq!(a.max_batch, 256);
        assert_ne!(a.worker_id, WorkerConfig::default().worker_id);
    }

    #[test]
    fn the_worker_section_gives_the_same_defaults() {
        let from_settings = WorkerConfig::from_settings(&WorkerSettings::default());
        assert_eq!(
            WorkerConfig { worker_id: from_settings.worker_id.clone(), ..WorkerConfig::default() },
            from_settings
        );
        assert_ne!(
            from_settings.worker_id,
            WorkerConfig::from_settings(&WorkerSettings::default()).worker_id
        );
    }

    #[test]
    fn the_worker_section_sets_every_knob() {
        let section = WorkerSettings {
            id: "w-1".into(),
            lease_ttl_ms: 3000,
            renew_every_ms: 500,
            max_batch: 64,
            timer_poll_ms: 100,
            timer_batch: 10,
            drain_deadline_ms: 2000,
            retry_delay_min_ms: 50,
            retry_delay_max_ms: 1000,
        };
        let config = WorkerConfig::from_settings(&section);
        assert_eq!(config.worker_id, "w-1");
        assert_eq!(config.lease_ttl, Duration::from_secs(3));
        assert_eq!(config.renew_every, Duration::from_millis(500));
        assert_eq!(config.max_batch, 64);
        assert_eq!(config.timer_poll_every, Duration::from_millis(100));
        assert_eq!(config.timer_batch, 10);
        assert_eq!(config.drain_deadline, Duration::from_secs(2));
        assert_eq!(config.retry_delay_min, Duration::from_millis(50));
        assert_eq!(config.retry_delay_max, Duration::from_secs(1));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn bad_relations_name_their_knob() {
        let config = WorkerConfig { renew_every: Duration::from_secs(6), ..WorkerConfig::default() };
        assert!(config.validate().expect_err("bad").to_string().contains("renew_every"));
        let config = WorkerConfig { max_batch: 0, ..WorkerConfig::default() };
        assert!(config.validate().expect_err("bad").to_string().contains("max_batch"));
    }
}
