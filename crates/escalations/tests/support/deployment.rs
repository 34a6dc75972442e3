//! A deployment as users run one: the real `escalations` binary, each role in
//! a process of its own (N ingress, M workers with their webhook
//! dispatchers), on the machine's RabbitMQ and PostgreSQL under a queue
//! prefix and a schema of their own, removed again by [`Deployment::stop`].
//! And [`Sink`], a webhook endpoint in the caller's process that verifies
//! every signature and records what arrived, when.
//!
//! Shared by the burst test (`tests/webhook_burst.rs`) and the webhook
//! benchmark (`examples/bench_webhooks.rs`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// The bot every deployment serves, its API key and its webhook secret.
pub const BOT: &str = "acme";
pub const KEY: &str = "acme-key-0123456789";
pub const WEBHOOK_SECRET: &str = "whsec_BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const TOKEN_SECRET: &str = "deployment-widget-token-secret-0123456789";
/// The admin API's bearer token of every process.
pub const ADMIN_TOKEN: &str = "deployment-admin-token-0123456789";

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// How to lay the deployment out.
#[derive(Debug, Clone)]
pub struct Layout {
    pub ingress: usize,
    pub workers: usize,
    pub shards: u16,
    /// Where the bot's webhooks go.
    pub webhook_url: Option<String>,
    /// `false`: the workers start without the bot's endpoint, so its
    /// deliveries wait, pending, until workers that know it start
    /// (`start_workers(n, "worker.toml")`).
    pub workers_know_endpoint: bool,
    /// Extra `[webhooks]` lines.
    pub webhooks: String,
    /// Extra lines at the end of the settings file (whole sections).
    pub extra: String,
    pub log_filter: String,
    /// The broker and the database; default [`amqp_url`] and
    /// [`database_url`] (the machine's, or a private node's: `support/nodes.rs`).
    pub amqp_url: Option<String>,
    pub database_url: Option<String>,
    /// `worker.lease_ttl_ms` and `worker.renew_every_ms` of the workers.
    pub lease_ttl_ms: u64,
    pub renew_every_ms: u64,
    /// Environment of every process (`ESCALATIONS__SECTION__KEY` overrides).
    pub env: Vec<(String, String)>,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            ingress: 1,
            workers: 2,
            shards: 8,
            webhook_url: None,
            workers_know_endpoint: true,
            webhooks: String::new(),
            extra: String::new(),
            log_filter: "warn".into(),
            amqp_url: None,
            database_url: None,
            lease_ttl_ms: 5000,
            renew_every_ms: 1000,
            env: Vec::new(),
        }
    }
}

/// How a process was started.
struct Launch {
    config: String,
    env: Vec<(String, String)>,
}

/// Running processes of one deployment.
pub struct Deployment {
    pub prefix: String,
    pub schema: String,
    /// Base URLs of the ingress processes.
    pub ingress: Vec<String>,
    /// Base URLs of every process's admin listener, with its role.
    pub admin: Vec<(String, String)>,
    binary: PathBuf,
    dir: PathBuf,
    layout: Layout,
    /// Role, process, and how it was started (to start it again).
    children: Vec<(String, Child, Launch)>,
    pub store: store::Store,
}

/// The settings file; without `with_bot`, the bot is not configured at all
/// (another stands in its place), so its deliveries wait, pending.
fn toml(layout: &Layout, prefix: &str, schema: &str, with_bot: bool) -> String {
    let webhook = match &layout.webhook_url {
        Some(url) => format!("webhook_url = \"{url}\"\nwebhook_secrets = [\"{WEBHOOK_SECRET}\"]"),
        None => String::new(),
    };
    let (bot, key) = if with_bot { (BOT, KEY) } else { ("stand-in", "stand-in-key-0123456789") };
    let amqp = layout.amqp_url.clone().unwrap_or_else(amqp_url);
    let pg = layout.database_url.clone().unwrap_or_else(database_url);
    let (shards, filter, extra) = (layout.shards, &layout.log_filter, &layout.webhooks);
    let sections = &layout.extra;
    format!(
        r#"
[broker]
url = "{amqp}"
prefix = "{prefix}"
shards = {shards}
[database]
url = "{pg}"
schema = "{schema}"
pool_size = 16
[widget]
token_secret = "{TOKEN_SECRET}"
[webhooks]
allow_loopback = true
{extra}
[admin]
token = "{ADMIN_TOKEN}"
[log]
format = "json"
filter = "{filter}"
[[bots]]
id = "{bot}"
api_keys = ["{key}"]
{webhook}
[bots.overrides]
rate_limit_per_sec = 1000000
rate_limit_burst = 1000000
{sections}
"#
    )
}

