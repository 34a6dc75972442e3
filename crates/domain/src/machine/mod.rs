//! The escalation state machine of docs/protocol.md §5 as a pure function.
//!
//! [`apply`] takes the conversation's state, one [`Command`] (an agent event, a
//! bot or visitor action, or a fired timer) and a [`Context`] (the current time
//! and the bot's rules, passed in) and returns either a [`Transition`] — the next
//! state and the effects to carry out (widget events, webhooks, timers to set or
//! cancel), each widget event and webhook already numbered — or a [`Rejection`]
//! with its code. [`step`] is what the worker runs: `apply`, plus recording and
//! reporting (`eventRejected`) of rejections.
//!
//! The state is serde-serializable so the worker can keep it as one row.

mod apply;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent_event::AgentAction;
use crate::display::DisplayValue;
use crate::ids::{EscalationId, EventId, IdSpace, MessageId, ScopedEventId};
use crate::validation::FieldWarning;
use crate::webhook::WebhookEnvelope;
use crate::widget::WidgetEnvelope;

pub use apply::{apply, step};

/// How many recent event ids a conversation remembers for in-state dedupe.
/// The store keeps every applied id durably; this window makes the pure
/// machine idempotent on its own for redeliveries, which arrive close together.
pub const DEDUPE_WINDOW: usize = 256;

/// Where a conversation stands (the rows of docs/protocol.md §5's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The bot is in charge; no live escalation.
    Idle,
    /// `widgetEscalate` sent; no answer from the contact centre yet.
    Requested,
    /// The visitor waits in the contact centre's queue.
    Queued,
    /// An agent is talking with the visitor.
    Connected,
}

impl Phase {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Requested => "requested",
            Phase::Queued => "queued",
            Phase::Connected => "connected",
        }
    }
}

/// How an escalation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// Never reached an agent.
    Failed,
    /// The visitor gave up before an agent answered.
    Cancelled,
    /// Reached an agent, then finished.
    Ended,
}

/// Why an escalation ended (docs/protocol.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `escalationFailed` before connect.
    EscalationFailed,
    /// `agentDisconnect` before connect.
    DisconnectedBeforeConnect,
    /// `escalationFailed` after connect.
    FailedAfterConnect,
    /// `agentDisconnect` after connect.
    AgentDisconnect,
    /// The visitor ended the session.
    VisitorEnded,
    /// No answer to `widgetEscalate` in time.
    NoResponseTimeout,
    /// Queued for too long.
    QueueTimeout,
    /// Connected with no message either way for too long.
    IdleTimeout,
    /// The escalation lived past its maximum age.
    TtlExpired,
    /// `widgetEscalate` could not be delivered within its budget.
    DeliveryFailed,
}

/// Why an event was refused (docs/protocol.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// There is no live escalation.
    NoActiveEscalation,
    /// A message before `escalationSuccess`.
    NotConnected,
    /// A queue update after `escalationSuccess`.
    AlreadyConnected,
    /// The event names an escalation that is not the current one.
    StaleEscalation,
    /// Too many visitor messages held while waiting for an agent.
    HeldMessagesFull,
}

impl RejectCode {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::NoActiveEscalation => "no_active_escalation",
            RejectCode::NotConnected => "not_connected",
            RejectCode::AlreadyConnected => "already_connected",
            RejectCode::StaleEscalation => "stale_escalation",
            RejectCode::HeldMessagesFull => "held_messages_full",
        }
    }
}

/// The four timers of docs/protocol.md §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// No answer to `widgetEscalate`.
    NoResponse,
    /// Queued too long.
    Queue,
    /// Connected and silent too long.
    Idle,
    /// Escalation too old.
    Ttl,
}

impl TimerKind {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::NoResponse => "no_response",
            TimerKind::Queue => "queue",
            TimerKind::Idle => "idle",
            TimerKind::Ttl => "ttl",
        }
    }
}

/// A bot's rules (docs/protocol.md §5 timers and limits, §4 `eventRejected` switch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// No answer to `widgetEscalate` → failed(`no_response_timeout`).
    pub no_response_timeout: Duration,
    /// Queued longer → failed(`queue_timeout`).
    pub queue_timeout: Duration,
    /// Connected with no message either way → ended(`idle_timeout`).
    pub idle_timeout: Duration,
    /// Any escalation older → ended(`ttl_expired`).
    pub ttl: Duration,
    /// Visitor messages held before connect.
    pub max_held_messages: usize,
    /// Send `eventRejected` webhooks for refused agent events.
    pub report_rejections: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            no_response_timeout: Duration::from_secs(120),
            queue_timeout: Duration::from_secs(30 * 60),
            idle_timeout: Duration::from_secs(30 * 60),
            ttl: Duration::from_secs(24 * 3600),
            max_held_messages: 20,
            report_rejections: true,
        }
    }
}

/// The agent currently serving the visitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Display name.
    pub name: Option<String>,
    /// Avatar URL.
    pub avatar: Option<String>,
}

/// Latest queue information, as the contact centre gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    /// Position in the queue.
    pub position: Option<DisplayValue>,
    /// Estimated wait in minutes.
    pub waiting_time: Option<DisplayValue>,
}

/// A visitor message held until an agent connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldMessage {
    /// Stable id.
    pub message_id: MessageId,
    /// Text.
    pub text: String,
}

/// The end of an escalation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Failed, cancelled or ended.
    pub kind: OutcomeKind,
    /// Why.
    pub reason: EndReason,
    /// When.
    pub at: DateTime<Utc>,
}

