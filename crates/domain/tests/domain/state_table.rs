//! docs/protocol.md §5, cell by cell: every (state × agent event) of the table, then every
//! bot, visitor and timer transition. Each test is named after what it checks.

use crate::support::*;
use domain::machine::{EndReason, OutcomeKind, Phase, RejectCode, Rules, TimerKind, Verdict};
use domain::webhook::WebhookEvent;
use domain::widget::WidgetEvent;
use domain::{AgentAction, Input};

/// A refused agent event: the code, no change to the escalation, no widget
/// event, and the `eventRejected` webhook (on by default).
fn assert_rejected(phase: Phase, action: AgentAction, code: RejectCode) {
    let mut sim = Sim::in_phase(phase);
    let before = sim.state.escalation.clone();
    let t = sim.agent(action);
    assert_eq!(t.verdict, Verdict::Rejected(code));
    assert_eq!(t.next.escalation, before, "a rejection changes nothing");
    assert!(widget_names(&t).is_empty(), "nothing reaches the widget");
    match webhooks(&t).as_slice() {
        [WebhookEvent::EventRejected { code: c, current_state, .. }] => {
            assert_eq!(*c, code);
            assert_eq!(*current_state, phase);
        }
        other => panic!("expected one eventRejected, got {other:?}"),
    }
}

/// An agent event that ends the escalation: the outcome, the widget event, no
/// webhook to the contact centre (it sent the event), all timers disarmed.
fn assert_ends(phase: Phase, action: AgentAction, kind: OutcomeKind, reason: EndReason, widget: &str) {
    let mut sim = Sim::in_phase(phase);
    let t = sim.agent(action);
    assert_eq!(t.verdict, Verdict::Applied);
    assert_eq!(sim.state.phase(), Phase::Idle);
    let outcome = sim.state.escalation.as_ref().and_then(|e| e.outcome.clone()).expect("an outcome");
    assert_eq!((outcome.kind, outcome.reason), (kind, reason));
    assert_eq!(widget_names(&t), vec![widget]);
    assert!(webhook_types(&t).is_empty());
    assert!(sim.state.escalation.as_ref().is_some_and(|e| e.timers.is_empty()), "timers disarmed");
    assert!(timers_cancelled(&t).contains(&TimerKind::Ttl));
}

// ---- row: idle -------------------------------------------------------------

#[test]
fn idle_x_queue_update_rejected_no_active_escalation() {
    assert_rejected(Phase::Idle, queue(Some(1), None), RejectCode::NoActiveEscalation);
}
#[test]
fn idle_x_success_rejected_no_active_escalation() {
    assert_rejected(Phase::Idle, success("Ann"), RejectCode::NoActiveEscalation);
}
#[test]
fn idle_x_message_rejected_no_active_escalation() {
    assert_rejected(Phase::Idle, message("hi"), RejectCode::NoActiveEscalation);
}
#[test]
fn idle_x_failed_rejected_no_active_escalation() {
    assert_rejected(Phase::Idle, AgentAction::Failed, RejectCode::NoActiveEscalation);
}
#[test]
fn idle_x_agent_disconnect_rejected_no_active_escalation() {
    assert_rejected(Phase::Idle, AgentAction::Disconnect, RejectCode::NoActiveEscalation);
}

// ---- rows: requested and queued -------------------------------------------

