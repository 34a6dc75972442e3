//! What the simulated contact centre does with one escalation: queue updates,
//! an agent who connects and greets, replies to (echoes) the visitor's
//! messages, and leaves when the visitor says "bye" or when the session time
//! is up. One task per conversation posts its events one after the other, so
//! they arrive in the order a real contact centre would send them.

use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::agent::AgentApi;

/// The timings and words of the simulated agent.
#[derive(Debug, Clone)]
pub struct Script {
    /// `escalationQueueUpdate`s before the agent connects (positions N … 1).
    pub queue_updates: u32,
    /// Time before each queue update, and before the agent connects.
    pub queue_interval: Duration,
    /// The agent's display name.
    pub agent: String,
    /// Time the agent takes to answer a visitor message.
    pub reply_delay: Duration,
    /// The agent disconnects this long after connecting; `None`: only on "bye".
    pub session: Option<Duration>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            queue_updates: 2,
            queue_interval: Duration::from_millis(1500),
            agent: "Alex (simulated agent)".to_owned(),
            reply_delay: Duration::from_millis(700),
            session: Some(Duration::from_secs(600)),
        }
    }
}

/// A visitor message, as the `widgetMessage` webhook brought it.
#[derive(Debug)]
pub struct VisitorMessage {
    /// The text.
    pub text: String,
}

/// Whether the visitor's text asks the agent to leave.
pub fn is_goodbye(text: &str) -> bool {
    matches!(text.trim().trim_end_matches(['!', '.']).to_lowercase().as_str(), "bye" | "goodbye")
}

/// Plays `script` for one escalation until it ends: the agent disconnects,
/// or `cancel` fires (the visitor ended the session, or the simulator stops).
pub async fn play(
    api: AgentApi,
    script: Script,
    conversation: String,
    escalation: Option<String>,
    mut inbox: mpsc::Receiver<VisitorMessage>,
    cancel: CancellationToken,
) {
    let post = |kind: &'static str, fields: serde_json::Value| {
        let (api, conversation, escalation) = (&api, &conversation, &escalation);
        async move { api.post(conversation, escalation.as_deref(), kind, fields).await }
    };
    for position in (1..=script.queue_updates).rev() {
        if !pause(&cancel, script.queue_interval).await {
            return;
        }
        // Two minutes a place, as a contact centre might estimate it.
        let fields = json!({"queuePosition": position, "waitingTime": position * 2});
        if !post("escalationQueueUpdate", fields).await {
            return;
        }
    }
    if !pause(&cancel, script.queue_interval).await {
        return;
    }
    if !post("escalationSuccess", json!({"agent": script.agent})).await {
        return;
    }
    let greeting = format!("Hi, I'm {}. How can I help you today?", script.agent);
    post("message", json!({"text": greeting})).await;

    let deadline = script.session.map(|s| Instant::now() + s);
    loop {
        let until_deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = until_deadline => {
                post("message", json!({"text": "Our time is up, I have to go now. Goodbye!"})).await;
                post("agentDisconnect", json!({})).await;
                return;
            }
            message = inbox.recv() => {
                let Some(message) = message else { return };
                if !pause(&cancel, script.reply_delay).await {
                    return;
                }
                if is_goodbye(&message.text) {
                    post("message", json!({"text": "Goodbye, and thanks for chatting!"})).await;
                    post("agentDisconnect", json!({})).await;
                    return;
                }
                let echo: String = message.text.chars().take(4000).collect();
                post("message", json!({"text": format!("You said: {echo}")})).await;
            }
        }
    }
}

/// Sleeps `duration`; `false` if cancelled first.
async fn pause(cancel: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(duration) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::is_goodbye;

    #[test]
    fn goodbyes() {
        for text in ["bye", " Bye! ", "goodbye.", "BYE"] {
            assert!(is_goodbye(text), "{text}");
        }
        for text in ["bye bye now", "hello", "by"] {
            assert!(!is_goodbye(text), "{text}");
        }
    }
}