/// A free port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl Deployment {
    /// Migrates, starts the ingress and worker processes and waits until
    /// every ingress is ready and every shard is held.
    pub async fn start(binary: &Path, layout: &Layout) -> Deployment {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("dep-{}", &id[..12]);
        let schema = format!("dep_{}", &id[..12]);
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("ingress.toml"), toml(layout, &prefix, &schema, true)).expect("config");
        std::fs::write(dir.join("worker.toml"), toml(layout, &prefix, &schema, true)).expect("config");
        std::fs::write(dir.join("worker-unconfigured.toml"), toml(layout, &prefix, &schema, false))
            .expect("config");
        let pg = layout.database_url.clone().unwrap_or_else(database_url);
        let store = store::Store::connect(&pg, &schema, 2).expect("store");
        let mut deployment = Deployment {
            prefix,
            schema,
            ingress: Vec::new(),
            admin: Vec::new(),
            binary: binary.to_owned(),
            dir,
            layout: layout.clone(),
            children: Vec::new(),
            store,
        };
        let migrated = deployment.run(&["migrate"], "ingress.toml");
        assert!(migrated.status.success(), "migrate: {}", String::from_utf8_lossy(&migrated.stderr));
        for _ in 0..layout.ingress {
            let port = free_port();
            let base = format!("http://127.0.0.1:{port}");
            deployment.spawn(
                "ingress",
                "ingress.toml",
                &[("ESCALATIONS__HTTP__BIND", &format!("127.0.0.1:{port}"))],
            );
            deployment.ingress.push(base);
        }
        let worker_config =
            if layout.workers_know_endpoint { "worker.toml" } else { "worker-unconfigured.toml" };
        deployment.start_workers(layout.workers, worker_config).await;
        let http = reqwest::Client::new();
        for base in &deployment.ingress {
            wait_for(Duration::from_secs(60), "an ingress to be ready", || async {
                http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success())
            })
            .await;
        }
        deployment
    }

    /// Starts `n` more worker processes with `config` (a file name in the
    /// deployment's folder) and waits until every shard is held.
    pub async fn start_workers(&mut self, n: usize, config: &str) {
        for _ in 0..n {
            self.spawn("worker", config, &[]);
        }
        self.wait_for_shards().await;
    }

    /// Waits until every shard has a live holder.
    pub async fn wait_for_shards(&self) {
        let store = self.store.clone();
        wait_for(Duration::from_secs(60), "every shard held", || {
            let store = store.clone();
            async move {
                let leases = store.list_leases().await.unwrap_or_default();
                !leases.is_empty()
                    && leases
                        .iter()
                        .all(|lease| lease.holder.is_some() && lease.expires_at > Some(chrono::Utc::now()))
            }
        })
        .await;
    }

    /// Stops the worker processes (SIGTERM, then waits).
    pub fn stop_workers(&mut self) {
        let (workers, rest): (Vec<_>, Vec<_>) =
            self.children.drain(..).partition(|(role, _, _)| role == "worker");
        self.children = rest;
        self.admin.retain(|(role, _)| role != "worker");
        for (_, child, _) in workers {
            terminate(child);
        }
    }

    /// SIGKILLs the `index`th running worker process (no goodbye: its
    /// leases and unacked deliveries are left to expire and be redelivered).
    pub fn kill_worker(&mut self, index: usize) {
        let position = self
            .children
            .iter()
            .enumerate()
            .filter(|(_, (role, _, _))| role == "worker")
            .nth(index)
            .map(|(position, _)| position)
            .expect("no such worker");
        let (_, mut child, _) = self.children.remove(position);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILLs the process serving [`ingress`](Self::ingress)`[index]` (no
    /// goodbye: its streams and requests in flight break). Its address stays
    /// in the list, refusing connections, as a dead instance behind a
    /// balancer would.
    pub fn kill_ingress(&mut self, index: usize) {
        let bind = self.ingress[index].trim_start_matches("http://").to_owned();
        let position = self
            .children
            .iter()
            .position(|(role, _, launch)| {
                role == "ingress"
                    && launch.env.iter().any(|(k, v)| k == "ESCALATIONS__HTTP__BIND" && *v == bind)
            })
            .expect("no such ingress");
        let (_, mut child, _) = self.children.remove(position);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts one more ingress process, with `env` on top of the
    /// deployment's (another broker URL, say), without waiting for it to be
    /// ready; returns its base URL, also added to [`ingress`](Self::ingress).
    pub fn spawn_ingress(&mut self, env: &[(&str, &str)]) -> String {
        let bind = format!("127.0.0.1:{}", free_port());
        let mut env = env.to_vec();
        env.push(("ESCALATIONS__HTTP__BIND", &bind));
        self.spawn("ingress", "ingress.toml", &env);
        let base = format!("http://{bind}");
        self.ingress.push(base.clone());
        base
    }

    /// Starts one more worker with `config` without waiting for it.
    pub fn spawn_worker(&mut self, config: &str) {
        self.spawn("worker", config, &[]);
    }

    /// The broker the deployment uses.
    pub fn amqp_url(&self) -> String {
        self.layout.amqp_url.clone().unwrap_or_else(amqp_url)
    }

    /// Starts again every process that exited by itself (as a supervisor
    /// such as systemd or Kubernetes would); returns how many.
    pub fn restart_exited(&mut self) -> usize {
        let mut exited = Vec::new();
        let mut index = 0;
        while index < self.children.len() {
            if matches!(self.children[index].1.try_wait(), Ok(Some(_))) {
                let (role, _, launch) = self.children.remove(index);
                exited.push((role, launch));
            } else {
                index += 1;
            }
        }
        for (role, launch) in &exited {
            let env: Vec<(&str, &str)> = launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.spawn(role, &launch.config, &env);
        }
        exited.len()
    }

    /// Worker processes running.
    pub fn workers(&self) -> usize {
        self.children.iter().filter(|(role, _, _)| role == "worker").count()
    }

    /// Starts `escalations <role> --config <ingress.toml> <args>` beside the
    /// deployment (e.g. `simulate`), stopped with it.
    pub fn spawn_extra(&mut self, role: &str, args: &[&str]) {
        self.spawn_with(role, "ingress.toml", &[], args);
    }

    fn spawn(&mut self, role: &str, config: &str, env: &[(&str, &str)]) {
        self.spawn_with(role, config, env, &[]);
    }

    fn spawn_with(&mut self, role: &str, config: &str, env: &[(&str, &str)], args: &[&str]) {
        // Replacements of killed processes get logs of their own.
        let path = (self.children.len()..)
            .map(|n| self.dir.join(format!("{role}-{n}.log")))
            .find(|path| !path.exists())
            .expect("a free log name");
        let log = std::fs::File::create(path).expect("log");
        let admin_port = free_port();
        self.admin.push((role.to_owned(), format!("http://127.0.0.1:{admin_port}")));
        let mut command = Command::new(&self.binary);
        command
            .arg(role)
            .arg("--config")
            .arg(self.dir.join(config))
            .args(args)
            .env_remove("ESCALATIONS_CONFIG")
            .env("ESCALATIONS__WORKER__LEASE_TTL_MS", self.layout.lease_ttl_ms.to_string())
            .env("ESCALATIONS__WORKER__RENEW_EVERY_MS", self.layout.renew_every_ms.to_string())
            // Every process an admin listener of its own (the role's default
            // port would be taken by the second worker).
            .env("ESCALATIONS__ADMIN__BIND", format!("127.0.0.1:{admin_port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (key, value) in
            self.layout.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(env.iter().copied())
        {
            command.env(key, value);
        }
        let child = command.spawn().expect("start escalations");
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.children.push((role.to_owned(), child, Launch { config: config.to_owned(), env }));
    }

    /// The admin listeners of the processes of `role`.
    pub fn admin_of(&self, role: &str) -> Vec<String> {
        self.admin.iter().filter(|(r, _)| r == role).map(|(_, base)| base.clone()).collect()
    }

    /// Runs `escalations args… --config <config>` (an operator command) to
    /// its end.
    pub fn run(&self, args: &[&str], config: &str) -> std::process::Output {
        Command::new(&self.binary)
            .args(args)
            .arg("--config")
            .arg(self.dir.join(config))
            .env_remove("ESCALATIONS_CONFIG")
            .output()
            .expect("run escalations")
    }

    /// The log files of the processes, for a failing test to print.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(20).collect();
                    out.push_str(&format!("== {}\n", entry.path().display()));
                    for line in tail.into_iter().rev() {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    /// Stops every process, deletes the queues and drops the schema.
    pub async fn stop(mut self) {
        for (_, child, _) in self.children.drain(..) {
            terminate(child);
        }
        let deleted = self.run(&["topology", "delete", "--yes"], "ingress.toml");
        if !deleted.status.success() {
            eprintln!("deleting the queues: {}", String::from_utf8_lossy(&deleted.stderr));
        }
        if let Err(error) = self.store.drop_schema().await {
            eprintln!("dropping the schema: {error}");
        }
        if std::env::var_os("DEPLOYMENT_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            println!("logs kept in {}", self.dir.display());
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // A panicking test still ends its processes.
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn terminate(mut child: Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `check` every 50 ms until it holds; panics after `within`.
pub async fn wait_for<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One webhook as the sink saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    pub conversation: String,
    pub sequence: u64,
    pub event_type: String,
    pub webhook_id: String,
    /// `data.text` of a `widgetMessage`.
    pub text: Option<String>,
    pub signed: bool,
    /// How long after the worker applied the event (`data.timestamp`) it
    /// arrived, on this machine's one clock.
    pub after_apply: Option<Duration>,
}

struct SinkState {
    status: AtomicU16,
    verifier: standardwebhooks::Webhook,
    arrivals: Mutex<Vec<Arrival>>,
    requests: AtomicUsize,
}

/// A webhook endpoint on 127.0.0.1 that answers with a status the caller
/// sets (200 at first) and records every request it answered 2xx.
#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<SinkState>,
}

impl Sink {
    pub async fn start() -> Sink {
        let state = Arc::new(SinkState {
            status: AtomicU16::new(200),
            verifier: standardwebhooks::Webhook::new(WEBHOOK_SECRET).expect("secret"),
            arrivals: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
        });
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Sink { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// What every later request gets.
    pub fn answer(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state.arrivals.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn count(&self) -> usize {
        self.state.arrivals.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Requests answered, whatever the status.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn clear(&self) {
        self.state.arrivals.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

async fn receive(State(state): State<Arc<SinkState>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let status = StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
    if !status.is_success() {
        return status;
    }
    let at = Instant::now();
    let wall = chrono::Utc::now();
    let signed = state.verifier.verify(&body, &headers).is_ok();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let data = &json["data"];
    let arrival = Arrival {
        at,
        conversation: data["platformConversationId"].as_str().unwrap_or_default().to_owned(),
        sequence: data["sequence"].as_u64().unwrap_or(0),
        event_type: data["eventType"].as_str().unwrap_or_default().to_owned(),
        webhook_id: headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned(),
        text: data["text"].as_str().map(str::to_owned),
        signed,
        after_apply: data["timestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| (wall - t.with_timezone(&chrono::Utc)).to_std().ok()),
    };
    state.arrivals.lock().unwrap_or_else(PoisonError::into_inner).push(arrival);
    status
}

/// Per conversation, the sequences that arrived, in arrival order.
pub fn sequences_by_conversation(arrivals: &[Arrival]) -> HashMap<String, Vec<u64>> {
    let mut by: HashMap<String, Vec<u64>> = HashMap::new();
    for arrival in arrivals {
        by.entry(arrival.conversation.clone()).or_default().push(arrival.sequence);
    }
    by
}
