//! A minimal `text/event-stream` reader for tests: events with their `id`,
//! `event` and JSON `data`; comment lines (heartbeats) are counted, not returned.

use std::time::Duration;

use serde_json::Value;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// `id:`, the sequence.
    pub id: u64,
    /// `event:`, the type.
    pub event: String,
    /// `data:`, parsed.
    pub data: Value,
}

/// An open stream.
#[derive(Debug)]
pub struct SseStream {
    response: reqwest::Response,
    buffer: String,
    /// Heartbeat comments seen so far.
    pub heartbeats: usize,
}

impl SseStream {
    /// Wraps a `200` response.
    pub fn new(response: reqwest::Response) -> Self {
        Self { response, buffer: String::new(), heartbeats: 0 }
    }

    /// The next event, or `None` if none came within `wait` or the stream ended.
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = self.parse(&block) {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await.ok()?.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads events until `count` came (or `wait` passed without one).
    pub async fn take(&mut self, count: usize, wait: Duration) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while events.len() < count {
            match self.next(wait).await {
                Some(event) => events.push(event),
                None => break,
            }
        }
        events
    }

    fn parse(&mut self, block: &str) -> Option<SseEvent> {
        let (mut id, mut event, mut data) = (None, None, String::new());
        for line in block.lines() {
            if line.starts_with(':') {
                self.heartbeats += 1;
            } else if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        Some(SseEvent { id: id?, event: event?, data: serde_json::from_str(&data).ok()? })
    }
}
