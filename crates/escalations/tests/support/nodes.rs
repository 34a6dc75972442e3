//! Private infrastructure for tests that stop, restart or kill a broker or a
//! database: a RabbitMQ node ([`PrivateRabbit`]) and a PostgreSQL cluster
//! ([`PrivatePostgres`]) of their own, on free ports, in a temporary folder,
//! so a restart touches nothing another test (or the machine's own services on
//! 5672 and 5432) relies on. Both are stopped and their folders removed when
//! dropped, also while a failed test unwinds.
//!
//! Each [`PrivateRabbit`] is a node with its own name, config file (the
//! machine's pins the AMQP listener to 5672), distribution port, Erlang cookie
//! and data and log folders owned by the `rabbitmq` user, so several can run
//! beside the machine's node (a cluster test can start more).
//! When the test runs as root, the servers run as `rabbitmq` and `postgres`
//! (PostgreSQL refuses root); otherwise as the current user.
//!
//! Used by the chaos scenarios (`tests/chaos.rs`) and, included by path, by
//! `crates/ingress/tests/broker_outage.rs`: it needs only `std` and `uuid`,
//! so any test crate with `uuid` can include it
//! (`#[path = "…/escalations/tests/support/nodes.rs"] mod nodes;`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released for a server to take).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

/// `program args…` as `user` when this process is root, else as ourselves,
/// with `HOME` set to `home` (runuser would reset it to the user's).
fn command_as(user: &str, program: &str, home: &Path) -> Command {
    let mut command = if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", user, "--", "env"]);
        command
    } else {
        Command::new("env")
    };
    command.arg(format!("HOME={}", home.display())).arg(program);
    command
}

