//! `escalations dlq …` and `escalations conversations show` run as the real
//! binary against a fresh PostgreSQL schema: their output, their errors and
//! their exit codes.

use std::process::Output;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use domain::webhook::{WebhookEnvelope, WebhookEvent};
use domain::widget::{WidgetEnvelope, WidgetEvent};
use domain::{
    BotId, ConversationId, EscalationId, EventId, FieldCode, FieldWarning, MessageId, Phase, RejectCode,
    Verdict,
};
use store::{ConvKey, DeadReason, EventRecord, NewAttempt, Settle, Store};

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn key(bot: &str, conversation: &str) -> ConvKey {
    ConvKey::new(BotId::parse(bot).expect("bot"), ConversationId::parse(conversation).expect("conversation"))
}

fn message(sequence: u64) -> WebhookEnvelope {
    WebhookEnvelope {
        sequence,
        timestamp: Utc::now(),
        escalation_id: Some(EscalationId::parse("esc-1").expect("id")),
        event: WebhookEvent::WidgetMessage {
            text: format!("message {sequence}"),
            message_id: MessageId::parse(format!("m-{sequence}")).expect("id"),
        },
    }
}

fn attempt(status: Option<u16>, error: &str, ms: u32) -> NewAttempt {
    NewAttempt { at: Utc::now(), status_code: status, error: Some(error.to_owned()), latency_ms: ms }
}

