//! The worked signing example of `docs/protocol.md` §4, computed by the real
//! code: the settings' secret decoding, the dispatcher's payload, `webhook-id`
//! and `webhook-signature`. The test fails if the document shows anything
//! else, so the example can be trusted. Run with `--nocapture` to print it.

use chrono::DateTime;
use delivery::{signature_header, webhook_id};
use domain::webhook::{WebhookEnvelope, WebhookEvent, WebhookPayload};
use domain::{BotId, ConversationId, EscalationId, MessageId};
use settings::Settings;

/// The Standard Webhooks specification's example secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TIMESTAMP: i64 = 1_700_000_000;

fn settings() -> Settings {
    let toml = format!(
        r#"
        [widget]
        token_secret = "protocol-doc-example-token-secret-0123456789"
        [[bots]]
        id = "acme-support"
        api_keys = ["example-acme-key-2024-rotate-me"]
        webhook_url = "https://contact-centre.example.com/webhooks/escalations"
        webhook_secrets = ["{SECRET}"]
        "#
    );
    Settings::from_sources(Some(toml.as_str()), Vec::<(String, String)>::new()).expect("valid settings")
}

#[test]
fn the_documented_signing_example_is_what_the_code_computes() {
    let settings = settings();
    let keys = settings.bots[0].webhook_keys();
    let payload = WebhookPayload::new(
        BotId::parse("acme-support").expect("id"),
        ConversationId::parse("123456789").expect("id"),
        WebhookEnvelope {
            sequence: 2,
            timestamp: DateTime::from_timestamp(TIMESTAMP, 0).expect("time"),
            escalation_id: Some(EscalationId::parse("esc-1").expect("id")),
            event: WebhookEvent::WidgetMessage {
                text: "Hello".to_owned(),
                message_id: MessageId::parse("m-1").expect("id"),
            },
        },
    );
    // The dispatcher posts exactly these bytes.
    let body = serde_json::to_vec(&payload).expect("serializes");
    let id = webhook_id("acme-support", "123456789", 2);
    let signature = signature_header(&keys, &id, TIMESTAMP, &body);
    let body = String::from_utf8(body).expect("utf-8");
    let signed = format!("{id}.{TIMESTAMP}.{body}");
    println!("secret:            {SECRET}");
    println!("webhook-id:        {id}");
    println!("webhook-timestamp: {TIMESTAMP}");
    println!("body:              {body}");
    println!("signed content:    {signed}");
    println!("webhook-signature: {signature}");

    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/protocol.md exists");
    for shown in [SECRET, &id, &TIMESTAMP.to_string(), &body, &signed, &signature] {
        assert!(doc.contains(shown), "docs/protocol.md must show {shown:?}");
    }
}
