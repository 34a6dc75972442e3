//! A worker's admin `/readyz` follows its dependencies: the real binary runs
//! with PostgreSQL and RabbitMQ reached through TCP proxies this test owns;
//! cutting a proxy (listener closed, every connection dropped) turns the
//! worker unready naming the dependency, restoring it turns it ready again.
//! The machine's own services are never touched.

#[path = "support/netcut.rs"]
mod netcut;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netcut::{Proxy, target_of, through};
use serde_json::Value;

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `/readyz`: status and body (`None` if the process does not answer).
async fn readyz(admin: &str) -> Option<(u16, Value)> {
    let response = reqwest::get(format!("{admin}/readyz")).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

async fn wait_readiness(admin: &str, ready: bool, failing: Option<&str>, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some((status, body)) = readyz(admin).await {
            let failing_ok = failing.is_none_or(|check| body["checks"][check] != "ok");
            if (status == 200) == ready && failing_ok {
                return body;
            }
            assert!(Instant::now() < deadline, "readyz still {status} {body} after {within:?}");
        } else {
            assert!(Instant::now() < deadline, "the worker's admin listener does not answer");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_is_unready_while_postgres_or_rabbitmq_is_away() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (schema, prefix) = (format!("ready_{}", &id[..12]), format!("ready-{}", &id[..12]));
    let store = store::Store::connect(&database_url(), &schema, 2).expect("store");
    store.migrate().await.expect("migrate");

    let postgres = Proxy::start(target_of(&database_url())).await;
    let rabbitmq = Proxy::start(target_of(&amqp_url())).await;
    let admin_port =
        std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let child = Command::new(env!("CARGO_BIN_EXE_escalations"))
        .arg("worker")
        .env_remove("ESCALATIONS_CONFIG")
        .env("ESCALATIONS__DATABASE__URL", through(&database_url(), postgres.addr.port()))
        .env("ESCALATIONS__DATABASE__SCHEMA", &schema)
        .env("ESCALATIONS__BROKER__URL", through(&amqp_url(), rabbitmq.addr.port()))
        .env("ESCALATIONS__BROKER__PREFIX", &prefix)
        .env("ESCALATIONS__BROKER__SHARDS", "2")
        .env("ESCALATIONS__WIDGET__TOKEN_SECRET", "a-test-key-of-at-least-32-bytes!!")
        .env("ESCALATIONS__ADMIN__BIND", format!("127.0.0.1:{admin_port}"))
        .env("ESCALATIONS__LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start a worker");
    let worker = Worker(child);

    let body = wait_readiness(&admin, true, None, Duration::from_secs(30)).await;
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(body["checks"]["rabbitmq"], "ok");

    postgres.cut();
    let body = wait_readiness(&admin, false, Some("postgres"), Duration::from_secs(15)).await;
    println!("PostgreSQL away: {body}");
    assert_eq!(body["status"], "not_ready");
    postgres.restore().await;
    wait_readiness(&admin, true, None, Duration::from_secs(30)).await;

    rabbitmq.cut();
    let body = wait_readiness(&admin, false, Some("rabbitmq"), Duration::from_secs(15)).await;
    println!("RabbitMQ away: {body}");
    assert_eq!(body["checks"]["postgres"], "ok", "only RabbitMQ is away");
    rabbitmq.restore().await;
    wait_readiness(&admin, true, None, Duration::from_secs(30)).await;

    drop(worker);
    let cleanup = Command::new(env!("CARGO_BIN_EXE_escalations"))
        .args(["topology", "delete", "--yes"])
        .env_remove("ESCALATIONS_CONFIG")
        .env("ESCALATIONS__BROKER__URL", amqp_url())
        .env("ESCALATIONS__BROKER__PREFIX", &prefix)
        .env("ESCALATIONS__BROKER__SHARDS", "2")
        .env("ESCALATIONS__WIDGET__TOKEN_SECRET", "a-test-key-of-at-least-32-bytes!!")
        .output()
        .expect("topology delete");
    assert!(cleanup.status.success(), "{}", String::from_utf8_lossy(&cleanup.stderr));
    store.drop_schema().await.expect("drop schema");
}
