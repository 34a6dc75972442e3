//! `escalations conversations show BOT CONVERSATION` (docs/protocol.md §8):
//! renders `admin::timeline`, the same timeline the admin API answers.

use std::io::Write;

use admin::timeline::{self, Timeline};
use store::Store;

/// Prints the timeline of `bot`/`conversation`.
pub async fn show(
    store: &Store,
    bot: &str,
    conversation: &str,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let timeline = timeline::show(store, bot, conversation).await?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&timeline)?)?;
    } else {
        write!(out, "{}", render(&timeline))?;
    }
    Ok(())
}

/// The state line, then one aligned line per entry.
pub fn render(t: &Timeline) -> String {
    let mut text = match &t.phase {
        Some(phase) => format!(
            "conversation {}/{}: {phase} (escalation {}), updated {}\n",
            t.bot_id,
            t.conversation_id,
            t.escalation_id.as_deref().unwrap_or("-"),
            t.updated_at.as_deref().unwrap_or("-"),
        ),
        None => format!("conversation {}/{}: no state stored\n", t.bot_id, t.conversation_id),
    };
    for entry in &t.timeline {
        let field = |name: &str| entry[name].as_str().unwrap_or("-").to_owned();
        text.push_str(&format!("{}  {:<7}  {}\n", field("at"), field("kind"), field("text")));
    }
    text
}
