//! Per-bot rules, resolved once from the settings.

use std::collections::HashMap;

use domain::{BotId, Rules};
use settings::Settings;

/// The state-machine rules of every configured bot; unknown bots (removed
/// from the configuration while their events were in flight) get the defaults.
#[derive(Debug, Clone)]
pub struct BotRules {
    by_bot: HashMap<String, Rules>,
    fallback: Rules,
}

impl BotRules {
    /// Resolves every bot's overrides against the defaults.
    pub fn from_settings(settings: &Settings) -> Self {
        let by_bot = settings
            .bots
            .iter()
            .map(|bot| (bot.id.clone(), bot.effective(&settings.defaults).rules()))
            .collect();
        let fallback = settings.defaults.rules();
        Self { by_bot, fallback }
    }

    /// The rules of `bot`.
    pub fn rules_for(&self, bot: &BotId) -> &Rules {
        self.by_bot.get(bot.as_str()).unwrap_or(&self.fallback)
    }
}
