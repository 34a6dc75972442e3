//! One chaos run: a deployment (2 ingress and 2 worker processes of the real
//! binary, a verifying webhook sink), conversations under load
//! (`support/workload.rs`), each widget stream followed live; then, once the
//! load stopped, everything due is waited for, the streams are read again
//! from the start, and [`Report`] counts what was lost, reordered,
//! duplicated or dead-lettered.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::deployment::{Deployment, Layout, Sink, wait_for};
use crate::workload::{Clients, Conversation, Diff, Follower, compare, replay, run_conversation};

/// Conversations per scenario (`CHAOS_CONVERSATIONS`, default 12).
pub fn conversations() -> usize {
    std::env::var("CHAOS_CONVERSATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
}

/// A deployment's layout for chaos: 2 ingress, 2 workers, 4 shards, the
/// sink as the bot's endpoint, visitor and stream limits out of the way
/// (the load is one tenant's), leases of `lease_ttl_ms`.
pub fn layout(sink: &Sink, lease_ttl_ms: u64) -> Layout {
    let env = [
        ("ESCALATIONS__WIDGET__VISITOR_RATE_PER_SEC", "100000"),
        ("ESCALATIONS__WIDGET__VISITOR_RATE_BURST", "100000"),
        ("ESCALATIONS__WIDGET__STREAM_OPENS_PER_SEC", "1000"),
        ("ESCALATIONS__WIDGET__STREAM_OPEN_BURST", "1000"),
    ];
    Layout {
        ingress: 2,
        workers: 2,
        shards: 4,
        webhook_url: Some(sink.url()),
        lease_ttl_ms,
        renew_every_ms: (lease_ttl_ms / 5).max(200),
        env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ..Layout::default()
    }
}

/// A scenario in progress.
pub struct Run {
    pub name: &'static str,
    pub deployment: Deployment,
    pub sink: Sink,
    pub clients: Clients,
    started: Instant,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<(Conversation, Follower)>>,
    /// What the fault did, for the report (`"6 SIGKILLs"`).
    pub faults: Vec<String>,
    /// Post every event once more after the load (see [`replay`]).
    pub replay: bool,
    /// Processes that exited by themselves and were started again.
    pub exits: usize,
}

impl Run {
    /// Starts the deployment and `conversations()` conversations stepping
    /// every `pace` (at most `max_steps` each); returns once every
    /// conversation is escalated and connected.
    pub async fn start(name: &'static str, sink: Sink, layout: Layout, pace: Duration, twice: bool) -> Run {
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_escalations"));
        let deployment = Deployment::start(binary, &layout).await;
        let mut clients = Clients::new(deployment.ingress.clone());
        clients.twice = twice;
        let stop = CancellationToken::new();
        let opened = Arc::new(AtomicUsize::new(0));
        let prefix = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let count = conversations();
        let tasks = (0..count)
            .map(|index| {
                let (clients, prefix, stop, opened) =
                    (clients.clone(), prefix.clone(), stop.clone(), opened.clone());
                tokio::spawn(run_conversation(clients, prefix, index, pace, 300, stop, opened))
            })
            .collect();
        let run = Run {
            name,
            deployment,
            sink,
            clients,
            started: Instant::now(),
            stop,
            tasks,
            faults: Vec::new(),
            replay: false,
            exits: 0,
        };
        wait_for(Duration::from_secs(60), "every conversation open", || async {
            opened.load(Ordering::SeqCst) == count
        })
        .await;
        run
    }

    /// Lets the load run for `duration`, restarting any process that
    /// exits by itself, as a supervisor would (counted in the report).
    pub async fn load_for(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200).min(deadline - Instant::now())).await;
            self.exits += self.deployment.restart_exited();
        }
    }

    /// Stops the load, waits for everything due, reads every stream again
    /// and counts.
    pub async fn finish(mut self) -> Report {
        self.stop.cancel();
        let mut conversations = Vec::new();
        for task in std::mem::take(&mut self.tasks) {
            while !task.is_finished() {
                self.load_for(Duration::from_millis(200)).await;
            }
            conversations.push(task.await.expect("a conversation's client panicked"));
        }
        if self.replay {
            for (index, (conversation, _)) in conversations.iter().enumerate() {
                replay(&self.clients, index, conversation).await;
            }
            self.faults.push("every event posted again after it was applied".into());
        }
        let widget_due: usize = conversations.iter().map(|(c, _)| c.widget.len()).sum();
        let webhooks_due: usize = conversations.iter().map(|(c, _)| c.webhooks.len()).sum();
        // Everything due arrives, or this many seconds pass (then counted lost).
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            let live: usize = conversations.iter().map(|(_, f)| f.len()).sum();
            if live >= widget_due && distinct_webhooks(&self.sink) >= webhooks_due {
                break;
            }
            self.load_for(Duration::from_millis(200)).await;
        }
        // Anything applied twice would show now.
        self.load_for(Duration::from_secs(2)).await;

        let mut report = Report { name: self.name, conversations: conversations.len(), ..Report::default() };
        report.faults = self.faults.clone();
        report.exits = self.exits;
        report.accepted = self.clients.tally.accepted.load(Ordering::Relaxed);
        report.unavailable = self.clients.tally.unavailable.load(Ordering::Relaxed);
        report.connection_errors = self.clients.tally.connection_errors.load(Ordering::Relaxed);
        report.other_answers = self.clients.tally.other();
        report.widget_due = widget_due;
        report.webhooks_due = webhooks_due;
        let arrivals = self.sink.arrivals();
        report.unsigned = arrivals.iter().filter(|a| !a.signed).count();
        for (conversation, follower) in &conversations {
            let live = follower.stop();
            report.stream_reconnects += follower.reconnects.load(Ordering::Relaxed);
            report.widget_live += live.len();
            report.live_sequence_gaps +=
                live.iter().enumerate().filter(|(i, e)| e.sequence != *i as u64 + 1).count();
            for event in &live {
                if report.live_by_ingress.len() <= event.source {
                    report.live_by_ingress.resize(event.source + 1, 0);
                }
                report.live_by_ingress[event.source] += 1;
            }
            let first = live.first().map(|e| e.source);
            if live.iter().any(|e| Some(e.source) != first) {
                report.streams_switched += 1;
            }
            report.widget_live_diff += compare(&conversation.widget, &labels(&live));
            let again = read_stream(&self.deployment.ingress, conversation, Duration::from_secs(20)).await;
            report.widget_final += again.len();
            report.sequence_gaps +=
                again.iter().enumerate().filter(|(i, e)| e.sequence != *i as u64 + 1).count();
            report.widget_final_diff += compare(&conversation.widget, &labels(&again));
            // Webhooks: a redelivery (same webhook-id) is at-least-once, not a
            // second application; what counts is one id per event, in order.
            let mut ids = std::collections::HashSet::new();
            let mut sequences = Vec::new();
            let mut hooks = Vec::new();
            for arrival in arrivals.iter().filter(|a| a.conversation == conversation.id) {
                if !ids.insert(arrival.webhook_id.clone()) {
                    report.webhook_redeliveries += 1;
                    continue;
                }
                sequences.push(arrival.sequence);
                hooks.push(match &arrival.text {
                    Some(text) => format!("{}:{text}", arrival.event_type),
                    None => arrival.event_type.clone(),
                });
            }
            report.webhooks_arrived += hooks.len();
            report.webhook_sequence_breaks += sequences.windows(2).filter(|w| w[1] != w[0] + 1).count();
            report.webhook_diff += compare(&conversation.webhooks, &hooks);
        }
        report.dead_events = dead_queue_depth(&self.deployment).await;
        report.dead_webhooks = self
            .deployment
            .store
            .list_dead_letters(&store::DeadLetterFilter::default(), 10_000)
            .await
            .map_or(usize::MAX, |rows| rows.len());
        report.seconds = self.started.elapsed().as_secs_f64();
        println!("{report}");
        if !report.clean() {
            eprintln!("{}", self.deployment.logs());
        }
        self.deployment.stop().await;
        report
    }
}

