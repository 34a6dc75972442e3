//! The process-level sections: `[worker]` (one worker process's knobs) and `[admin]`
//! (the admin listener every role serves), and [`Role`], which picks the admin
//! listener's default address.

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The role a process runs; each has its own default admin address, so an ingress and
/// a worker on one host never collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `escalations ingress`: admin on port 9180 by default.
    Ingress,
    /// `escalations worker`: admin on port 9181 by default.
    Worker,
    /// `escalations all`: admin on port 9182 by default.
    All,
}

impl Role {
    /// The admin listener's address when `admin.bind` is not set.
    pub fn default_admin_bind(self) -> SocketAddr {
        let port = match self {
            Self::Ingress => 9180,
            Self::Worker => 9181,
            Self::All => 9182,
        };
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
    }

    /// `ingress`, `worker` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Worker => "worker",
            Self::All => "all",
        }
    }
}

/// The admin listener (`[admin]`): `/healthz`, `/readyz`, `/metrics`, `/openapi.json`
/// without a token, and the operations API (`/v1/...`) behind `Authorization: Bearer
/// <token>`. Never expose it to the public: it is for orchestrators, Prometheus and
/// operators.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener. Default by role: ingress `0.0.0.0:9180`, worker
    /// `0.0.0.0:9181`, all `0.0.0.0:9182`. Two processes of one role on one host need an
    /// address each (`ESCALATIONS__ADMIN__BIND=0.0.0.0:9191`); port 0 picks a free port
    /// (it is logged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    /// Bearer token of the operations API, at least 16 characters. Empty (the default):
    /// the operations API answers `401` to everyone; health, readiness, metrics and the
    /// OpenAPI document are served anyway.
    pub token: Secret,
    /// Seconds the database and broker gauges (outbox depth, dead letters, shard lag,
    /// leases) are reused between scrapes before they are read again. At least 1.
    /// Default 10.
    pub gauges_refresh_secs: u64,
}

impl AdminConfig {
    /// `bind`, or the role's default.
    pub fn bind_for(&self, role: Role) -> SocketAddr {
        self.bind.unwrap_or_else(|| role.default_admin_bind())
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { bind: None, token: Secret::default(), gauges_refresh_secs: 10 }
    }
}

/// One worker process (`[worker]`): identity, lease timing, batch size, timer polling
/// and draining (docs/protocol.md §6).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// This worker's id in the `workers` and `shard_leases` tables and its consumer
    /// tags; unique per running process. Empty (the default): a fresh UUIDv7 per start.
    pub id: String,
    /// Milliseconds a lease (and a heartbeat) stays valid without renewal: a worker
    /// killed without warning loses its shards this long after its last renewal. It is
    /// also how `escalations shards` tells live workers from dead ones. At least 100.
    /// Default 10000.
    pub lease_ttl_ms: u64,
    /// Milliseconds between heartbeats, lease renewals and rebalancing. Above 0 and at
    /// most half of `lease_ttl_ms`. Default 2000.
    pub renew_every_ms: u64,
    /// Most deliveries applied in one transaction. At least 1. Default 256.
    pub max_batch: usize,
    /// Milliseconds between looks for due timers. At least 1. Default 250.
    pub timer_poll_ms: u64,
    /// Most timers fired per poll (one transaction). At least 1. Default 100.
    pub timer_batch: usize,
    /// Milliseconds a stopping shard may spend finishing in-flight work before the rest
    /// is left for redelivery. Default 10000.
    pub drain_deadline_ms: u64,
    /// First pause in milliseconds before retrying a batch the store could not take;
    /// doubles per attempt. Above 0 and at most `retry_delay_max_ms`. Default 100.
    pub retry_delay_min_ms: u64,
    /// Longest pause in milliseconds between retries of one batch. Default 5000.
    pub retry_delay_max_ms: u64,
}

