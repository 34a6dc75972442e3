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

#[test]
fn the_dedupe_window_holds_the_last_256_ids() {
    use domain::machine::DEDUPE_WINDOW;
    assert_eq!(DEDUPE_WINDOW, 256);
    let rules = Rules::default();
    let ctx = Context { now: now(), rules: &rules };
    // With no escalation every agent event is refused, and a refused id is remembered too.
    let failed = |n: usize| Command {
        event_id: id(&format!("e-{n}")),
        input: Input::Agent { escalation_id: None, action: AgentAction::Failed, warnings: Vec::new() },
    };
    let mut state = Conversation::default();
    for n in 0..DEDUPE_WINDOW {
        state = step(&state, &failed(n), &ctx).next;
    }
    assert_eq!(state.recent_event_ids.len(), DEDUPE_WINDOW);
    // The oldest of the last 256 is still a repeat …
    assert_eq!(step(&state, &failed(0), &ctx).verdict, Verdict::Duplicate);
    // … until one more id pushes it out.
    state = step(&state, &failed(DEDUPE_WINDOW), &ctx).next;
    assert_eq!(state.recent_event_ids.len(), DEDUPE_WINDOW);
    assert_ne!(step(&state, &failed(0), &ctx).verdict, Verdict::Duplicate);
    assert_eq!(step(&state, &failed(1), &ctx).verdict, Verdict::Duplicate);
}