fn labels(events: &[crate::workload::WidgetEvent]) -> Vec<String> {
    events.iter().map(|e| e.label.clone()).collect()
}

fn distinct_webhooks(sink: &Sink) -> usize {
    sink.arrivals().iter().map(|a| a.webhook_id.clone()).collect::<std::collections::HashSet<_>>().len()
}

/// A conversation's stream read again from the start: everything it
/// carries until `within` passes or a second after what is due arrived.
async fn read_stream(
    ingress: &[String],
    conversation: &Conversation,
    within: Duration,
) -> Vec<crate::workload::WidgetEvent> {
    let follower = Follower::start(ingress.to_vec(), conversation.id.clone(), conversation.token.clone());
    let deadline = Instant::now() + within;
    while follower.len() < conversation.widget.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    follower.stop()
}

/// Messages in the deployment's `{prefix}.dead` queue (a passive declare,
/// which neither consumes nor counts a delivery).
async fn dead_queue_depth(deployment: &Deployment) -> usize {
    let topology = broker::Topology::new(deployment.prefix.clone(), 1, 1);
    // Any node of a cluster will do.
    let nodes = broker::Nodes::new(&deployment.amqp_url());
    let Ok((connection, _node)) =
        nodes.connect(lapin::ConnectionProperties::default(), Duration::from_secs(10)).await
    else {
        return usize::MAX;
    };
    let Ok(channel) = connection.create_channel().await else { return usize::MAX };
    let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let depth = channel
        .queue_declare(topology.dead_letter_queue().as_str().into(), options, FieldTable::default())
        .await
        .map_or(usize::MAX, |queue| queue.message_count() as usize);
    let _ = connection.close(200, "OK".into()).await;
    depth
}