impl WorkerSettings {
    /// The `[worker]` rules, the relations between its knobs (docs/protocol.md §6):
    /// `(key, problem)` for each one broken.
    pub(crate) fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut problems = Vec::new();
        if self.id.len() > 128 || self.id.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
            problems
                .push(("worker.id", "must be at most 128 characters, without spaces or control characters"));
        }
        if self.lease_ttl_ms < 100 {
            problems.push(("worker.lease_ttl_ms", "must be at least 100"));
        }
        // Two renewals per lease lifetime at least, or one slow round trip to the
        // database would cost the worker its shards.
        if self.renew_every_ms == 0 || self.renew_every_ms.saturating_mul(2) > self.lease_ttl_ms {
            problems
                .push(("worker.renew_every_ms", "must be above 0 and at most half of worker.lease_ttl_ms"));
        }
        for (key, value) in [
            ("worker.max_batch", self.max_batch as u64),
            ("worker.timer_poll_ms", self.timer_poll_ms),
            ("worker.timer_batch", self.timer_batch as u64),
        ] {
            if value == 0 {
                problems.push((key, "must be at least 1"));
            }
        }
        if self.retry_delay_min_ms == 0 || self.retry_delay_min_ms > self.retry_delay_max_ms {
            problems
                .push(("worker.retry_delay_min_ms", "must be above 0 and at most worker.retry_delay_max_ms"));
        }
        problems
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            id: String::new(),
            lease_ttl_ms: 10_000,
            renew_every_ms: 2_000,
            max_batch: 256,
            timer_poll_ms: 250,
            timer_batch: 100,
            drain_deadline_ms: 10_000,
            retry_delay_min_ms: 100,
            retry_delay_max_ms: 5_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Settings;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Settings, crate::Error> {
        let mut vars = vec![("ESCALATIONS__WIDGET__TOKEN_SECRET", "a-test-key-of-at-least-32-bytes!!")];
        vars.extend_from_slice(env);
        Settings::from_sources(Some(toml), vars.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())))
    }

    #[test]
    fn worker_keys_come_from_the_file_and_the_environment() {
        let toml = "[worker]\nid = \"w-7\"\nlease_ttl_ms = 6000\nmax_batch = 64\n";
        let settings = load(toml, &[("ESCALATIONS__WORKER__LEASE_TTL_MS", "4000")]).expect("valid");
        assert_eq!(settings.worker.id, "w-7");
        assert_eq!(settings.worker.lease_ttl_ms, 4000, "the environment wins");
        assert_eq!(settings.worker.max_batch, 64);
        assert_eq!(settings.worker.renew_every_ms, 2000, "default");
    }

    #[test]
    fn worker_relations_are_checked_by_key() {
        let error = load("[worker]\nlease_ttl_ms = 1000\nrenew_every_ms = 600\n", &[]).expect_err("invalid");
        let problems = error.problems().expect("problems");
        assert!(problems.has_key("worker.renew_every_ms"), "{error}");
        let error = load("[worker]\nmax_batch = 0\nretry_delay_min_ms = 9000\n", &[]).expect_err("invalid");
        let problems = error.problems().expect("problems");
        assert!(
            problems.has_key("worker.max_batch") && problems.has_key("worker.retry_delay_min_ms"),
            "{error}"
        );
        assert!(load("[worker]\nbogus = 1\n", &[]).is_err(), "unknown keys are errors");
    }

    #[test]
    fn admin_binds_by_role_unless_set() {
        let settings = load("", &[]).expect("valid");
        assert_eq!(settings.admin.bind_for(Role::Ingress).port(), 9180);
        assert_eq!(settings.admin.bind_for(Role::Worker).port(), 9181);
        assert_eq!(settings.admin.bind_for(Role::All).port(), 9182);
        assert!(settings.admin.token.is_empty());
        let settings = load("", &[("ESCALATIONS__ADMIN__BIND", "127.0.0.1:9999")]).expect("valid");
        assert_eq!(settings.admin.bind_for(Role::Worker), SocketAddr::from(([127, 0, 0, 1], 9999)));
        let error = load("[admin]\ntoken = \"short\"\n", &[]).expect_err("short token");
        assert!(error.problems().expect("problems").has_key("admin.token"), "{error}");
        assert!(!error.to_string().contains("short\""), "the token is never echoed: {error}");
    }

    /// The keys of the `[worker]` rules `settings` breaks.
    fn broken(settings: &WorkerSettings) -> Vec<&'static str> {
        settings.problems().into_iter().map(|(key, _)| key).collect()
    }

    #[test]
    fn worker_rules_hold_at_their_limits_and_break_one_past() {
        let ok = WorkerSettings::default();
        assert!(broken(&ok).is_empty(), "{:?}", broken(&ok));
        let with = |edit: &dyn Fn(&mut WorkerSettings)| {
            let mut settings = WorkerSettings::default();
            edit(&mut settings);
            broken(&settings)
        };
        // Ids: 128 characters at most, no spaces, no control characters.
        assert!(with(&|w| w.id = "w".repeat(128)).is_empty());
        assert_eq!(with(&|w| w.id = "w".repeat(129)), ["worker.id"]);
        assert_eq!(with(&|w| w.id = "worker 1".to_owned()), ["worker.id"]);
        assert_eq!(with(&|w| w.id = "worker\u{7}".to_owned()), ["worker.id"]);
        // Leases: at least 100 ms; renewals above 0 and at most half the lease.
        assert!(with(&|w| (w.lease_ttl_ms, w.renew_every_ms) = (100, 50)).is_empty());
        assert!(with(&|w| (w.lease_ttl_ms, w.renew_every_ms) = (99, 49)).contains(&"worker.lease_ttl_ms"));
        assert!(with(&|w| (w.lease_ttl_ms, w.renew_every_ms) = (1000, 500)).is_empty());
        assert_eq!(with(&|w| (w.lease_ttl_ms, w.renew_every_ms) = (1000, 501)), ["worker.renew_every_ms"]);
        assert_eq!(with(&|w| w.renew_every_ms = 0), ["worker.renew_every_ms"]);
        // Counts at least 1.
        assert_eq!(with(&|w| w.max_batch = 0), ["worker.max_batch"]);
        assert_eq!(with(&|w| w.timer_poll_ms = 0), ["worker.timer_poll_ms"]);
        assert_eq!(with(&|w| w.timer_batch = 0), ["worker.timer_batch"]);
        // Retry pauses: above 0, the first at most the longest.
        assert!(with(&|w| (w.retry_delay_min_ms, w.retry_delay_max_ms) = (700, 700)).is_empty());
        assert_eq!(
            with(&|w| (w.retry_delay_min_ms, w.retry_delay_max_ms) = (701, 700)),
            ["worker.retry_delay_min_ms"]
        );
        assert_eq!(with(&|w| w.retry_delay_min_ms = 0), ["worker.retry_delay_min_ms"]);
    }

    #[test]
    fn role_names_are_the_subcommands() {
        assert_eq!([Role::Ingress, Role::Worker, Role::All].map(Role::as_str), ["ingress", "worker", "all"]);
    }

    #[test]
    fn an_admin_token_of_the_minimum_length_is_taken() {
        let exact = "t".repeat(crate::MIN_ADMIN_TOKEN_CHARS);
        let settings =
            load(&format!("[admin]\ntoken = \"{exact}\"\n"), &[]).expect("a token of the minimum length");
        assert_eq!(settings.admin.token.len(), crate::MIN_ADMIN_TOKEN_CHARS);
        let short = "t".repeat(crate::MIN_ADMIN_TOKEN_CHARS - 1);
        let error = load(&format!("[admin]\ntoken = \"{short}\"\n"), &[]).expect_err("one short");
        assert!(error.problems().expect("problems").has_key("admin.token"), "{error}");
    }

    #[test]
    fn a_built_in_configuration_is_loaded_from_its_text() {
        let toml = "[broker]\nshards = 7\n[widget]\ntoken_secret = \"a-test-key-of-at-least-32-bytes!!\"\n";
        let settings = Settings::load_builtin(toml).expect("built-in settings");
        assert_eq!(settings.broker.shards, 7);
    }
}
