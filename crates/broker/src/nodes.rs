//! The broker's nodes: one AMQP URL, or several (a RabbitMQ cluster), and
//! connecting to any one of them that answers.
//!
//! `broker.url` holds either one URL or a comma-separated list of them
//! (`amqp://a:5672/%2f,amqp://b:5672/%2f`); the settings also accept a TOML
//! array, which they join with commas. Every connection of the service (the
//! publisher, the shard consumers, the live hub, the operator commands) goes
//! through [`Nodes::connect`]: it tries the nodes one after the other,
//! starting at a node picked at random for this process and moving past a
//! node that failed, so that the processes of a deployment spread over the
//! cluster and a process whose node went away moves to another one.
//!
//! Leader placement is the broker's: a quorum queue's leader is wherever the
//! first declaring connection was (or spread over the nodes with
//! `queue_leader_locator = balanced`), not where a consumer connects; a
//! consumer or publisher on another node is served through it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use rand::Rng as _;

use crate::error::{Error, Result};

/// The node URLs of one broker (a single node or a cluster); see the module
/// docs. `Debug` hides the passwords.
pub struct Nodes {
    urls: Vec<String>,
    /// Index (modulo the count) of the node the next attempt starts with.
    next: AtomicUsize,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|url| redact(url)).collect();
        f.debug_struct("Nodes").field("urls", &urls).finish()
    }
}

impl Nodes {
    /// The URLs in `list` (see [`split_urls`]), starting at a random one.
    #[must_use]
    pub fn new(list: &str) -> Self {
        let urls = split_urls(list);
        let start = rand::rng().random_range(0..urls.len().max(1));
        Self { urls, next: AtomicUsize::new(start) }
    }