#[test]
fn requested_x_queue_update_goes_queued() {
    let mut sim = Sim::in_phase(Phase::Requested);
    let t = sim.agent(queue(Some(3), Some(12)));
    assert_eq!(t.verdict, Verdict::Applied);
    assert_eq!(sim.state.phase(), Phase::Queued);
    assert_eq!(
        widget_events(&t),
        vec![&WidgetEvent::EscalationQueueUpdate {
            queue_position: Some(3u32.into()),
            waiting_time: Some(12u32.into())
        }]
    );
    assert_eq!(timers_cancelled(&t), vec![TimerKind::NoResponse], "the contact centre answered");
    assert_eq!(timers_set(&t), vec![TimerKind::Queue]);
}
#[test]
fn queued_x_queue_update_stays_queued_with_new_values() {
    let mut sim = Sim::in_phase(Phase::Queued);
    let queue_deadline = sim.deadline(TimerKind::Queue);
    sim.advance(60);
    let t = sim.agent(queue(Some(2), None));
    assert_eq!(sim.state.phase(), Phase::Queued);
    let info = sim.state.live().and_then(|e| e.queue.clone()).expect("queue info");
    assert_eq!((info.position, info.waiting_time), (Some(2u32.into()), None));
    assert_eq!(widget_names(&t), vec!["escalationQueueUpdate"]);
    assert!(timers_set(&t).is_empty(), "the queue timer measures the whole wait");
    assert_eq!(sim.deadline(TimerKind::Queue), queue_deadline);
}
#[test]
fn requested_x_success_goes_connected() {
    let mut sim = Sim::in_phase(Phase::Requested);
    let t = sim.agent(AgentAction::Success {
        agent: Some("Ann".into()),
        agent_avatar: Some("https://cdn.example/ann.png".into()),
    });
    assert_eq!(sim.state.phase(), Phase::Connected);
    assert_eq!(
        widget_events(&t),
        vec![&WidgetEvent::EscalationSuccess {
            agent: Some("Ann".into()),
            agent_avatar: Some("https://cdn.example/ann.png".into())
        }]
    );
    assert_eq!(timers_set(&t), vec![TimerKind::Idle]);
    assert_eq!(timers_cancelled(&t), vec![TimerKind::NoResponse]);
}
#[test]
fn queued_x_success_goes_connected() {
    let mut sim = Sim::in_phase(Phase::Queued);
    let t = sim.agent(success("Bob"));
    assert_eq!(sim.state.phase(), Phase::Connected);
    assert_eq!(widget_names(&t), vec!["escalationSuccess"]);
    assert_eq!(timers_cancelled(&t), vec![TimerKind::Queue]);
}
#[test]
fn requested_x_message_rejected_not_connected() {
    assert_rejected(Phase::Requested, message("hi"), RejectCode::NotConnected);
}
#[test]
fn queued_x_message_rejected_not_connected() {
    assert_rejected(Phase::Queued, message("hi"), RejectCode::NotConnected);
}
#[test]
fn requested_x_failed_fails_escalation_failed() {
    assert_ends(
        Phase::Requested,
        AgentAction::Failed,
        OutcomeKind::Failed,
        EndReason::EscalationFailed,
        "escalationFailed",
    );
}
#[test]
fn queued_x_failed_fails_escalation_failed() {
    assert_ends(
        Phase::Queued,
        AgentAction::Failed,
        OutcomeKind::Failed,
        EndReason::EscalationFailed,
        "escalationFailed",
    );
}
#[test]
fn requested_x_agent_disconnect_fails_disconnected_before_connect() {
    assert_ends(
        Phase::Requested,
        AgentAction::Disconnect,
        OutcomeKind::Failed,
        EndReason::DisconnectedBeforeConnect,
        "agentDisconnect",
    );
}
#[test]
fn queued_x_agent_disconnect_fails_disconnected_before_connect() {
    assert_ends(
        Phase::Queued,
        AgentAction::Disconnect,
        OutcomeKind::Failed,
        EndReason::DisconnectedBeforeConnect,
        "agentDisconnect",
    );
}

// ---- row: connected ---------------------------------------------------------