/// Where a live escalation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Waiting for the contact centre.
    Requested,
    /// In the queue.
    Queued,
    /// With an agent.
    Connected,
}

/// One escalation of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// Its id.
    pub id: EscalationId,
    /// When `escalate` was applied.
    pub started_at: DateTime<Utc>,
    /// Where it is while live (kept as it was when it ended).
    pub stage: Stage,
    /// The agent, once connected.
    pub agent: Option<Agent>,
    /// Latest queue information.
    pub queue: Option<QueueInfo>,
    /// Visitor messages waiting for an agent.
    pub held: Vec<HeldMessage>,
    /// Armed timers and their deadlines.
    pub timers: BTreeMap<TimerKind, DateTime<Utc>>,
    /// Set once, when it ends.
    pub outcome: Option<Outcome>,
}

/// The state of one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Conversation {
    /// The current (or last) escalation.
    pub escalation: Option<Escalation>,
    /// Last widget sequence handed out.
    pub widget_sequence: u64,
    /// Last webhook sequence handed out.
    pub webhook_sequence: u64,
    /// Recently applied or refused event ids with their namespaces, newest last.
    pub recent_event_ids: VecDeque<ScopedEventId>,
}

impl Conversation {
    /// The live escalation, if any.
    pub fn live(&self) -> Option<&Escalation> {
        self.escalation.as_ref().filter(|e| e.outcome.is_none())
    }

    /// The row of docs/protocol.md §5's table this conversation is in.
    pub fn phase(&self) -> Phase {
        match self.live().map(|e| e.stage) {
            None => Phase::Idle,
            Some(Stage::Requested) => Phase::Requested,
            Some(Stage::Queued) => Phase::Queued,
            Some(Stage::Connected) => Phase::Connected,
        }
    }
}

/// Everything that can happen to a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// An agent event from the contact centre.
    Agent {
        /// The escalation the caller named, if any.
        escalation_id: Option<EscalationId>,
        /// What happened.
        action: AgentAction,
        /// Display-only fields the ingress dropped from the event; the machine
        /// ignores them, the worker records them with the verdict (docs/protocol.md §2).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<FieldWarning>,
    },
    /// The bot hands the conversation to a human.
    Escalate {
        /// The id for the new escalation (made by the ingress).
        escalation_id: EscalationId,
        /// Routing hint, opaque.
        escalate_to: Option<String>,
        /// Opaque metadata.
        metadata: Option<Value>,
        /// Opaque transcript.
        transcript: Option<Value>,
    },
    /// The visitor writes to the agent.
    VisitorMessage {
        /// Stable id.
        message_id: MessageId,
        /// Text.
        text: String,
    },
    /// The visitor ends the session.
    VisitorEnd,
    /// A durable timer reached its deadline.
    TimerFired {
        /// The escalation it was armed for.
        escalation_id: EscalationId,
        /// Which timer.
        kind: TimerKind,
    },
    /// `widgetEscalate` ran out of its delivery budget.
    EscalateUndeliverable {
        /// The escalation whose webhook failed.
        escalation_id: EscalationId,
    },
}

/// One input with its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Idempotency key: a repeat is a `duplicate`, applied once.
    pub event_id: EventId,
    /// What happened.
    pub input: Input,
}

impl Input {
    /// The namespace of the event id this input comes with: agent events in
    /// the agent's, the visitor's inputs in the visitor's, and the inputs the
    /// service makes itself (escalate's id is made by the ingress) in the system's.
    pub fn id_space(&self) -> IdSpace {
        match self {
            Input::Agent { .. } => IdSpace::Agent,
            Input::VisitorMessage { .. } | Input::VisitorEnd => IdSpace::Visitor,
            Input::Escalate { .. } | Input::TimerFired { .. } | Input::EscalateUndeliverable { .. } => {
                IdSpace::System
            }
        }
    }
}

impl Command {
    /// The event id with its namespace: what a repeat is recognised by.
    pub fn scoped_id(&self) -> ScopedEventId {
        ScopedEventId(self.input.id_space(), self.event_id.clone())
    }
}

/// What the machine needs besides the state and the command.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The current time (passed in; the machine never reads a clock).
    pub now: DateTime<Utc>,
    /// The bot's rules.
    pub rules: &'a Rules,
}

/// The verdict on one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "code", rename_all = "snake_case")]
pub enum Verdict {
    /// It changed the conversation.
    Applied,
    /// A repeat (same event id, same agent again, escalate while live): no effect.
    Duplicate,
    /// A timer or delivery signal that no longer applies: no effect.
    Ignored,
    /// Refused with a code.
    Rejected(RejectCode),
}

/// Something the worker must carry out after committing the transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Send to the visitor's widget.
    Widget(WidgetEnvelope),
    /// Send to the bot's webhook.
    Webhook(WebhookEnvelope),
    /// Arm (or re-arm) a timer.
    SetTimer {
        /// For this escalation.
        escalation_id: EscalationId,
        /// Which.
        kind: TimerKind,
        /// Deadline.
        at: DateTime<Utc>,
    },
    /// Disarm a timer.
    CancelTimer {
        /// For this escalation.
        escalation_id: EscalationId,
        /// Which.
        kind: TimerKind,
    },
}

/// The result of a command that was not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state to store.
    pub next: Conversation,
    /// What happened.
    pub verdict: Verdict,
    /// What to carry out, in order.
    pub effects: Vec<Effect>,
}

/// A refused command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub code: RejectCode,
    /// The conversation's phase when refused.
    pub current_state: Phase,
}
