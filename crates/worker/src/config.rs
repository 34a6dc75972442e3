//! The worker's own knobs: identity, lease timing, batch size, timer polling.
//!
//! They live here rather than in the `settings` crate (owned elsewhere), with
//! defaults in code and optional overrides from environment variables with a
//! single underscore after the prefix (`ESCALATIONS_WORKER_LEASE_TTL_MS`),
//! because every `ESCALATIONS__*` variable must name a settings key.

use std::time::Duration;

use crate::error::{Error, Result};

/// Environment variables read by [`WorkerConfig::from_env`].
pub const ENV_WORKER_ID: &str = "ESCALATIONS_WORKER_ID";
/// See [`WorkerConfig::lease_ttl`].
pub const ENV_LEASE_TTL_MS: &str = "ESCALATIONS_WORKER_LEASE_TTL_MS";
/// See [`WorkerConfig::renew_every`].
pub const ENV_RENEW_EVERY_MS: &str = "ESCALATIONS_WORKER_RENEW_EVERY_MS";
/// See [`WorkerConfig::max_batch`].
pub const ENV_MAX_BATCH: &str = "ESCALATIONS_WORKER_MAX_BATCH";
/// See [`WorkerConfig::timer_poll_every`].
pub const ENV_TIMER_POLL_MS: &str = "ESCALATIONS_WORKER_TIMER_POLL_MS";
/// See [`WorkerConfig::drain_deadline`].
pub const ENV_DRAIN_DEADLINE_MS: &str = "ESCALATIONS_WORKER_DRAIN_DEADLINE_MS";

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
    /// The defaults, overridden by the `ESCALATIONS_WORKER_*` variables of
    /// the process environment that are set.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable whose value is not valid.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(std::env::vars())
    }

    /// Like [`WorkerConfig::from_env`], from explicit variables (for tests).
    /// Unrelated variables are ignored.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable whose value is not valid.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut config = Self::default();
        for (key, value) in vars {
            match key.as_str() {
                ENV_WORKER_ID => config.worker_id = value,
                ENV_LEASE_TTL_MS => config.lease_ttl = millis(&key, &value)?,
                ENV_RENEW_EVERY_MS => config.renew_every = millis(&key, &value)?,
                ENV_MAX_BATCH => config.max_batch = number(&key, &value)?,
                ENV_TIMER_POLL_MS => config.timer_poll_every = millis(&key, &value)?,
                ENV_DRAIN_DEADLINE_MS => config.drain_deadline = millis(&key, &value)?,
                _ => {}
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the relations between the knobs.
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

fn number(key: &str, value: &str) -> Result<usize> {
    value.trim().parse().map_err(|_| Error::Config(format!("{key}: {value:?} is not a whole number")))
}

fn millis(key: &str, value: &str) -> Result<Duration> {
    let ms: u64 = value
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("{key}: {value:?} is not a whole number of milliseconds")))?;
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

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
    fn environment_overrides_by_name() {
        let config = WorkerConfig::from_vars(vars(&[
            (ENV_WORKER_ID, "w-1"),
            (ENV_LEASE_TTL_MS, "3000"),
            (ENV_RENEW_EVERY_MS, "500"),
            (ENV_MAX_BATCH, "64"),
            (ENV_TIMER_POLL_MS, "100"),
            (ENV_DRAIN_DEADLINE_MS, "2000"),
            ("PATH", "/bin"),
        ]))
        .expect("valid");
        assert_eq!(config.worker_id, "w-1");
        assert_eq!(config.lease_ttl, Duration::from_secs(3));
        assert_eq!(config.renew_every, Duration::from_millis(500));
        assert_eq!(config.max_batch, 64);
        assert_eq!(config.timer_poll_every, Duration::from_millis(100));
        assert_eq!(config.drain_deadline, Duration::from_secs(2));
    }

    #[test]
    fn bad_values_name_their_variable_or_knob() {
        let error = WorkerConfig::from_vars(vars(&[(ENV_LEASE_TTL_MS, "soon")])).expect_err("bad");
        assert!(error.to_string().contains(ENV_LEASE_TTL_MS), "{error}");
        let error = WorkerConfig::from_vars(vars(&[(ENV_RENEW_EVERY_MS, "6000")])).expect_err("bad");
        assert!(error.to_string().contains("renew_every"), "{error}");
        let error = WorkerConfig::from_vars(vars(&[(ENV_MAX_BATCH, "0")])).expect_err("bad");
        assert!(error.to_string().contains("max_batch"), "{error}");
    }
}