#[test]
fn connected_x_queue_update_rejected_already_connected() {
    assert_rejected(Phase::Connected, queue(Some(1), Some(1)), RejectCode::AlreadyConnected);
}
#[test]
fn connected_x_success_same_agent_is_duplicate() {
    let mut sim = Sim::in_phase(Phase::Connected);
    let before = sim.state.escalation.clone();
    let t = sim.agent(success("Ann"));
    assert_eq!(t.verdict, Verdict::Duplicate);
    assert!(t.effects.is_empty());
    assert_eq!(sim.state.escalation, before);
}
#[test]
fn connected_x_success_other_agent_is_agent_changed() {
    let mut sim = Sim::in_phase(Phase::Connected);
    let t = sim.agent(success("Bob"));
    assert_eq!(t.verdict, Verdict::Applied);
    assert_eq!(
        widget_events(&t),
        vec![&WidgetEvent::AgentChanged { agent: Some("Bob".into()), agent_avatar: None }]
    );
    let agent = sim.state.live().and_then(|e| e.agent.clone()).expect("agent");
    assert_eq!(agent.name.as_deref(), Some("Bob"));
    assert_eq!(sim.state.phase(), Phase::Connected);
}
#[test]
fn connected_x_message_goes_to_widget() {
    let mut sim = Sim::in_phase(Phase::Connected);
    sim.advance(100);
    let t = sim.agent(message("Hello, I'm Ann"));
    match widget_events(&t).as_slice() {
        [WidgetEvent::Message { text, message_id }] => {
            assert_eq!(text, "Hello, I'm Ann");
            assert!(message_id.as_str().starts_with("ev-"), "the event id is the message id");
        }
        other => panic!("expected one message, got {other:?}"),
    }
    assert_eq!(timers_set(&t), vec![TimerKind::Idle], "a message re-arms the idle timer");
    assert_eq!(sim.deadline(TimerKind::Idle), Some(sim.now + chrono::TimeDelta::seconds(1800)));
}
#[test]
fn connected_x_failed_ends_failed_after_connect() {
    assert_ends(
        Phase::Connected,
        AgentAction::Failed,
        OutcomeKind::Ended,
        EndReason::FailedAfterConnect,
        "escalationFailed",
    );
}
#[test]
fn connected_x_agent_disconnect_ends_agent_disconnect() {
    assert_ends(
        Phase::Connected,
        AgentAction::Disconnect,
        OutcomeKind::Ended,
        EndReason::AgentDisconnect,
        "agentDisconnect",
    );
}

// ---- bot: escalate ----------------------------------------------------------

#[test]
fn bot_escalate_from_idle_goes_requested() {
    let mut sim = Sim::new();
    let t = sim.escalate("esc-9");
    assert_eq!(t.verdict, Verdict::Applied);
    assert_eq!(sim.state.phase(), Phase::Requested);
    assert_eq!(widget_names(&t), vec!["escalationRequested"]);
    assert_eq!(
        webhooks(&t),
        vec![&WebhookEvent::WidgetEscalate {
            escalate_to: Some("billing".into()),
            metadata: None,
            transcript: None
        }]
    );
    assert_eq!(timers_set(&t), vec![TimerKind::NoResponse, TimerKind::Ttl]);
}
#[test]
fn bot_escalate_while_live_is_idempotent() {
    for phase in [Phase::Requested, Phase::Queued, Phase::Connected] {
        let mut sim = Sim::in_phase(phase);
        let before = sim.state.escalation.clone();
        let t = sim.escalate("esc-other");
        assert_eq!(t.verdict, Verdict::Duplicate, "{phase:?}");
        assert!(t.effects.is_empty());
        assert_eq!(sim.state.escalation, before, "{phase:?}: the live escalation stays");
    }
}
#[test]
fn bot_escalate_after_an_ended_escalation_starts_a_new_one() {
    let mut sim = Sim::in_phase(Phase::Connected);
    sim.agent(AgentAction::Disconnect);
    let t = sim.escalate("esc-2");
    assert_eq!(t.verdict, Verdict::Applied);
    assert_eq!(sim.state.live().map(|e| e.id.as_str()), Some("esc-2"));
}

// ---- visitor messages and end ----------------------------------------------

