//! The key every per-conversation row is stored under.

use domain::{BotId, ConversationId, Envelope};

/// One conversation of one bot: the primary key of `conversations` and the
/// leading columns of every per-conversation table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConvKey {
    /// Whose conversation.
    pub bot_id: BotId,
    /// Which conversation.
    pub conversation_id: ConversationId,
}

impl ConvKey {
    /// Builds a key.
    pub fn new(bot_id: BotId, conversation_id: ConversationId) -> Self {
        Self { bot_id, conversation_id }
    }
}

impl From<&Envelope> for ConvKey {
    fn from(envelope: &Envelope) -> Self {
        Self::new(envelope.bot_id.clone(), envelope.conversation_id.clone())
    }
}
