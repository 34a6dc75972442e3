//! Property tests over random sequences of agent, bot, visitor and timer inputs
//! (issue: foundation). Each property is checked at every step of every sequence.

use std::collections::HashMap;

use crate::support::*;
use domain::machine::{Effect, Input, Phase, RejectCode, TimerKind, Verdict};
use domain::widget::WidgetEvent;
use domain::{AgentAction, EscalationId, EventId, MessageId};
use proptest::prelude::*;

/// Which escalation an agent event names.
#[derive(Debug, Clone, Copy)]
enum Named {
    Nothing,
    Current,
    Older,
}

#[derive(Debug, Clone)]
enum Op {
    Agent(Named, AgentAction),
    Escalate,
    Visitor,
    End,
    Advance(i64),
    Fire(TimerKind, bool),
    Undeliverable,
    /// Repeat the event id of an earlier op (index modulo the history).
    Repeat(usize),
}

fn action() -> impl Strategy<Value = AgentAction> {
    prop_oneof![
        (proptest::option::of(0u32..50), proptest::option::of(0u32..90)).prop_map(|(p, w)| {
            AgentAction::QueueUpdate { queue_position: p.map(Into::into), waiting_time: w.map(Into::into) }
        }),
        prop_oneof![Just("Ann"), Just("Bob")]
            .prop_map(|a| AgentAction::Success { agent: Some(a.into()), agent_avatar: None }),
        "[a-z]{1,8}".prop_map(|text| AgentAction::Message { text }),
        Just(AgentAction::Failed),
        Just(AgentAction::Disconnect),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let named = prop_oneof![Just(Named::Nothing), Just(Named::Current), Just(Named::Older)];
    let kind = prop_oneof![
        Just(TimerKind::NoResponse),
        Just(TimerKind::Queue),
        Just(TimerKind::Idle),
        Just(TimerKind::Ttl)
    ];
    prop_oneof![
        6 => (named, action()).prop_map(|(n, a)| Op::Agent(n, a)),
        2 => Just(Op::Escalate),
        2 => Just(Op::Visitor),
        1 => Just(Op::End),
        2 => prop_oneof![1i64..200, 1000i64..4000, 80_000i64..90_000].prop_map(Op::Advance),
        2 => (kind, any::<bool>()).prop_map(|(k, current)| Op::Fire(k, current)),
        1 => Just(Op::Undeliverable),
        1 => (0usize..1000).prop_map(Op::Repeat),
    ]
}

/// Drives a simulator through ops, recording each applied (event id, input) so
/// `Repeat` can send an exact repeat.
struct Runner {
    sim: Sim,
    escalations: u32,
    /// Escalations that really started, oldest first.
    started: Vec<EscalationId>,
    history: Vec<(EventId, Input)>,
}

impl Runner {
    fn new() -> Self {
        Self { sim: Sim::new(), escalations: 0, started: Vec::new(), history: Vec::new() }
    }

    fn current(&self) -> EscalationId {
        self.sim.state.escalation.as_ref().map(|e| e.id.clone()).unwrap_or_else(|| esc("esc-none"))
    }

    fn older(&self) -> EscalationId {
        // Any escalation before the latest one is older; "esc-0" never existed.
        match self.started.len() {
            0 | 1 => esc("esc-0"),
            n => self.started[n - 2].clone(),
        }
    }

    fn run(&mut self, id: EventId, input: Input) -> domain::machine::Transition {
        let t = self.sim.run_with_id(id, input);
        if let Some(e) = &self.sim.state.escalation
            && self.started.last() != Some(&e.id)
        {
            self.started.push(e.id.clone());
        }
        t
    }

    /// Returns the input sent, or `None` for time passing.
    fn input_for(&mut self, op: &Op) -> Option<(EventId, Input)> {
        let input = match op {
            Op::Agent(named, action) => {
                let escalation_id = match named {
                    Named::Nothing => None,
                    Named::Current => Some(self.current()),
                    Named::Older => Some(self.older()),
                };
                Input::Agent { escalation_id, action: action.clone(), warnings: Vec::new() }
            }
            Op::Escalate => {
                self.escalations += 1;
                Input::Escalate {
                    escalation_id: esc(&format!("esc-{}", self.escalations)),
                    escalate_to: None,
                    metadata: None,
                    transcript: None,
                }
            }
            Op::Visitor => {
                let n = self.history.len();
                Input::VisitorMessage {
                    message_id: MessageId::parse(format!("vm-{n}")).expect("id"),
                    text: format!("visitor {n}"),
                }
            }
            Op::End => Input::VisitorEnd,
            Op::Advance(secs) => {
                self.sim.advance(*secs);
                return None;
            }
            Op::Fire(kind, current) => {
                let escalation_id = if *current { self.current() } else { self.older() };
                Input::TimerFired { escalation_id, kind: *kind }
            }
            Op::Undeliverable => Input::EscalateUndeliverable { escalation_id: self.current() },
            Op::Repeat(i) => {
                if self.history.is_empty() {
                    return None;
                }
                return Some(self.history[i % self.history.len()].clone());
            }
        };
        let id = self.sim.next_id();
        self.history.push((id.clone(), input.clone()));
        Some((id, input))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_agent_message_reaches_the_widget_unless_connected(ops in proptest::collection::vec(op(), 0..80)) {
        let mut r = Runner::new();
        for op in &ops {
            let phase_before = r.sim.state.phase();
            let Some((id, input)) = r.input_for(op) else { continue };
            let t = r.run(id, input);
            let messages = widget_events(&t).iter().filter(|e| matches!(e, WidgetEvent::Message { .. })).count();
            if messages > 0 {
                prop_assert_eq!(phase_before, Phase::Connected);
                prop_assert_eq!(t.next.phase(), Phase::Connected);
            }
        }
    }

    #[test]
    fn every_escalation_ends_in_exactly_one_outcome(ops in proptest::collection::vec(op(), 0..80)) {
        let mut r = Runner::new();
        let mut endings: HashMap<EscalationId, usize> = HashMap::new();
        let mut started: Vec<EscalationId> = Vec::new();
        for op in &ops {
            let before = r.sim.state.escalation.clone();
            let Some((id, input)) = r.input_for(op) else { continue };
            let t = r.run(id, input);
            for effect in &t.effects {
                if let Effect::Widget(w) = effect {
                    if w.event == WidgetEvent::EscalationRequested {
                        started.push(w.escalation_id.clone());
                    }
                    if w.event.is_terminal() {
                        *endings.entry(w.escalation_id.clone()).or_default() += 1;
                    }
                }
            }
            let after = &r.sim.state.escalation;
            if let (Some(b), Some(a)) = (&before, after) {
                if b.id == a.id && b.outcome.is_some() {
                    prop_assert_eq!(&b.outcome, &a.outcome, "an outcome never changes");
                }
                if b.id != a.id {
                    prop_assert!(b.outcome.is_some(), "a new escalation only after the last one ended");
                }
            }
        }
        for (i, id) in started.iter().enumerate() {
            let n = endings.get(id).copied().unwrap_or(0);
            let is_live = r.sim.state.live().is_some_and(|e| &e.id == id);
            if i + 1 < started.len() || !is_live {
                prop_assert_eq!(n, 1, "escalation {} ended {} times", id, n);
            } else {
                prop_assert_eq!(n, 0, "the live escalation has not ended");
            }
        }
    }

    #[test]
    fn applying_an_event_id_twice_equals_applying_it_once(
        ops in proptest::collection::vec(op(), 0..80),
        dup_mask in proptest::collection::vec(any::<bool>(), 80),
    ) {
        let ops: Vec<Op> = ops.into_iter().filter(|o| !matches!(o, Op::Repeat(_))).collect();
        let mut once = Runner::new();
        let mut twice = Runner::new();
        let mut effects_once = Vec::new();
        let mut effects_twice = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let a = once.input_for(op);
            let b = twice.input_for(op);
            let (Some((id_a, in_a)), Some((id_b, in_b))) = (a, b) else { continue };
            effects_once.extend(once.run(id_a, in_a).effects);
            effects_twice.extend(twice.run(id_b.clone(), in_b.clone()).effects);
            if dup_mask[i % dup_mask.len()] {
                let repeat = twice.run(id_b, in_b);
                prop_assert_eq!(repeat.verdict, Verdict::Duplicate);
                prop_assert!(repeat.effects.is_empty());
            }
        }
        prop_assert_eq!(&once.sim.state, &twice.sim.state);
        prop_assert_eq!(effects_once, effects_twice);
    }

    #[test]
    fn an_event_naming_an_older_escalation_never_changes_state(ops in proptest::collection::vec(op(), 0..80)) {
        let mut r = Runner::new();
        for op in &ops {
            let before = r.sim.state.clone();
            let stale = matches!(op, Op::Agent(Named::Older, _));
            let Some((id, input)) = r.input_for(op) else { continue };
            let t = r.run(id, input);
            if stale {
                prop_assert_eq!(t.verdict, Verdict::Rejected(RejectCode::StaleEscalation));
                prop_assert_eq!(&t.next.escalation, &before.escalation);
                prop_assert_eq!(t.next.widget_sequence, before.widget_sequence);
                prop_assert!(widget_events(&t).is_empty());
            }
        }
    }

    #[test]
    fn sequences_increase_by_one_without_gaps(ops in proptest::collection::vec(op(), 0..80)) {
        let mut r = Runner::new();
        let (mut widget, mut webhook) = (0u64, 0u64);
        for op in &ops {
            let Some((id, input)) = r.input_for(op) else { continue };
            for effect in r.run(id, input).effects {
                match effect {
                    Effect::Widget(w) => { widget += 1; prop_assert_eq!(w.sequence, widget); }
                    Effect::Webhook(w) => { webhook += 1; prop_assert_eq!(w.sequence, webhook); }
                    _ => {}
                }
            }
        }
    }
}