#[test]
fn visitor_message_in_idle_rejected_no_active_escalation() {
    let mut sim = Sim::new();
    let t = sim.visitor("hello?");
    assert_eq!(t.verdict, Verdict::Rejected(RejectCode::NoActiveEscalation));
    assert!(webhooks(&t).is_empty(), "eventRejected is for agent events only");
}
#[test]
fn visitor_message_while_requested_or_queued_is_held() {
    for phase in [Phase::Requested, Phase::Queued] {
        let mut sim = Sim::in_phase(phase);
        let t = sim.visitor("are you there?");
        assert_eq!(t.verdict, Verdict::Applied);
        assert!(t.effects.is_empty(), "{phase:?}: held, not sent");
        assert_eq!(sim.state.live().map(|e| e.held.len()), Some(1));
    }
}
#[test]
fn visitor_held_messages_flush_in_order_right_after_success() {
    let mut sim = Sim::in_phase(Phase::Queued);
    sim.visitor("one");
    sim.visitor("two");
    sim.visitor("three");
    let t = sim.agent(success("Ann"));
    assert_eq!(widget_names(&t), vec!["escalationSuccess"]);
    let texts: Vec<&str> = webhooks(&t)
        .iter()
        .map(|w| match w {
            WebhookEvent::WidgetMessage { text, .. } => text.as_str(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(texts, vec!["one", "two", "three"]);
    assert_eq!(sim.state.live().map(|e| e.held.len()), Some(0));
}
#[test]
fn visitor_held_messages_are_bounded() {
    let mut sim = Sim::in_phase(Phase::Requested);
    sim.rules = Rules { max_held_messages: 2, ..Rules::default() };
    sim.visitor("1");
    sim.visitor("2");
    let t = sim.visitor("3");
    assert_eq!(t.verdict, Verdict::Rejected(RejectCode::HeldMessagesFull));
    assert_eq!(sim.state.live().map(|e| e.held.len()), Some(2));
    // The widget is told, naming the refused message.
    match widget_events(&t).as_slice() {
        [WidgetEvent::VisitorRejected { code: RejectCode::HeldMessagesFull, message_id: Some(id) }] => {
            assert!(id.as_str().starts_with("vm-"), "{id}");
        }
        other => panic!("expected one visitorRejected, got {other:?}"),
    }
}
#[test]
fn visitor_message_while_connected_goes_out_at_once() {
    let mut sim = Sim::in_phase(Phase::Connected);
    sim.advance(10);
    let t = sim.visitor("thanks");
    assert_eq!(webhook_types(&t), vec!["widgetMessage"]);
    assert_eq!(timers_set(&t), vec![TimerKind::Idle]);
}
#[test]
fn visitor_end_in_idle_rejected_no_active_escalation() {
    let mut sim = Sim::new();
    assert_eq!(sim.run(Input::VisitorEnd).verdict, Verdict::Rejected(RejectCode::NoActiveEscalation));
}
#[test]
fn visitor_end_and_message_after_an_ended_escalation_are_told_to_the_widget() {
    let mut sim = Sim::in_phase(Phase::Connected);
    sim.agent(AgentAction::Disconnect);
    let t = sim.run(Input::VisitorEnd);
    assert_eq!(t.verdict, Verdict::Rejected(RejectCode::NoActiveEscalation));
    assert_eq!(
        widget_events(&t),
        vec![&WidgetEvent::VisitorRejected { code: RejectCode::NoActiveEscalation, message_id: None }]
    );
    let t = sim.visitor("still there?");
    assert!(matches!(
        widget_events(&t).as_slice(),
        [WidgetEvent::VisitorRejected { code: RejectCode::NoActiveEscalation, message_id: Some(_) }]
    ));
}
#[test]
fn visitor_end_before_connect_cancels_visitor_ended() {
    for phase in [Phase::Requested, Phase::Queued] {
        let mut sim = Sim::in_phase(phase);
        let t = sim.run(Input::VisitorEnd);
        let outcome = sim.state.escalation.as_ref().and_then(|e| e.outcome.clone()).expect("outcome");
        assert_eq!((outcome.kind, outcome.reason), (OutcomeKind::Cancelled, EndReason::VisitorEnded));
        assert_eq!(widget_names(&t), vec!["sessionEnded"]);
        assert_eq!(webhooks(&t), vec![&WebhookEvent::WidgetEndSession { reason: EndReason::VisitorEnded }]);
    }
}
#[test]
fn visitor_end_after_connect_ends_visitor_ended() {
    let mut sim = Sim::in_phase(Phase::Connected);
    let t = sim.run(Input::VisitorEnd);
    let outcome = sim.state.escalation.as_ref().and_then(|e| e.outcome.clone()).expect("outcome");
    assert_eq!((outcome.kind, outcome.reason), (OutcomeKind::Ended, EndReason::VisitorEnded));
    assert_eq!(webhook_types(&t), vec!["widgetEndSession"]);
}

// ---- timers ---------------------------------------------------------------

fn assert_timer_ends(phase: Phase, kind: TimerKind, after: i64, outcome: OutcomeKind, reason: EndReason) {
    let mut sim = Sim::in_phase(phase);
    sim.advance(after - 1);
    assert_eq!(sim.fire("esc-1", kind).verdict, Verdict::Ignored, "not before its deadline");
    sim.advance(1);
    let t = sim.fire("esc-1", kind);
    assert_eq!(t.verdict, Verdict::Applied);
    let o = sim.state.escalation.as_ref().and_then(|e| e.outcome.clone()).expect("outcome");
    assert_eq!((o.kind, o.reason), (outcome, reason));
    assert_eq!(widget_events(&t), vec![&WidgetEvent::SessionEnded { reason }]);
    assert_eq!(webhooks(&t), vec![&WebhookEvent::WidgetEndSession { reason }]);
}

#[test]
fn timer_no_response_fails_requested_after_120s() {
    assert_timer_ends(
        Phase::Requested,
        TimerKind::NoResponse,
        120,
        OutcomeKind::Failed,
        EndReason::NoResponseTimeout,
    );
}
#[test]
fn timer_queue_fails_queued_after_30min() {
    assert_timer_ends(Phase::Queued, TimerKind::Queue, 1800, OutcomeKind::Failed, EndReason::QueueTimeout);
}
#[test]
fn timer_idle_ends_connected_after_30min_silence() {
    assert_timer_ends(Phase::Connected, TimerKind::Idle, 1800, OutcomeKind::Ended, EndReason::IdleTimeout);
}
#[test]
fn timer_ttl_ends_escalation_after_24h() {
    let mut sim = Sim::in_phase(Phase::Connected);
    for _ in 0..47 {
        sim.advance(1800);
        sim.agent(message("still here"));
    }
    sim.advance(1800);
    let t = sim.fire("esc-1", TimerKind::Ttl);
    assert_eq!(t.verdict, Verdict::Applied);
    assert_eq!(widget_events(&t), vec![&WidgetEvent::SessionEnded { reason: EndReason::TtlExpired }]);
}
#[test]
fn timer_no_response_disarmed_by_queue_update() {
    let mut sim = Sim::in_phase(Phase::Queued);
    sim.advance(121);
    assert_eq!(sim.fire("esc-1", TimerKind::NoResponse).verdict, Verdict::Ignored);
    assert_eq!(sim.state.phase(), Phase::Queued);
}
#[test]
fn timer_idle_rearmed_by_message_ignores_old_deadline() {
    let mut sim = Sim::in_phase(Phase::Connected);
    sim.advance(1000);
    sim.agent(message("hi"));
    sim.advance(800);
    assert_eq!(sim.fire("esc-1", TimerKind::Idle).verdict, Verdict::Ignored, "deadline moved");
    assert_eq!(sim.state.phase(), Phase::Connected);
}
#[test]
fn timer_for_an_older_escalation_is_ignored() {
    let mut sim = Sim::in_phase(Phase::Requested);
    sim.agent(AgentAction::Failed);
    sim.escalate("esc-2");
    sim.advance(121);
    assert_eq!(sim.fire("esc-1", TimerKind::NoResponse).verdict, Verdict::Ignored);
    assert_eq!(sim.state.live().map(|e| e.id.as_str()), Some("esc-2"));
}

// ---- delivery failure, stale ids, duplicates, reporting ---------------------

#[test]
fn escalate_undeliverable_while_requested_fails_delivery_failed() {
    let mut sim = Sim::in_phase(Phase::Requested);
    let t = sim.run(Input::EscalateUndeliverable { escalation_id: esc("esc-1") });
    assert_eq!(widget_events(&t), vec![&WidgetEvent::EscalationFailed { reason: EndReason::DeliveryFailed }]);
    assert_eq!(sim.state.phase(), Phase::Idle);
}
#[test]
fn escalate_undeliverable_after_an_answer_is_ignored() {
    let mut sim = Sim::in_phase(Phase::Queued);
    let t = sim.run(Input::EscalateUndeliverable { escalation_id: esc("esc-1") });
    assert_eq!(t.verdict, Verdict::Ignored);
    assert_eq!(sim.state.phase(), Phase::Queued);
}
#[test]
fn stale_escalation_id_rejected_and_changes_nothing() {
    let mut sim = Sim::in_phase(Phase::Requested);
    sim.agent(AgentAction::Failed);
    sim.escalate("esc-2");
    let before = sim.state.escalation.clone();
    let t = sim.agent_for("esc-1", success("Ann"));
    assert_eq!(t.verdict, Verdict::Rejected(RejectCode::StaleEscalation));
    assert_eq!(sim.state.escalation, before);
    assert_eq!(
        sim.agent_for("esc-2", success("Ann")).verdict,
        Verdict::Applied,
        "the current id is accepted"
    );
}
#[test]
fn duplicate_event_id_applied_once() {
    let mut sim = Sim::in_phase(Phase::Connected);
    let id = sim.next_id();
    let first = sim.run_with_id(
        id.clone(),
        Input::Agent { escalation_id: None, action: message("once"), warnings: Vec::new() },
    );
    let again = sim
        .run_with_id(id, Input::Agent { escalation_id: None, action: message("once"), warnings: Vec::new() });
    assert_eq!(widget_names(&first), vec!["message"]);
    assert_eq!(again.verdict, Verdict::Duplicate);
    assert!(again.effects.is_empty(), "never delivered twice");
}
#[test]
fn rejection_reported_once_and_repeat_is_duplicate() {
    let mut sim = Sim::in_phase(Phase::Requested);
    let id = sim.next_id();
    let input = Input::Agent { escalation_id: None, action: message("too early"), warnings: Vec::new() };
    let first = sim.run_with_id(id.clone(), input.clone());
    assert_eq!(webhook_types(&first), vec!["eventRejected"]);
    let again = sim.run_with_id(id, input);
    assert_eq!(again.verdict, Verdict::Duplicate);
    assert!(again.effects.is_empty());
}
#[test]
fn rejection_not_reported_when_the_bot_disabled_it() {
    let mut sim = Sim::in_phase(Phase::Requested);
    sim.rules.report_rejections = false;
    let t = sim.agent(message("too early"));
    assert_eq!(t.verdict, Verdict::Rejected(RejectCode::NotConnected));
    assert!(t.effects.is_empty());
}
#[test]
fn sequences_are_strictly_increasing_per_stream() {
    let mut sim = Sim::in_phase(Phase::Queued);
    sim.visitor("a");
    sim.agent(success("Ann"));
    sim.agent(message("b"));
    sim.visitor("c");
    sim.run(Input::VisitorEnd);
    // escalate, queue, success, message, end → 5 widget events; escalate, 1 held, c, end → 4 webhooks
    assert_eq!((sim.state.widget_sequence, sim.state.webhook_sequence), (5, 4));
}