/// Runs the binary with settings pointing at `schema`.
fn cli(schema: &str, args: &[&str]) -> Output {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_escalations"))
        .args(args)
        .env_remove("ESCALATIONS_CONFIG")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("ESCALATIONS__DATABASE__URL", database_url())
        .env("ESCALATIONS__DATABASE__SCHEMA", schema)
        .env("ESCALATIONS__WIDGET__TOKEN_SECRET", "a-test-key-of-at-least-32-bytes!!")
        .env("ESCALATIONS__LOG__FILTER", "warn")
        .output()
        .expect("run escalations");
    println!("$ escalations {}\n{}{}", args.join(" "), stdout(&output), stderr(&output));
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn ok(output: &Output) -> String {
    assert!(output.status.success(), "expected success: {}", stderr(output));
    stdout(output)
}

/// Fails with exit `code` (2 usage, 3 not found, 1 refused) and `message` on stderr.
fn fails(output: &Output, code: i32, message: &str) {
    assert_eq!(output.status.code(), Some(code), "expected exit code {code}");
    assert!(stderr(output).contains(message), "stderr {:?} should contain {message:?}", stderr(output));
}

#[test]
fn exit_codes_tell_infrastructure_and_settings_failures_apart() {
    // Nothing listens on port 1: PostgreSQL unreachable.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_escalations"))
        .args(["dlq", "list"])
        .env_remove("ESCALATIONS_CONFIG")
        .env("ESCALATIONS__DATABASE__URL", "postgres://postgres@127.0.0.1:1/postgres")
        .env("ESCALATIONS__WIDGET__TOKEN_SECRET", "a-test-key-of-at-least-32-bytes!!")
        .env("ESCALATIONS__LOG__FILTER", "off")
        .output()
        .expect("run escalations");
    fails(&output, 4, "listing dead letters");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_escalations"))
        .args(["dlq", "list"])
        .env_remove("ESCALATIONS_CONFIG")
        .env("ESCALATIONS__WORKER__RENEW_EVERY_MS", "9000")
        .env("ESCALATIONS__WIDGET__TOKEN_SECRET", "a-test-key-of-at-least-32-bytes!!")
        .output()
        .expect("run escalations");
    fails(&output, 2, "worker.renew_every_ms");
}

#[test]
fn config_check_prints_toml_without_secrets() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_escalations"))
        .args(["config", "check"])
        .env_remove("ESCALATIONS_CONFIG")
        .env("ESCALATIONS__DATABASE__URL", "postgres://postgres:db-password@127.0.0.1:5432/postgres")
        .env("ESCALATIONS__ADMIN__TOKEN", "admin-token-0123456789")
        .env("ESCALATIONS__WORKER__LEASE_TTL_MS", "7000")
        .env("ESCALATIONS__WIDGET__TOKEN_SECRET", "a-test-key-of-at-least-32-bytes!!")
        .output()
        .expect("run escalations");
    let text = ok(&output);
    for secret in ["db-password", "admin-token-0123456789", "a-test-key"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(text.contains("[worker]") && text.contains("lease_ttl_ms = 7000"), "{text}");
    assert!(text.contains("token = \"***\""), "{text}");
}

/// acme/conv-1: #1 dead (out of budget, two attempts), #2 delivered, #3 dead
/// (410); acme/conv-2: #1 dead (out of budget); other/conv-9: #1 dead (410).
/// Plus events and a widget event on acme/conv-1. Returns the ids by (conversation, sequence).
async fn seed(store: &Store) -> Vec<((String, u64), i64)> {
    let rows = vec![
        (key("acme", "conv-1"), message(1)),
        (key("acme", "conv-1"), message(2)),
        (key("acme", "conv-1"), message(3)),
        (key("acme", "conv-2"), message(1)),
        (key("other", "conv-9"), message(1)),
    ];
    let earlier = Utc::now() - TimeDelta::seconds(5);
    let mut client = store.client().await.expect("client");
    let tx = client.transaction().await.expect("begin");
    store::insert_webhook_deliveries(&tx, &rows, earlier).await.expect("insert");
    let conv = key("acme", "conv-1");
    let event = |id: &str, event_type: &str, verdict, before, after| EventRecord {
        key: conv.clone(),
        event_id: EventId::parse(id).expect("id"),
        id_space: domain::IdSpace::Agent,
        event_type: event_type.to_owned(),
        verdict,
        phase_before: before,
        phase_after: after,
        received_at: earlier,
        applied_at: earlier,
        warnings: Vec::new(),
    };
    store::record_events(
        &tx,
        &[
            event("e-1", "escalate", Verdict::Applied, Phase::Idle, Phase::Requested),
            event(
                "e-2",
                "message",
                Verdict::Rejected(RejectCode::NotConnected),
                Phase::Requested,
                Phase::Requested,
            ),
            EventRecord {
                warnings: vec![FieldWarning::new("agentAvatar", FieldCode::NotHttps, "dropped")],
                ..event("e-3", "escalationSuccess", Verdict::Applied, Phase::Requested, Phase::Connected)
            },
        ],
    )
    .await
    .expect("events");
    let widget = WidgetEnvelope {
        sequence: 1,
        timestamp: earlier,
        escalation_id: EscalationId::parse("esc-1").expect("id"),
        event: WidgetEvent::EscalationRequested,
    };
    // A refused visitor message (docs/protocol.md §5: reported, and in the timeline).
    let refused = WidgetEnvelope {
        sequence: 2,
        timestamp: earlier,
        escalation_id: EscalationId::parse("esc-1").expect("id"),
        event: WidgetEvent::VisitorRejected {
            code: domain::RejectCode::HeldMessagesFull,
            message_id: Some(domain::MessageId::parse("c-21").expect("id")),
        },
    };
    store::insert_widget_events(&tx, &[(conv.clone(), widget), (conv, refused)]).await.expect("widget");
    tx.commit().await.expect("commit");

    let lease = Duration::from_secs(60);
    let caps = [("acme", 10), ("other", 10)];
    let mut ids: Vec<((String, u64), i64)> = Vec::new();
    for _round in 0..10 {
        let claimed = store.claim_due_deliveries("seed", &caps, lease).await.expect("claim");
        for delivery in claimed.deliveries {
            let (conversation, sequence) = (delivery.key.conversation_id.to_string(), delivery.sequence);
            if !ids.iter().any(|(_, id)| *id == delivery.id) {
                ids.push(((conversation.clone(), sequence), delivery.id));
            }
            let now = Utc::now();
            let (first, settle) = match (conversation.as_str(), sequence, delivery.attempts) {
                ("conv-1", 2, _) => (attempt(Some(200), "", 12), Settle::Delivered(now)),
                ("conv-1", 3, _) | ("conv-9", _, _) => {
                    (attempt(Some(410), "HTTP 410 Gone", 7), Settle::Dead(DeadReason::FinalStatus, now))
                }
                // Out of budget after two attempts.
                (_, _, 0) => (attempt(Some(503), "HTTP 503 Service Unavailable", 15), Settle::RetryAt(now)),
                _ => (attempt(None, "timed out", 10_000), Settle::Dead(DeadReason::OutOfBudget, now)),
            };
            let first = NewAttempt { error: first.error.filter(|e| !e.is_empty()), ..first };
            assert!(store.settle_delivery(delivery.id, "seed", Some(&first), settle).await.expect("settle"));
        }
    }
    ids
}

fn id_of(ids: &[((String, u64), i64)], conversation: &str, sequence: u64) -> i64 {
    ids.iter().find(|((c, s), _)| c == conversation && *s == sequence).map(|(_, id)| *id).expect("seeded")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_and_conversations_commands() {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let store = Store::connect(&database_url(), &schema, 4).expect("connect");
    store.migrate().await.expect("migrate");
    let outcome = tokio::spawn(commands(store.clone(), schema)).await;
    store.drop_schema().await.expect("drop schema");
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn commands(store: Store, schema: String) {
    let ids = seed(&store).await;
    let s = schema.as_str();
    let (c1_1, c1_3, c2_1, c9_1) = (
        id_of(&ids, "conv-1", 1),
        id_of(&ids, "conv-1", 3),
        id_of(&ids, "conv-2", 1),
        id_of(&ids, "conv-9", 1),
    );

    // list: a table of the four dead letters, then filters.
    let table = ok(&cli(s, &["dlq", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("REASON") && lines[0].contains("LAST ERROR"));
    assert_eq!(lines.len(), 6, "header, four rows, count");
    assert_eq!(lines[5], "4 dead letter(s)");
    assert!(
        table.contains("out_of_budget") && table.contains("HTTP 410 Gone") && table.contains("timed out")
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&cli(s, &["dlq", "list", "--bot", "other", "--json"]))).expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(1));
    assert_eq!(json[0]["id"], c9_1);
    assert_eq!(json[0]["reason"], "final_status");
    assert_eq!(json[0]["webhookId"], delivery::webhook_id("other", "conv-9", 1));
    let finals = ok(&cli(s, &["dlq", "list", "--reason", "final_status", "--since", "1h"]));
    assert!(finals.contains("2 dead letter(s)"), "{finals}");
    let none = ok(&cli(s, &["dlq", "list", "--until", "2000-01-01T00:00:00Z"]));
    assert_eq!(none, "no dead letters match\n");

    // Bad filters name the flag and the expected format.
    fails(
        &cli(s, &["dlq", "list", "--since", "yesterday"]),
        2,
        "invalid since \"yesterday\": expected an RFC 3339 time",
    );
    fails(&cli(s, &["dlq", "list", "--until", "5x"]), 2, "invalid until \"5x\"");
    fails(
        &cli(s, &["dlq", "list", "--reason", "bored"]),
        2,
        "invalid reason \"bored\": expected one of final_status, out_of_budget, no_endpoint",
    );
    fails(&cli(s, &["dlq", "list", "--since", "1h", "--until", "2h"]), 2, "must be before until");
    fails(&cli(s, &["dlq", "list", "--limit", "many"]), 2, "invalid value 'many'");

    // show: payload and every attempt; unknown ids.
    let shown = ok(&cli(s, &["dlq", "show", &c1_1.to_string()]));
    assert!(shown.contains(&format!("webhook-id:   {}", delivery::webhook_id("acme", "conv-1", 1))));
    assert!(shown.contains("attempts (2):") && shown.contains("HTTP 503 Service Unavailable (15 ms)"));
    assert!(
        shown.contains("timed out (10000 ms)") && shown.contains("\"platformConversationId\": \"conv-1\"")
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&cli(s, &["dlq", "show", &c1_1.to_string(), "--json"]))).expect("json");
    assert_eq!(json["attempts"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["payload"]["data"]["sequence"], 1);
    fails(&cli(s, &["dlq", "show", "999999"]), 3, "dead letter 999999 not found");

    // Bulk replay: a dry run first, nothing changes; then --yes.
    let dry = ok(&cli(s, &["dlq", "replay", "--bot", "acme"]));
    assert!(dry.starts_with("dry run: 3 dead letter(s) in 2 conversation(s) would be replayed:"), "{dry}");
    assert!(dry.contains(&format!("acme/conv-1: #1 (id {c1_1}), #3 (id {c1_3})")), "{dry}");
    assert_eq!(store.list_dead_letters(&Default::default(), 100).await.expect("list").len(), 4);
    let replayed = ok(&cli(s, &["dlq", "replay", "--bot", "acme", "--yes"]));
    assert!(
        replayed.contains("replayed 2/3 (acme/conv-1: 2)") && replayed.contains("replayed 3 dead letter(s)"),
        "{replayed}"
    );
    for id in [c1_1, c1_3, c2_1] {
        let record = store.delivery(id).await.expect("read").expect("row");
        assert_eq!((record.status.as_str(), record.attempts, record.replays), ("pending", 0, 1));
    }

    // Single replay, then errors for rows that are not dead.
    ok(&cli(s, &["dlq", "replay", &c9_1.to_string()]));
    fails(
        &cli(s, &["dlq", "replay", &c9_1.to_string()]),
        1,
        &format!("delivery {c9_1} is pending, not a dead letter"),
    );
    fails(&cli(s, &["dlq", "replay", "424242"]), 3, "dead letter 424242 not found");
    fails(
        &cli(s, &["dlq", "replay", "1", "--bot", "acme"]),
        2,
        "give either a dead letter id or filters, not both",
    );

    // Skip and purge need dead letters: make two again.
    let lease = Duration::from_secs(60);
    for claimed in store.claim_due_deliveries("seed", &[("acme", 10)], lease).await.expect("claim").deliveries
    {
        let settle = Settle::Dead(DeadReason::FinalStatus, Utc::now());
        store
            .settle_delivery(claimed.id, "seed", Some(&attempt(Some(404), "HTTP 404 Not Found", 3)), settle)
            .await
            .expect("settle");
    }
    ok(&cli(s, &["dlq", "skip", &c2_1.to_string()]));
    assert_eq!(store.delivery(c2_1).await.expect("read").expect("row").status, "skipped");
    fails(
        &cli(s, &["dlq", "skip", &c2_1.to_string()]),
        1,
        &format!("delivery {c2_1} is skipped, not a dead letter"),
    );
    fails(
        &cli(s, &["dlq", "purge", "--bot", "acme"]),
        1,
        "refusing to delete 1 dead letter(s) without --yes",
    );
    assert_eq!(
        ok(&cli(s, &["dlq", "purge", "--bot", "acme", "--yes"])),
        "deleted 1 dead letter(s) and their attempts\n"
    );
    assert!(store.delivery(c1_1).await.expect("read").is_none());

    // The timeline.
    let timeline = ok(&cli(s, &["conversations", "show", "acme", "conv-1"]));
    assert!(timeline.starts_with("conversation acme/conv-1: no state stored"), "{timeline}");
    for expected in [
        "event    escalate e-1 applied  idle → requested",
        "event    message e-2 rejected not_connected",
        "event    escalationSuccess e-3 applied  requested → connected  warning: agentAvatar not_https (dropped)",
        "widget   #1 escalationRequested",
        "widget   #2 visitorRejected held_messages_full (message c-21)",
        "webhook  #2 widgetMessage delivered",
        "attempt  #3 widgetMessage attempt 1: HTTP 410 Gone (7 ms)",
        "webhook  #3 widgetMessage pending (next attempt)",
    ] {
        assert!(timeline.contains(expected), "timeline lacks {expected:?}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(&cli(s, &["conversations", "show", "acme", "conv-1", "--json"])))
            .expect("json");
    assert!(json["timeline"].as_array().is_some_and(|t| t.len() > 6));
    let warned = json["timeline"].as_array().and_then(|t| t.iter().find(|e| e["eventId"] == "e-3").cloned());
    assert_eq!(warned.expect("e-3 in the timeline")["warnings"][0]["code"], "not_https");
    fails(&cli(s, &["conversations", "show", "acme", "nope"]), 3, "conversation acme/nope not found");
    fails(&cli(s, &["conversations", "show", "acme"]), 2, "required");
}
