//! What the ingress publishes and the worker consumes: one command for one
//! conversation of one bot, stamped with the time the ingress accepted it.
//! The broker message body is this struct as JSON; its `message_id` is the
//! command's event id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{BotId, ConversationId};
use crate::machine::{Command, Input};
use crate::validation::FieldWarning;

/// One accepted command, as carried by the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Whose conversation.
    pub bot_id: BotId,
    /// Which conversation.
    pub conversation_id: ConversationId,
    /// When the ingress accepted it.
    pub received_at: DateTime<Utc>,
    /// The command.
    pub command: Command,
}

impl Envelope {
    /// The event type, for headers, logs and metrics labels (bounded).
    pub fn event_type(&self) -> &'static str {
        self.command.input.name()
    }

    /// Encodes the broker body.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a broker body; an error here makes the message poison.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl Input {
    /// Wire name of the input: the agent event type, or one of ours.
    pub fn name(&self) -> &'static str {
        match self {
            Input::Agent { action, .. } => action.event_type(),
            Input::Escalate { .. } => "escalate",
            Input::VisitorMessage { .. } => "visitorMessage",
            Input::VisitorEnd => "visitorEnd",
            Input::TimerFired { .. } => "timerFired",
            Input::EscalateUndeliverable { .. } => "escalateUndeliverable",
        }
    }

    /// The display-only fields the ingress dropped from it (docs/protocol.md §2); empty
    /// for everything but agent events.
    pub fn warnings(&self) -> &[FieldWarning] {
        match self {
            Input::Agent { warnings, .. } => warnings,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentAction, EventId};

    #[test]
    fn envelope_round_trips() {
        let envelope = Envelope {
            bot_id: BotId::parse("bot").expect("id"),
            conversation_id: ConversationId::parse("c").expect("id"),
            received_at: DateTime::from_timestamp(1_800_000_000, 5_000).expect("time"),
            command: Command {
                event_id: EventId::parse("e").expect("id"),
                input: Input::Agent {
                    escalation_id: None,
                    action: AgentAction::QueueUpdate {
                        queue_position: Some(1u32.into()),
                        waiting_time: Some("5-10".into()),
                    },
                    warnings: Vec::new(),
                },
            },
        };
        let back = Envelope::from_bytes(&envelope.to_bytes()).expect("decodes");
        assert_eq!(back, envelope);
        assert_eq!(back.event_type(), "escalationQueueUpdate");
    }
}
