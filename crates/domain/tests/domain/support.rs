//! A small simulator over the pure state machine, shared by the table and
//! property tests.

use chrono::{DateTime, TimeDelta, Utc};
use domain::machine::{Conversation, Effect, Input, Phase, Rules, TimerKind, Transition, step};
use domain::webhook::WebhookEvent;
use domain::widget::WidgetEvent;
use domain::{AgentAction, Command, Context, EscalationId, EventId, MessageId};

#[derive(Debug)]
pub struct Sim {
    pub state: Conversation,
    pub now: DateTime<Utc>,
    pub rules: Rules,
    counter: u32,
}

pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("valid time")
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    pub fn new() -> Self {
        Self { state: Conversation::default(), now: t0(), rules: Rules::default(), counter: 0 }
    }

    /// A conversation brought into `phase` through the public inputs.
    pub fn in_phase(phase: Phase) -> Self {
        let mut sim = Self::new();
        match phase {
            Phase::Idle => {}
            Phase::Requested => {
                sim.escalate("esc-1");
            }
            Phase::Queued => {
                sim.escalate("esc-1");
                sim.agent(queue(Some(5), Some(10)));
            }
            Phase::Connected => {
                sim.escalate("esc-1");
                sim.agent(success("Ann"));
            }
        }
        assert_eq!(sim.state.phase(), phase, "setup reached {phase:?}");
        sim
    }

    pub fn next_id(&mut self) -> EventId {
        self.counter += 1;
        EventId::parse(format!("ev-{}", self.counter)).expect("valid id")
    }

    pub fn run_with_id(&mut self, event_id: EventId, input: Input) -> Transition {
        let cmd = Command { event_id, input };
        let t = step(&self.state, &cmd, &Context { now: self.now, rules: &self.rules });
        self.state = t.next.clone();
        t
    }

    pub fn run(&mut self, input: Input) -> Transition {
        let id = self.next_id();
        self.run_with_id(id, input)
    }

    pub fn agent(&mut self, action: AgentAction) -> Transition {
        self.run(Input::Agent { escalation_id: None, action, warnings: Vec::new() })
    }

    pub fn agent_for(&mut self, escalation: &str, action: AgentAction) -> Transition {
        self.run(Input::Agent { escalation_id: Some(esc(escalation)), action, warnings: Vec::new() })
    }

    pub fn escalate(&mut self, id: &str) -> Transition {
        self.run(Input::Escalate {
            escalation_id: esc(id),
            escalate_to: Some("billing".into()),
            metadata: None,
            transcript: None,
        })
    }

    pub fn visitor(&mut self, text: &str) -> Transition {
        self.counter += 1;
        let message_id = MessageId::parse(format!("vm-{}", self.counter)).expect("valid id");
        self.run(Input::VisitorMessage { message_id, text: text.into() })
    }

    pub fn advance(&mut self, secs: i64) {
        self.now += TimeDelta::seconds(secs);
    }

    pub fn fire(&mut self, escalation: &str, kind: TimerKind) -> Transition {
        self.run(Input::TimerFired { escalation_id: esc(escalation), kind })
    }

    pub fn deadline(&self, kind: TimerKind) -> Option<DateTime<Utc>> {
        self.state.live().and_then(|e| e.timers.get(&kind).copied())
    }
}

pub fn esc(id: &str) -> EscalationId {
    EscalationId::parse(id).expect("valid id")
}

pub fn queue(position: Option<u32>, waiting: Option<u32>) -> AgentAction {
    AgentAction::QueueUpdate {
        queue_position: position.map(Into::into),
        waiting_time: waiting.map(Into::into),
    }
}

pub fn success(agent: &str) -> AgentAction {
    AgentAction::Success { agent: Some(agent.into()), agent_avatar: None }
}

pub fn message(text: &str) -> AgentAction {
    AgentAction::Message { text: text.into() }
}

pub fn widget_events(t: &Transition) -> Vec<&WidgetEvent> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Widget(w) => Some(&w.event),
            _ => None,
        })
        .collect()
}

pub fn widget_names(t: &Transition) -> Vec<&'static str> {
    widget_events(t).iter().map(|e| e.name()).collect()
}

pub fn webhooks(t: &Transition) -> Vec<&WebhookEvent> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Webhook(w) => Some(&w.event),
            _ => None,
        })
        .collect()
}

pub fn webhook_types(t: &Transition) -> Vec<&'static str> {
    webhooks(t).iter().map(|e| e.event_type()).collect()
}

pub fn timers_set(t: &Transition) -> Vec<TimerKind> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            Effect::SetTimer { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}

pub fn timers_cancelled(t: &Transition) -> Vec<TimerKind> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            Effect::CancelTimer { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}
