//! Every body the validators accept can be stored (issue 11, docs/protocol.md §6: "bad
//! input gets a clear 4xx", never a 200 and then a dead letter).
//!
//! A property test feeds arbitrary JSON — strings and keys with U+0000 and
//! any other character, any nesting — through the three validators the
//! ingress uses. For each accepted body it builds the commands the ingress
//! would publish and has the worker's own batch function ([`apply_batch`])
//! write what it writes (state, event log, widget stream, webhook outbox)
//! into a real PostgreSQL schema; the database must take all of it.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use domain::agent_event::{AgentAction, EVENT_TYPES};
use domain::widget_request::CLIENT_MESSAGE_EVENT_PREFIX;
use domain::{
    BotId, Command, ConversationId, Envelope, EscalationId, EventId, Input, MessageId, parse_agent_event,
    parse_escalate_request, parse_visitor_message,
};
use e2e::{BOT, settings};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};
use store::Store;
use worker::{BotRules, apply_batch};

/// Short strings, often with NUL, sometimes with any character at all.
fn arb_string() -> impl Strategy<Value = String> {
    let c = prop_oneof![4 => prop::char::range('a', 'e'), 1 => Just('\u{0}'), 1 => any::<char>()];
    prop::collection::vec(c, 0..6).prop_map(|chars| chars.into_iter().collect())
}

/// Any JSON value, up to a few levels deep, keys as arbitrary as values.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(arb_string(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A field's value: mostly a string (what the schema wants), else anything.
fn arb_field() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(prop_oneof![3 => arb_string().prop_map(Value::String), 1 => arb_json()])
}

/// An object with the given optional fields (and one unknown field).
fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
    let mut map = Map::new();
    for (name, value) in fields {
        if let Some(value) = value {
            map.insert(name.to_owned(), value);
        }
    }
    Value::Object(map)
}

#[derive(Debug, Clone)]
struct Bodies {
    agent: Value,
    escalate: Value,
    visitor: Value,
}

fn arb_bodies() -> impl Strategy<Value = Bodies> {
    let agent = (
        prop::sample::select(EVENT_TYPES.to_vec()),
        (arb_field(), arb_field(), arb_field(), arb_field(), arb_field(), arb_field()),
        arb_json(),
    )
        .prop_map(|(event_type, (text, agent, avatar, position, waiting, event_id), extra)| {
            object(vec![
                ("eventType", Some(Value::from(event_type))),
                ("platformConversationId", Some(Value::from("c"))),
                ("text", text),
                ("agent", agent),
                ("agentAvatar", avatar.map(|v| Value::from(format!("https://x.test/{}", v)))),
                ("queuePosition", position),
                ("waitingTime", waiting),
                ("eventId", event_id),
                ("extra", Some(extra)),
            ])
        });
    let escalate = (arb_field(), prop::option::of(arb_json()), prop::option::of(arb_json())).prop_map(
        |(to, metadata, transcript)| {
            let metadata = metadata.map(|m| object(vec![("m", Some(m))]));
            let transcript = transcript.map(|t| Value::Array(vec![t]));
            object(vec![("escalateTo", to), ("metadata", metadata), ("transcript", transcript)])
        },
    );
    let visitor = (arb_field(), arb_field())
        .prop_map(|(text, client)| object(vec![("text", text), ("clientMessageId", client)]));
    (agent, escalate, visitor).prop_map(|(agent, escalate, visitor)| Bodies { agent, escalate, visitor })
}

/// Unique conversation and event ids across cases.
static NEXT: AtomicU64 = AtomicU64::new(0);

