//! The admin listener of real processes (one ingress, one worker, the real
//! binary): a worker's `/metrics` has the batch, commit, webhook and breaker
//! series after a little traffic; the Grafana dashboard names only metrics
//! the roles export; the operations API refuses requests without the admin
//! token and answers what the CLI prints, for the same dead letters.

#[path = "support/deployment.rs"]
mod deployment;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use deployment::{ADMIN_TOKEN, BOT, Deployment, KEY, Layout, Sink, wait_for};
use serde_json::{Value, json};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_escalations"))
}

async fn escalate(deployment: &Deployment, conversation: &str) {
    let response = reqwest::Client::new()
        .post(format!("{}/widget/v1/conversations/{conversation}/escalate", deployment.ingress[0]))
        .bearer_auth(KEY)
        .header("botid", BOT)
        .json(&json!({}))
        .send()
        .await
        .expect("escalate");
    assert_eq!(response.status(), 200, "escalate {conversation}");
}

async fn get_text(url: &str) -> String {
    reqwest::get(url).await.expect("request").text().await.expect("body")
}

/// The admin API with the token: (status, JSON body).
async fn api(method: reqwest::Method, url: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

/// The CLI's JSON output (and exit code) with the deployment's settings.
fn cli(deployment: &Deployment, args: &[&str]) -> (Option<i32>, Value, String) {
    let output = deployment.run(args, "worker.toml");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code(), json, stderr)
}

