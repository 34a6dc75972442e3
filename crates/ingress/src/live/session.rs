//! The [`Supervisor`] of the [`super::LiveHub`]: the task that owns its
//! [`LiveSession`] (connection, channel, exclusive queue; `broker::live`),
//! consumes it, and replaces it with a new one, re-bound, when it is lost.
//!
//! Like the publisher's sessions, a session is never repaired: once given up
//! no bind goes to it, and the next one is installed whole.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use broker::nodes::{Backoff, HEALTH_CHECK_INTERVAL, Nodes};
use broker::{Inbound, LiveInbox, LiveSession};
use metrics::counter;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Hub;

/// The task that owns the connection: consumes, watches, reconnects.
pub(super) struct Supervisor {
    pub(super) hub: Weak<Hub>,
    /// The broker's node URLs; see [`broker::nodes`].
    pub(super) nodes: Arc<Nodes>,
    pub(super) prefix: String,
    pub(super) shutdown: CancellationToken,
}

impl Supervisor {
    pub(super) async fn run(self, first: Option<(Arc<LiveSession>, LiveInbox)>) {
        let mut backoff = Backoff::reconnect();
        let (mut session, mut consumer) = match first {
            Some(first) => first,
            // Started while the broker was away: keep trying until it is back.
            None => match self.reconnect(1, &mut backoff).await {
                Some(first) => first,
                None => return,
            },
        };
        loop {
            backoff.connected();
            let Some(reason) = self.serve(&session, &mut consumer).await else { break };
            // No bind may go to it any more.
            session.give_up();
            if let Some(hub) = self.hub.upgrade() {
                hub.connected.store(false, Ordering::Release);
            }
            warn!(generation = session.generation(), %reason, "live connection lost; reconnecting");
            session.close().await;
            // Only a connection that stayed up for a while resets the backoff.
            backoff.lost();
            let Some(next) = self.reconnect(session.generation() + 1, &mut backoff).await else { return };
            (session, consumer) = next;
        }
        session.close().await;
    }

    /// Hands deliveries to subscribers until the session is lost (why) or
    /// the hub is gone (`None`).
    async fn serve(&self, session: &LiveSession, inbox: &mut LiveInbox) -> Option<String> {
        let mut tick = tokio::time::interval(HEALTH_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                inbound = inbox.next() => match inbound {
                    Inbound::Message(message) => self.hub.upgrade()?.receive(message),
                    Inbound::Ended(reason) => return Some(reason),
                },
                _ = tick.tick() => {
                    if !session.usable() {
                        return Some("the connection or its channel is no longer open".to_owned());
                    }
                }
            }
        }
    }

    /// Opens and installs a new session, retrying with backoff; `None` once
    /// the hub is gone.
    async fn reconnect(
        &self,
        generation: u64,
        backoff: &mut Backoff,
    ) -> Option<(Arc<LiveSession>, LiveInbox)> {
        let mut attempt: u32 = 0;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
            attempt = attempt.saturating_add(1);
            // Session::open bounds each node's handshake and the declares.
            let open = LiveSession::open(&self.nodes, &self.prefix, generation);
            let opened = tokio::select! {
                () = self.shutdown.cancelled() => return None,
                opened = open => opened,
            };
            let error = match opened {
                Ok((session, consumer)) => {
                    let Some(hub) = self.hub.upgrade() else {
                        session.close().await;
                        return None;
                    };
                    match hub.install(&session).await {
                        Ok(conversations) => {
                            counter!("escalations_ingress_live_reconnects_total").increment(1);
                            info!(
                                generation,
                                attempt, conversations, "live connection re-established; subscribers resync"
                            );
                            return Some((session, consumer));
                        }
                        Err(error) => {
                            session.close().await;
                            error
                        }
                    }
                }
                Err(error) => anyhow::Error::from(error).context("opening a live session"),
            };
            warn!(error = format!("{error:#}"), attempt, retry_in = ?backoff.peek(), "live reconnect failed; retrying");
        }
    }
}
