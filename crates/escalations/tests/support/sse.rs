//! A widget's event stream read the way a browser's `EventSource` reads it:
//! `event:`, `id:` and `data:` lines up to a blank line.

#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub name: String,
    pub id: String,
    pub data: Value,
}

/// An open stream and what it has delivered so far.
pub struct Stream {
    body: reqwest::Response,
    buffer: String,
    pub seen: Vec<SseEvent>,
}

impl Stream {
    /// Opens `{base}/widget/v1/conversations/{conversation}/events` with `token`.
    pub async fn open(base: &str, conversation: &str, token: &str) -> Stream {
        let response = reqwest::Client::new()
            .get(format!("{base}/widget/v1/conversations/{conversation}/events"))
            .bearer_auth(token)
            .send()
            .await
            .expect("stream opens");
        assert_eq!(response.status(), 200, "stream status");
        Stream { body: response, buffer: String::new(), seen: Vec::new() }
    }

    /// Reads until an event satisfies `wanted` (returned), or panics after `within`.
    pub async fn until(
        &mut self,
        within: Duration,
        what: &str,
        wanted: impl Fn(&SseEvent) -> bool,
    ) -> SseEvent {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    self.seen.push(event.clone());
                    if wanted(&event) {
                        return event;
                    }
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(other) => panic!("stream ended waiting for {what}: {other:?}; seen {:#?}", self.seen),
                Err(_) => panic!("timed out waiting for {what}; seen {:#?}", self.seen),
            }
        }
    }
}

fn parse(block: &str) -> Option<SseEvent> {
    let (mut name, mut id, mut data) = (String::new(), String::new(), String::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    if name.is_empty() {
        return None; // a heartbeat comment
    }
    Some(SseEvent { name, id, data: serde_json::from_str(&data).unwrap_or(Value::Null) })
}