/// Metric names with at least one sample in a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every `escalations_*` name the dashboard's queries use.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/escalations.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard"))
        .expect("the dashboard is JSON");
    let mut names = BTreeSet::new();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "the dashboard has queries: {exprs:?}");
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("escalations_") {
            let name: String =
                rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query", Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listeners_serve_metrics_the_dashboard_and_the_operations_api() {
    let sink = Sink::start().await;
    let layout =
        Layout { ingress: 1, workers: 1, shards: 2, webhook_url: Some(sink.url()), ..Layout::default() };
    let deployment = Deployment::start(binary(), &layout).await;
    let outcome = tokio::spawn(scenario(deployment, sink)).await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn scenario(deployment: Deployment, sink: Sink) {
    let worker = deployment.admin_of("worker")[0].clone();
    let ingress = deployment.admin_of("ingress")[0].clone();
    println!("worker admin {worker}, ingress admin {ingress}");

    // Two conversations whose endpoint answers 410: two dead letters.
    sink.answer(410);
    for conversation in ["gone-1", "gone-2"] {
        escalate(&deployment, conversation).await;
    }
    let url = format!("{worker}/v1/dead-letters?bot={BOT}&reason=final_status");
    wait_for(Duration::from_secs(30), "two dead letters", || async {
        api(reqwest::Method::GET, &url).await.1.as_array().is_some_and(|l| l.len() == 2)
    })
    .await;
    // Then a healthy endpoint: one delivered.
    sink.answer(200);
    escalate(&deployment, "fine-1").await;
    wait_for(Duration::from_secs(30), "a delivered webhook", || async { sink.count() >= 1 }).await;

    // The worker's metrics: batches, commits, webhooks, breaker, gauges.
    let text = get_text(&format!("{worker}/metrics")).await;
    for series in [
        "escalations_worker_batch_size_bucket{le=\"256\"}",
        "escalations_worker_commit_seconds_bucket{le=\"10\"}",
        "escalations_webhook_latency_seconds_bucket{le=\"15\"}",
        "escalations_webhook_attempts_total{",
        "escalations_webhook_dead_letters_total{reason=\"final_status\"}",
        "escalations_outbox_pending{bot=\"acme\"}",
        "escalations_dead_letters{reason=\"final_status\"} 2",
        "escalations_shard_queue_ready_messages{shard=\"1\"}",
        "escalations_gauges_up{source=\"postgres\"} 1",
        "escalations_gauges_up{source=\"rabbitmq\"} 1",
    ] {
        assert!(text.contains(series), "{series} missing from the worker's /metrics:\n{text}");
    }
    for state in ["closed", "half_open", "open"] {
        let series = format!("escalations_webhook_breaker_state{{bot=\"acme\",state=\"{state}\"}}");
        assert!(text.contains(&series), "{series} missing:\n{text}");
    }
    assert!(!text.contains("gone-1"), "no conversation id in a label");
    // The public port has no metrics.
    let public = reqwest::get(format!("{}/metrics", deployment.ingress[0])).await.expect("request");
    assert_eq!(public.status(), 404);

    // Every metric the dashboard queries is exported by one of the roles.
    let mut live = exported(&text);
    live.extend(exported(&get_text(&format!("{ingress}/metrics")).await));
    let missing: Vec<String> = dashboard_metrics().difference(&live).cloned().collect();
    assert!(missing.is_empty(), "the dashboard queries metrics nobody exports: {missing:?}");

    // Health and readiness need no token; the operations do.
    assert!(get_text(&format!("{worker}/readyz")).await.contains("\"postgres\":\"ok\""));
    let bare = reqwest::get(format!("{worker}/v1/dead-letters")).await.expect("request");
    assert_eq!(bare.status(), 401);
    assert!(bare.headers().contains_key("www-authenticate"));
    let wrong = reqwest::Client::new()
        .get(format!("{worker}/v1/dead-letters"))
        .bearer_auth("not-the-admin-token")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 401);
    let document: Value =
        reqwest::get(format!("{worker}/openapi.json")).await.expect("openapi").json().await.expect("json");
    for path in ["/v1/dead-letters", "/v1/dead-letters/{id}/replay", "/v1/shards", "/v1/dead-events"] {
        assert!(document["paths"][path].is_object(), "{path} documented");
    }

    // The API answers what the CLI prints.
    let (code, listed_by_cli, _) = cli(&deployment, &["dlq", "list", "--bot", BOT, "--json"]);
    assert_eq!(code, Some(0));
    let (status, listed_by_api) =
        api(reqwest::Method::GET, &format!("{worker}/v1/dead-letters?bot={BOT}")).await;
    assert_eq!(status, 200);
    assert_eq!(listed_by_api, listed_by_cli, "list");
    let ids: Vec<i64> =
        listed_by_api.as_array().expect("list").iter().map(|l| l["id"].as_i64().expect("id")).collect();
    let (first, second) = (ids[0], ids[1]);
    let (_, shown_by_cli, _) = cli(&deployment, &["dlq", "show", &first.to_string(), "--json"]);
    let (_, shown_by_api) = api(reqwest::Method::GET, &format!("{worker}/v1/dead-letters/{first}")).await;
    assert_eq!(shown_by_api, shown_by_cli, "show");
    let (_, dry_by_cli, _) = cli(&deployment, &["dlq", "replay", "--bot", BOT, "--json"]);
    let (_, dry_by_api) =
        api(reqwest::Method::POST, &format!("{worker}/v1/dead-letters/replay?bot={BOT}")).await;
    assert_eq!(dry_by_api, dry_by_cli, "dry run");
    assert_eq!(dry_by_api["dryRun"], true);
    assert_eq!(dry_by_api["matched"], 2);

    // Replay one each way: the same answer, the same outcome.
    let (code, replayed_by_cli, _) = cli(&deployment, &["dlq", "replay", &first.to_string(), "--json"]);
    assert_eq!(code, Some(0));
    let (status, replayed_by_api) =
        api(reqwest::Method::POST, &format!("{worker}/v1/dead-letters/{second}/replay")).await;
    assert_eq!(status, 200);
    assert_eq!(replayed_by_cli, json!({"id": first, "status": "pending"}));
    assert_eq!(replayed_by_api, json!({"id": second, "status": "pending"}));
    // Both settle alike. (A `widgetEscalate` whose 410 failed its escalation is
    // settled `skipped`/`escalation_ended` on replay, never sent: docs/protocol.md §4.)
    wait_for(Duration::from_secs(30), "both replays settled", || async {
        let mut settled = 0;
        for id in [first, second] {
            let (_, shown) = api(reqwest::Method::GET, &format!("{worker}/v1/dead-letters/{id}")).await;
            if shown["status"] != "pending" {
                settled += 1;
            }
        }
        settled == 2
    })
    .await;
    let (_, first_now) = api(reqwest::Method::GET, &format!("{worker}/v1/dead-letters/{first}")).await;
    let (_, second_now) = api(reqwest::Method::GET, &format!("{worker}/v1/dead-letters/{second}")).await;
    println!("after the replays: {} / {}", first_now["status"], first_now["reason"]);
    for field in ["status", "reason", "replays", "eventType"] {
        assert_eq!(first_now[field], second_now[field], "{field} after a CLI and an API replay");
    }
    assert_eq!(first_now["replays"], 1);

    // Errors: the same kinds, as exit codes and statuses.
    let (code, _, stderr) = cli(&deployment, &["dlq", "replay", &first.to_string()]);
    assert_eq!(code, Some(1), "not a dead letter: {stderr}");
    let (status, body) =
        api(reqwest::Method::POST, &format!("{worker}/v1/dead-letters/{first}/replay")).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("refused")));
    assert!(stderr.contains(body["message"].as_str().expect("message")), "{stderr} / {body}");
    let (code, _, _) = cli(&deployment, &["dlq", "show", "999999"]);
    assert_eq!(code, Some(3));
    let (status, _) = api(reqwest::Method::GET, &format!("{worker}/v1/dead-letters/999999")).await;
    assert_eq!(status, 404);
    let (code, _, stderr) = cli(&deployment, &["dlq", "purge", "--bot", BOT]);
    assert_eq!(code, Some(1));
    let (status, body) =
        api(reqwest::Method::POST, &format!("{worker}/v1/dead-letters/purge?bot={BOT}")).await;
    assert_eq!(status, 409);
    assert!(stderr.contains(body["message"].as_str().expect("message")), "{stderr} / {body}");
    let (code, _, _) = cli(&deployment, &["dlq", "list", "--since", "yesterday"]);
    assert_eq!(code, Some(2));
    let (status, _) = api(reqwest::Method::GET, &format!("{worker}/v1/dead-letters?since=yesterday")).await;
    assert_eq!(status, 400);
    let (status, _) =
        api(reqwest::Method::POST, &format!("{worker}/v1/dead-letters/replay?bots={BOT}")).await;
    assert_eq!(status, 400, "an unknown filter is refused, never ignored");

    // Shard ownership and a timeline, both ways.
    let (_, shards_by_cli, _) = cli(&deployment, &["shards", "--json"]);
    let (_, shards_by_api) = api(reqwest::Method::GET, &format!("{worker}/v1/shards")).await;
    assert_eq!(shards_by_api["liveWorkers"], shards_by_cli["liveWorkers"]);
    assert_eq!(shards_by_api["shards"].as_array().map(Vec::len), Some(2));
    let (_, timeline_by_cli, _) = cli(&deployment, &["conversations", "show", BOT, "gone-1", "--json"]);
    let (_, timeline_by_api) =
        api(reqwest::Method::GET, &format!("{worker}/v1/conversations/{BOT}/gone-1")).await;
    assert_eq!(timeline_by_api, timeline_by_cli, "timeline");

    deployment.stop().await;
}
