//! Events streamed to the visitor's widget (docs/protocol.md §3). Each carries the
//! conversation's widget sequence (the SSE `id:`) and a timestamp, so a widget
//! reconnecting with `Last-Event-ID` gets exactly what it missed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::display::DisplayValue;
use crate::ids::{EscalationId, MessageId};
use crate::machine::{EndReason, RejectCode};

/// What the widget is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum WidgetEvent {
    /// The bot handed the conversation to a human; waiting for the contact centre.
    EscalationRequested,
    /// Queue position and/or estimated wait (minutes), as the contact centre
    /// gave them: an integer stays an integer, a string stays a string.
    EscalationQueueUpdate {
        /// Position in the queue.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queue_position: Option<DisplayValue>,
        /// Estimated wait in minutes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        waiting_time: Option<DisplayValue>,
    },
    /// An agent is connected; messages flow both ways from now on.
    EscalationSuccess {
        /// Agent's display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        /// Agent's avatar (https URL).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_avatar: Option<String>,
    },
    /// Another agent took over the conversation.
    AgentChanged {
        /// New agent's display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        /// New agent's avatar.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_avatar: Option<String>,
    },
    /// A message from the agent.
    Message {
        /// The text.
        text: String,
        /// Stable id of the message (the agent event's id).
        message_id: MessageId,
    },
    /// The escalation failed (agent side or undeliverable).
    EscalationFailed {
        /// Why.
        reason: EndReason,
    },
    /// The agent left.
    AgentDisconnect {
        /// Why the escalation ended.
        reason: EndReason,
    },
    /// The session ended for another reason (visitor, timers).
    SessionEnded {
        /// Why.
        reason: EndReason,
    },
    /// A visitor message or `end` was refused (docs/protocol.md §5: every rejection is
    /// reported): the held queue is full, or there is no escalation to end
    /// or write to.
    VisitorRejected {
        /// Why (`held_messages_full`, `no_active_escalation`).
        code: RejectCode,
        /// The refused message's id (its `clientMessageId` if it had one);
        /// absent for a refused `end`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<MessageId>,
    },
}

impl WidgetEvent {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            WidgetEvent::EscalationRequested => "escalationRequested",
            WidgetEvent::EscalationQueueUpdate { .. } => "escalationQueueUpdate",
            WidgetEvent::EscalationSuccess { .. } => "escalationSuccess",
            WidgetEvent::AgentChanged { .. } => "agentChanged",
            WidgetEvent::Message { .. } => "message",
            WidgetEvent::EscalationFailed { .. } => "escalationFailed",
            WidgetEvent::AgentDisconnect { .. } => "agentDisconnect",
            WidgetEvent::SessionEnded { .. } => "sessionEnded",
            WidgetEvent::VisitorRejected { .. } => "visitorRejected",
        }
    }

    /// True for the events that end an escalation.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            WidgetEvent::EscalationFailed { .. }
                | WidgetEvent::AgentDisconnect { .. }
                | WidgetEvent::SessionEnded { .. }
        )
    }
}

/// A widget event with its place in the conversation's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WidgetEnvelope {
    /// Per conversation, strictly increasing, starting at 1; the SSE `id:`.
    pub sequence: u64,
    /// When the event was produced.
    pub timestamp: DateTime<Utc>,
    /// The escalation it belongs to.
    pub escalation_id: EscalationId,
    /// The event.
    #[serde(flatten)]
    pub event: WidgetEvent,
}
