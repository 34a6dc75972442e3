//! Event ids live in namespaces (docs/protocol.md §2): a client's id that equals one the
//! service made (a fired timer's, a delivery notice's, a visitor message's)
//! is not a repeat of it, in the state machine's own dedupe window either.

use chrono::{DateTime, Utc};
use domain::agent_event::AgentAction;
use domain::{Command, Context, Conversation, EscalationId, EventId, Input, Rules, TimerKind, Verdict, step};

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("time")
}

fn id(raw: &str) -> EventId {
    EventId::parse(raw).expect("id")
}

#[test]
fn a_client_id_equal_to_a_timer_id_does_not_swallow_the_timer() {
    let rules = Rules { no_response_timeout: std::time::Duration::ZERO, ..Rules::default() };
    let ctx = Context { now: now(), rules: &rules };
    let escalation = EscalationId::parse("esc-1").expect("id");
    let escalate = Command {
        event_id: id("e-1"),
        input: Input::Escalate {
            escalation_id: escalation.clone(),
            escalate_to: None,
            metadata: None,
            transcript: None,
        },
    };
    let state = step(&Conversation::default(), &escalate, &ctx).next;

    // The timer's id, sent by the contact centre as its own eventId.
    let timer_id = id("timer:esc-1:no_response:1800000000000000");
    let agent = Command {
        event_id: timer_id.clone(),
        input: Input::Agent {
            escalation_id: None,
            action: AgentAction::QueueUpdate {
                queue_position: Some(domain::DisplayValue::Integer(1)),
                waiting_time: None,
            },
            warnings: Vec::new(),
        },
    };
    let after_agent = step(&state, &agent, &ctx);
    assert_eq!(after_agent.verdict, Verdict::Applied);

    let fired = Command {
        event_id: timer_id.clone(),
        input: Input::TimerFired { escalation_id: escalation, kind: TimerKind::Queue },
    };
    let queue_rules = Rules { queue_timeout: std::time::Duration::ZERO, ..Rules::default() };
    let transition = step(&after_agent.next, &fired, &Context { now: now(), rules: &queue_rules });
    assert_ne!(transition.verdict, Verdict::Duplicate, "our timer is not the caller's event");

    // A repeat within one namespace still is one.
    let again = step(&after_agent.next, &agent, &ctx);
    assert_eq!(again.verdict, Verdict::Duplicate);
}