fn fresh(prefix: &str) -> String {
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn id<T>(parse: fn(String) -> Result<T, domain::ids::IdError>, raw: String) -> T {
    parse(raw).expect("valid id")
}

fn envelope(conversation: &ConversationId, event_id: EventId, input: Input) -> Envelope {
    Envelope {
        bot_id: id(BotId::parse, BOT.to_owned()),
        conversation_id: conversation.clone(),
        received_at: Utc::now(),
        command: Command { event_id, input },
    }
}

fn plain_escalate(conversation: &ConversationId) -> Envelope {
    let input = Input::Escalate {
        escalation_id: id(EscalationId::parse, fresh("esc")),
        escalate_to: None,
        metadata: None,
        transcript: None,
    };
    envelope(conversation, id(EventId::parse, fresh("e")), input)
}

fn agent(conversation: &ConversationId, event_id: EventId, action: AgentAction) -> Envelope {
    envelope(conversation, event_id, Input::Agent { escalation_id: None, action, warnings: Vec::new() })
}

/// The batches the worker would apply for each accepted body: the body's
/// command in the states where it writes the most (applied, held, sent,
/// and refused with an `eventRejected` webhook).
fn batches(bodies: &Bodies) -> Vec<Vec<Envelope>> {
    let mut out = Vec::new();
    if let Ok(event) = parse_agent_event(&bodies.agent) {
        let event_id = event.event_id.clone().unwrap_or_else(|| id(EventId::parse, fresh("e")));
        let live = id(ConversationId::parse, fresh("agent"));
        let mut batch = vec![plain_escalate(&live)];
        if matches!(event.action, AgentAction::Message { .. }) {
            let success = AgentAction::Success { agent: Some("Ann".to_owned()), agent_avatar: None };
            batch.push(agent(&live, id(EventId::parse, fresh("e")), success));
        }
        batch.push(agent(&live, event_id.clone(), event.action.clone()));
        out.push(batch);
        let idle = id(ConversationId::parse, fresh("idle"));
        out.push(vec![agent(&idle, event_id, event.action)]);
    }
    if let Ok(request) = parse_escalate_request(&bodies.escalate) {
        let conversation = id(ConversationId::parse, fresh("escalate"));
        let input = Input::Escalate {
            escalation_id: id(EscalationId::parse, fresh("esc")),
            escalate_to: request.escalate_to,
            metadata: request.metadata,
            transcript: request.transcript,
        };
        out.push(vec![envelope(&conversation, id(EventId::parse, fresh("e")), input)]);
    }
    if let Ok(request) = parse_visitor_message(&bodies.visitor) {
        let conversation = id(ConversationId::parse, fresh("visitor"));
        let message = |n: u32| {
            let (event_id, message_id) = match &request.client_message_id {
                Some(client) => (format!("{CLIENT_MESSAGE_EVENT_PREFIX}{client}{n}"), format!("{client}{n}")),
                None => (fresh("e"), fresh("m")),
            };
            let input = Input::VisitorMessage {
                message_id: id(MessageId::parse, message_id),
                text: request.text.clone(),
            };
            envelope(&conversation, id(EventId::parse, event_id), input)
        };
        let success = AgentAction::Success { agent: None, agent_avatar: None };
        out.push(vec![
            plain_escalate(&conversation),
            // Held while requested (in the state), then sent (in the outbox).
            message(1),
            agent(&conversation, id(EventId::parse, fresh("e")), success),
            message(2),
        ]);
    }
    out
}

#[test]
fn every_accepted_body_is_storable_in_postgres() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let settings = settings("");
    let db = &settings.database;
    let store = Store::connect(&db.url, &db.schema, 2).expect("store");
    runtime.block_on(store.migrate()).expect("migrate");
    let rules = BotRules::from_settings(&settings);

    let mut runner = TestRunner::new(Config { cases: 200, ..Config::default() });
    let outcome = runner.run(&arb_bodies(), |bodies| {
        for batch in batches(&bodies) {
            let stored = runtime.block_on(apply_batch(&store, &rules, &batch, Utc::now()));
            prop_assert!(stored.is_ok(), "accepted but not storable: {stored:?}\nbodies: {bodies:?}");
        }
        Ok(())
    });
    runtime.block_on(store.drop_schema()).expect("drop schema");
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
