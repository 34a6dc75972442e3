//! [`LiveUpdate`], what a worker announces after committing a batch: one
//! conversation's new widget events and the verdicts of its events, for the
//! ingress's open streams (docs/protocol.md §3) and `Prefer: wait` callers (docs/protocol.md §2).
//! The database stays the source of truth; this is only a fast path.

use serde::{Deserialize, Serialize};

use crate::ids::{BotId, ConversationId, EventId, IdSpace};
use crate::machine::{Phase, Verdict};
use crate::widget::WidgetEnvelope;

/// One conversation's share of one committed batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveUpdate {
    /// The bot.
    pub bot_id: BotId,
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Its phase after the batch.
    pub phase: Phase,
    /// Its new widget events, in sequence order.
    pub events: Vec<WidgetEnvelope>,
    /// The verdict on each of its commands in the batch, in order.
    pub verdicts: Vec<LiveVerdict>,
}

/// The verdict on one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveVerdict {
    /// The command's event id.
    pub event_id: EventId,
    /// Its namespace (absent from older workers: an agent id).
    #[serde(default)]
    pub space: IdSpace,
    /// What the machine decided.
    pub verdict: Verdict,
}