/// The counts of one scenario.
#[derive(Debug, Default)]
pub struct Report {
    pub name: &'static str,
    pub conversations: usize,
    pub faults: Vec<String>,
    /// Processes that exited by themselves (restarted by the harness).
    pub exits: usize,
    pub accepted: usize,
    pub unavailable: usize,
    pub connection_errors: usize,
    pub other_answers: Vec<String>,
    pub widget_due: usize,
    pub widget_live: usize,
    pub widget_final: usize,
    pub stream_reconnects: usize,
    /// Live events carried by each ingress (by index).
    pub live_by_ingress: Vec<usize>,
    /// Conversations whose live stream carried events from more than one
    /// ingress (it broke on one and resumed on another).
    pub streams_switched: usize,
    /// Live events whose sequence is not the next one (a gap or a repeat).
    pub live_sequence_gaps: usize,
    pub widget_live_diff: Diff,
    pub widget_final_diff: Diff,
    pub sequence_gaps: usize,
    pub webhooks_due: usize,
    pub webhooks_arrived: usize,
    pub webhook_redeliveries: usize,
    pub webhook_sequence_breaks: usize,
    pub webhook_diff: Diff,
    pub unsigned: usize,
    pub dead_events: usize,
    pub dead_webhooks: usize,
    pub seconds: f64,
}

impl Report {
    /// Nothing lost, reordered, applied twice, unexpected or dead-lettered,
    /// and no answer but 200 (or 503/429, retried) to a valid request.
    pub fn clean(&self) -> bool {
        let none = Diff::default();
        self.other_answers.is_empty()
            && self.widget_live_diff == none
            && self.widget_final_diff == none
            && self.webhook_diff == none
            && self.sequence_gaps == 0
            && self.live_sequence_gaps == 0
            && self.webhook_sequence_breaks == 0
            && self.unsigned == 0
            && self.dead_events == 0
            && self.dead_webhooks == 0
    }

    pub fn assert_clean(&self) {
        assert!(self.clean(), "chaos[{}] is not clean: {self:#?}", self.name);
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = |d: &Diff| (d.lost, d.reordered, d.duplicated, d.unexpected);
        writeln!(
            f,
            "chaos[{}] {:.1} s, {} conversations, faults: {}; {} processes exited by themselves (restarted)",
            self.name,
            self.seconds,
            self.conversations,
            self.faults.join("; "),
            self.exits
        )?;
        writeln!(
            f,
            "  requests: {} accepted (200), {} answered 503, {} connection errors, {} other answers",
            self.accepted,
            self.unavailable,
            self.connection_errors,
            self.other_answers.len()
        )?;
        writeln!(
            f,
            "  widget events: {} due; live streams {} (by ingress {:?}; {} reconnects, {} streams moved to another ingress), (lost, reordered, duplicated, unexpected) = {:?}, {} sequence gaps; read again {} {:?}, {} sequence gaps",
            self.widget_due,
            self.widget_live,
            self.live_by_ingress,
            self.stream_reconnects,
            self.streams_switched,
            total(&self.widget_live_diff),
            self.live_sequence_gaps,
            self.widget_final,
            total(&self.widget_final_diff),
            self.sequence_gaps
        )?;
        writeln!(
            f,
            "  webhooks: {} due, {} arrived (+{} redelivered, same id), {:?}, {} sequence breaks, {} unsigned",
            self.webhooks_due,
            self.webhooks_arrived,
            self.webhook_redeliveries,
            total(&self.webhook_diff),
            self.webhook_sequence_breaks,
            self.unsigned
        )?;
        write!(f, "  dead-lettered: {} events, {} webhooks", self.dead_events, self.dead_webhooks)
    }
}
