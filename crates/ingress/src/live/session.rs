//! The [`Supervisor`] of the [`super::LiveHub`]: the task that owns its
//! [`LiveSession`] (connection, channel, exclusive queue; `broker::live`),
//! consumes it, and replaces it with a new one, re-bound, when it is lost.
//!
//! Like the publisher's sessions, a session is never repaired: once given up
//! no bind goes to it, and the next one is installed whole.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use broker::nodes::{Nodes, jittered};
use broker::{Inbound, LiveInbox, LiveSession};
use metrics::counter;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Hub;

/// The first reconnect delay, doubled after each failure up to the maximum.
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);
/// The longest reconnect delay; a connection that stayed up this long resets it.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);
/// How often the supervisor checks the connection and channel status: a
/// channel closed by the broker (a refused bind) only shows up there.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(250);

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
        let mut delay = RECONNECT_DELAY_MIN;
        let (mut session, mut consumer) = match first {
            Some(first) => first,
            // Started while the broker was away: keep trying until it is back.
            None => match self.reconnect(1, &mut delay).await {
                Some(first) => first,
                None => return,
            },
        };
        loop {
            let connected_at = Instant::now();
            let Some(reason) = self.serve(&session, &mut consumer).await else { break };
            // No bind may go to it any more.
            session.give_up();
            if let Some(hub) = self.hub.upgrade() {
                hub.connected.store(false, Ordering::Release);
            }
            warn!(generation = session.generation(), %reason, "live connection lost; reconnecting");
            session.close().await;
            // Only a connection that stayed up for a while resets the backoff.
            if connected_at.elapsed() >= RECONNECT_DELAY_MAX {
                delay = RECONNECT_DELAY_MIN;
            }
            let Some(next) = self.reconnect(session.generation() + 1, &mut delay).await else { return };
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
        delay: &mut Duration,
    ) -> Option<(Arc<LiveSession>, LiveInbox)> {
        let mut attempt: u32 = 0;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(jittered(*delay)) => {}
            }
            *delay = delay.saturating_mul(2).min(RECONNECT_DELAY_MAX);
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
            warn!(error = format!("{error:#}"), attempt, retry_in = ?*delay, "live reconnect failed; retrying");
        }
    }
}