    /// How many node URLs there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Whether there are none (an empty `broker.url`; settings validation
    /// refuses it).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// Connects to the first node that accepts, trying each node once,
    /// starting after the one the previous connection used (so a process
    /// whose node went away tries the others first, and comes back to it
    /// last). Each node gets `per_node` to complete the AMQP handshake.
    /// Meant for one connection at a time: each owner of a connection has
    /// its own `Nodes`.
    ///
    /// Returns the connection and the node's URL with its password hidden
    /// (for logs).
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`] naming the last failure when no node accepted.
    pub async fn connect(
        &self,
        properties: ConnectionProperties,
        per_node: Duration,
    ) -> Result<(Connection, String)> {
        let count = self.urls.len();
        let mut last = None;
        for _ in 0..count {
            let index = self.next.fetch_add(1, Ordering::Relaxed) % count;
            let url = &self.urls[index];
            let attempt = tokio::time::timeout(per_node, Connection::connect(url, properties.clone())).await;
            let error = match attempt {
                Ok(Ok(connection)) => {
                    // One Nodes serves one connection at a time, so the next
                    // connect means this one broke: start at the node after
                    // it, which spares a node that went silent (no refusal,
                    // only the timeout) a first attempt.
                    self.next.store(index + 1, Ordering::Relaxed);
                    return Ok((connection, redact(url)));
                }
                Ok(Err(error)) => error,
                Err(_elapsed) => lapin::ErrorKind::IOError(std::sync::Arc::new(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )))
                .into(),
            };
            tracing::debug!(node = %redact(url), %error, "broker node did not accept the connection");
            last = Some((redact(url), error));
        }
        match last {
            Some((node, source)) => {
                let tried = if count == 1 { String::new() } else { format!(" (tried {count} nodes)") };
                Err(Error::Amqp { context: format!("connect to {node}{tried}"), source })
            }
            None => Err(Error::Precondition("no broker URL configured (broker.url)".to_owned())),
        }
    }
}

pub use domain::url_list::split_urls;

/// A jittered delay: uniformly between half of `delay` and all of it, so
/// that the processes a node loss disconnected at the same moment do not all
/// come back at the same moment.
#[must_use]
pub fn jittered(delay: Duration) -> Duration {
    let half = delay / 2;
    half + rand::rng().random_range(Duration::ZERO..=delay - half)
}

/// How often a connection's owner double-checks the connection and channel
/// status: connection errors also arrive as events, but a channel closed by the
/// broker (a refused bind, a publish to a deleted exchange) only shows up there.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// The first reconnect delay of [`Backoff::reconnect`].
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);
/// The longest reconnect delay of [`Backoff::reconnect`]; a connection that
/// stayed up this long resets it.
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);

/// The reconnect delays of one connection's owner (the publisher, a worker's
/// connection, the live hub): doubling from a minimum to a maximum, each
/// jittered ([`jittered`]), and back to the minimum only once a connection
/// stayed up for the maximum, so one that flaps keeps backing off.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    connected_at: Option<tokio::time::Instant>,
}

impl Backoff {
    /// Delays from `min` doubling to `max`.
    #[must_use]
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), next: min, connected_at: None }
    }

    /// The reconnect delays every connection owner uses: 100 ms doubling to 5 s.
    #[must_use]
    pub fn reconnect() -> Self {
        Self::new(RECONNECT_DELAY_MIN, RECONNECT_DELAY_MAX)
    }

    /// The wait before the next attempt (jittered), doubling the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        jittered(delay)
    }

    /// The delay the next attempt waits before jitter.
    #[must_use]
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// A connection is up (from now).
    pub fn connected(&mut self) {
        self.connected_at = Some(tokio::time::Instant::now());
    }

    /// The connection is lost: the delays start over only if it stayed up
    /// for the longest delay.
    pub fn lost(&mut self) {
        if self.connected_at.take().is_some_and(|at| at.elapsed() >= self.max) {
            self.next = self.min;
        }
    }

    /// Back to the shortest delay (a connect that succeeded, for an owner that
    /// connects on demand rather than keeping a connection up).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The URL list with every password hidden, for logs.
#[must_use]
pub fn redact_list(list: &str) -> String {
    split_urls(list).iter().map(|url| redact(url)).collect::<Vec<_>>().join(",")
}

/// `amqp://user:secret@host/vhost` → `amqp://user:***@host/vhost`.
#[must_use]
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_maximum_and_starts_over_only_after_a_stable_connection() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(400));
        let waits: Vec<Duration> = (0..4).map(|_| backoff.next_delay()).collect();
        for (wait, full) in waits.iter().zip([100, 200, 400, 400]) {
            assert!(*wait >= ms(full / 2) && *wait <= ms(full), "{wait:?} for {full} ms");
        }
        assert_eq!(backoff.peek(), ms(400));
        backoff.connected();
        backoff.lost();
        assert_eq!(backoff.peek(), ms(400), "a connection that flapped keeps backing off");
        backoff.lost();
        assert_eq!(backoff.peek(), ms(400), "lost without a connection changes nothing");
        backoff.reset();
        assert_eq!(backoff.peek(), ms(100));
        let reconnect = Backoff::reconnect();
        assert_eq!((reconnect.min, reconnect.max), (RECONNECT_DELAY_MIN, RECONNECT_DELAY_MAX));
        assert_eq!(Backoff::new(ms(300), ms(100)).max, ms(300), "the maximum is never below the minimum");
    }

    #[tokio::test]
    async fn a_connection_that_stayed_up_for_the_maximum_starts_the_delays_over() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(10), ms(40));
        let _ = (backoff.next_delay(), backoff.next_delay());
        assert_eq!(backoff.peek(), ms(40));
        backoff.connected();
        backoff.lost();
        assert_eq!(backoff.peek(), ms(40), "up for less than the maximum");
        backoff.connected();
        tokio::time::sleep(ms(45)).await;
        backoff.lost();
        assert_eq!(backoff.peek(), ms(10));
    }

    #[test]
    fn jitter_stays_within_half_and_all_of_the_delay() {
        for _ in 0..200 {
            let d = jittered(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000), "{d:?}");
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn redact_hides_only_the_passwords() {
        assert_eq!(redact("amqp://guest:secret@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact_list("amqp://u:a@h1/,amqp://u:b@h2/"), "amqp://u:***@h1/,amqp://u:***@h2/");
    }

    #[tokio::test]
    async fn connect_moves_past_nodes_that_refuse() {
        // Two closed ports, then nothing else: both tried, the error names the count.
        let closed = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").port()
        };
        let (a, b) = (closed(), closed());
        let nodes = Nodes::new(&format!("amqp://u:pw@127.0.0.1:{a}/%2f,amqp://u:pw@127.0.0.1:{b}/%2f"));
        assert_eq!(nodes.len(), 2);
        let error = nodes
            .connect(ConnectionProperties::default(), Duration::from_secs(2))
            .await
            .expect_err("nothing listens");
        let text = error.to_string();
        assert!(text.contains("tried 2 nodes") && !text.contains("pw"), "{text}");
        assert!(!format!("{nodes:?}").contains("pw"));
    }
}