/// A PostgreSQL program: on `PATH`, else in the newest
/// `/usr/lib/postgresql/*/bin` (Debian keeps `initdb` and `pg_ctl` there).
fn pg_program(name: &str) -> String {
    let on_path = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output();
    if on_path.is_ok_and(|out| out.status.success()) {
        return name.to_owned();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.flatten().map(|entry| entry.path().join("bin").join(name)).filter(|p| p.exists()).collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().map_or_else(|| name.to_owned(), |path| path.display().to_string())
}

/// A temporary folder the server's user owns, removed on drop.
fn owned_dir(kind: &str, user: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{kind}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create node folder");
    if is_root() {
        let status = Command::new("chown").arg("-R").arg(format!("{user}:{user}")).arg(&dir).status();
        assert!(status.is_ok_and(|s| s.success()), "chown {} to {user}", dir.display());
    }
    dir
}

fn chown_tree(dir: &Path, user: &str) {
    if is_root() {
        let _ = Command::new("chown").arg("-R").arg(format!("{user}:{user}")).arg(dir).status();
    }
}

/// A RabbitMQ node of the test's own.
pub struct PrivateRabbit {
    pub node: String,
    pub port: u16,
    dist_port: u16,
    cookie: String,
    dir: PathBuf,
    server: Option<Child>,
}

impl PrivateRabbit {
    /// Starts a fresh node and waits until it accepts connections (about
    /// 10 s on a busy 2-core machine).
    pub fn start() -> PrivateRabbit {
        let cookie = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        let mut rabbit = PrivateRabbit::prepare(cookie, "");
        rabbit.start_again();
        rabbit
    }

    /// Starts `n` fresh nodes sharing one Erlang cookie (at the same time)
    /// and joins each to the first (`stop_app`, `join_cluster`,
    /// `start_app`): a cluster of their own, which the machine's node is no
    /// part of. Queue leaders are spread over the nodes
    /// (`queue_leader_locator = balanced`). Dropping the nodes removes the
    /// cluster with them.
    pub fn start_cluster(n: usize) -> Vec<PrivateRabbit> {
        let cookie = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        let mut nodes: Vec<PrivateRabbit> = (0..n)
            .map(|_| PrivateRabbit::prepare(cookie.clone(), "queue_leader_locator = balanced\n"))
            .collect();
        std::thread::scope(|scope| {
            for node in &mut nodes {
                scope.spawn(move || node.start_again());
            }
        });
        let first = nodes[0].node.clone();
        for node in &nodes[1..] {
            for args in [&["stop_app"][..], &["join_cluster", &first], &["start_app"]] {
                let out = node.ctl(args);
                assert!(
                    out.status.success(),
                    "{} {args:?}: {}{}",
                    node.node,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            node.await_startup();
        }
        nodes
    }

    /// A node's files and folders, not started.
    fn prepare(cookie: String, extra_config: &str) -> PrivateRabbit {
        let dir = owned_dir("rabbit", "rabbitmq");
        let port = free_port();
        let node = format!("chaos-{}-{port}@localhost", std::process::id());
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n{extra_config}"),
        )
        .expect("config");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("plugins");
        std::fs::write(dir.join("rabbitmq-env.conf"), "").expect("env file");
        std::fs::write(dir.join(".erlang.cookie"), &cookie).expect("cookie");
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("node folder");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::Permissions::from_mode(0o400);
            std::fs::set_permissions(dir.join(".erlang.cookie"), mode).expect("cookie mode");
        }
        chown_tree(&dir, "rabbitmq");
        PrivateRabbit { node, port, dist_port: free_port(), cookie, dir, server: None }
    }

    /// Stops the broker application only (`rabbitmqctl stop_app`): the
    /// Erlang node stays up and in the cluster, every client connection
    /// to it is closed and its queue replicas are offline.
    pub fn stop_app(&self) {
        let out = self.ctl(&["stop_app"]);
        assert!(out.status.success(), "stop_app {}: {}", self.node, String::from_utf8_lossy(&out.stderr));
    }

    /// Starts the broker application again and waits until it is up.
    pub fn start_app(&self) {
        let out = self.ctl(&["start_app"]);
        assert!(out.status.success(), "start_app {}: {}", self.node, String::from_utf8_lossy(&out.stderr));
        self.await_startup();
    }

    /// Whether the node (its Erlang VM) is running.
    pub fn running(&self) -> bool {
        self.server.is_some()
    }

    fn await_startup(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self.ctl(&["await_startup", "-t", "5"]).status.success() {
            assert!(Instant::now() < deadline, "{} not up within 90 s:\n{}", self.node, self.log_tail());
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// How many of the queues whose names start with `prefix` each node
    /// leads, asked of this node (`list_queues name leader`).
    pub fn leaders(&self, prefix: &str) -> std::collections::BTreeMap<String, usize> {
        let out = self.ctl(&["-q", "list_queues", "name", "leader", "--formatter", "json"]);
        assert!(out.status.success(), "list_queues: {}", String::from_utf8_lossy(&out.stderr));
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("list_queues json");
        let mut leaders = std::collections::BTreeMap::new();
        for row in rows {
            if row["name"].as_str().is_some_and(|name| name.starts_with(prefix)) {
                let leader = row["leader"].as_str().unwrap_or_default().to_owned();
                *leaders.entry(leader).or_insert(0) += 1;
            }
        }
        leaders
    }

    /// `amqp://guest:guest@127.0.0.1:{port}/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Environment shared by the server and `rabbitmqctl`: the node's own
    /// name, files and folders (the cookie is in `HOME`, see [`command_as`]).
    fn env(&self, command: &mut Command) {
        let dir = &self.dir;
        command
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("node.pid"))
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .current_dir(dir);
    }

    /// `rabbitmqctl -n NODE args…` against this node.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut command = command_as("rabbitmq", "rabbitmqctl", &self.dir);
        self.env(&mut command);
        // The CLI's wrapper may reset HOME, so the cookie is also given outright.
        command
            .arg("--erlang-cookie")
            .arg(&self.cookie)
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .stdin(Stdio::null());
        command.output().expect("run rabbitmqctl")
    }

    /// Starts the node (again, with its data: durable queues and their
    /// messages survive) and waits until it is up.
    pub fn start_again(&mut self) {
        assert!(self.server.is_none(), "{} is already running", self.node);
        let out = std::fs::File::create(self.dir.join("server.out")).expect("server log");
        let mut command = command_as("rabbitmq", "rabbitmq-server", &self.dir);
        self.env(&mut command);
        command.stdin(Stdio::null()).stdout(out.try_clone().expect("log")).stderr(out);
        self.server = Some(command.spawn().expect("start rabbitmq-server"));
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.server.as_mut().and_then(|s| s.try_wait().ok().flatten()) {
                self.server = None;
                panic!("{} exited at start ({status}):\n{}", self.node, self.log_tail());
            }
            if self.ctl(&["await_startup", "-t", "2"]).status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "{} not up within 90 s:\n{}", self.node, self.log_tail());
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Stops the whole node (every connection is closed) and waits for it
    /// to exit.
    pub fn stop(&mut self) {
        let Some(mut server) = self.server.take() else { return };
        let stopped = self.ctl(&["stop"]);
        if !stopped.status.success() {
            eprintln!("rabbitmqctl stop: {}", String::from_utf8_lossy(&stopped.stderr));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill_beam();
        let _ = server.kill();
        let _ = server.wait();
    }

    /// Crashes the node: SIGKILL to its Erlang VM, no goodbye to clients or
    /// to the other nodes of its cluster. Waits until it is gone.
    pub fn kill(&mut self) {
        let Some(mut server) = self.server.take() else { return };
        self.kill_beam();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = server.kill();
        let _ = server.wait();
    }

    /// SIGKILLs the Erlang VM named in the pid file (the runuser wrapper's
    /// child), when a clean stop did not work.
    fn kill_beam(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("node.pid")) {
            // Quiet: on drop the VM is usually gone already.
            let _ = Command::new("kill").arg("-KILL").arg(pid.trim()).stderr(Stdio::null()).status();
        }
    }

    fn log_tail(&self) -> String {
        let mut text = std::fs::read_to_string(self.dir.join("server.out")).unwrap_or_default();
        let log = self.dir.join("log").join(format!("{}.log", self.node));
        text.push_str(&std::fs::read_to_string(log).unwrap_or_default());
        let lines: Vec<&str> = text.lines().rev().take(30).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.stop();
        self.kill_beam();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL cluster of the test's own (`initdb`, then `pg_ctl`), trust
/// auth for `postgres`, autovacuum off like the machine's.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    running: bool,
}

impl PrivatePostgres {
    /// Creates and starts a fresh cluster.
    pub fn start() -> PrivatePostgres {
        let dir = owned_dir("postgres", "postgres");
        let data = dir.join("data");
        let init = command_as("postgres", &pg_program("initdb"), &dir)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .current_dir(&dir)
            .output()
            .expect("run initdb (is PostgreSQL installed?)");
        if !init.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("initdb: {}", String::from_utf8_lossy(&init.stderr));
        }
        let mut postgres = PrivatePostgres { port: free_port(), dir, running: false };
        postgres.start_again();
        postgres
    }

    /// `postgres://postgres@127.0.0.1:{port}/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        command_as("postgres", &pg_program("pg_ctl"), &self.dir)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl")
    }

    /// Starts the cluster (again) and waits until it accepts connections.
    pub fn start_again(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c autovacuum=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        let log = log.to_str().expect("utf-8 path");
        let started = self.pg_ctl(&["-w", "-t", "60", "-l", log, "-o", &options, "start"]);
        assert!(
            started.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&started.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
        self.running = true;
    }

    /// Makes this cluster a primary whose commits wait for a standby
    /// (`synchronous_standby_names = '*'`, `synchronous_commit = on`): a
    /// transaction is committed only once a standby has its WAL on disk, so
    /// a promoted standby has every commit, even after a crash of this one.
    pub fn require_synchronous_standby(&self) {
        self.psql(&["ALTER SYSTEM SET synchronous_standby_names = '*'", "SELECT pg_reload_conf()"]);
    }

    /// Runs each statement with `psql -c` (one transaction each: ALTER
    /// SYSTEM refuses to run inside a larger one).
    pub fn psql(&self, statements: &[&str]) {
        let mut command = Command::new(pg_program("psql"));
        command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-v", "ON_ERROR_STOP=1"]);
        for statement in statements {
            command.args(["-c", statement]);
        }
        let out = command.output().expect("run psql");
        assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A streaming standby of this cluster on a port of its own
    /// (`pg_basebackup -R`: a base backup that starts as a standby of this
    /// one), started and streaming.
    pub fn start_standby(&self) -> PrivatePostgres {
        let dir = owned_dir("postgres", "postgres");
        let backup = command_as("postgres", &pg_program("pg_basebackup"), &dir)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-R", "-X", "stream", "--no-sync", "-c", "fast"])
            .current_dir(&dir)
            .output()
            .expect("run pg_basebackup");
        if !backup.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("pg_basebackup: {}", String::from_utf8_lossy(&backup.stderr));
        }
        let mut standby = PrivatePostgres { port: free_port(), dir, running: false };
        standby.start_again();
        standby
    }

    /// Promotes this standby to a primary and waits until it takes writes.
    pub fn promote(&self) {
        let out = self.pg_ctl(&["-w", "-t", "60", "promote"]);
        assert!(out.status.success(), "pg_ctl promote: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the cluster: `fast` closes every session cleanly, `immediate`
    /// is a crash (recovery at the next start).
    pub fn stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let stopped = self.pg_ctl(&["-w", "-t", "60", "-m", mode, "stop"]);
        if !stopped.status.success() {
            eprintln!("pg_ctl stop: {}", String::from_utf8_lossy(&stopped.stderr));
        }
        self.running = false;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
