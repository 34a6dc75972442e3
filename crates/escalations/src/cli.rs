//! Command-line interface: one binary, one subcommand per role or operator task.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Exit codes, shown under every command's `--help` (docs/operations.md).
const EXIT_CODES: &str = "Exit codes:
  0  success
  1  refused or failed: not a dead letter, --yes missing, a role stopped on an error
  2  usage: bad arguments or filter values, invalid settings
  3  not found: no such dead letter, delivery or conversation
  4  infrastructure: PostgreSQL or RabbitMQ unreachable or failing";

/// Widget escalations: relay between a chatbot's widget and a contact centre's agents.
#[derive(Debug, Parser)]
#[command(name = "escalations", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Settings file (TOML). Without it, `ingress`, `worker` and `config` use the
    /// defaults, then `ESCALATIONS__*` variables; every other command the built-in
    /// development configuration (config/dev.toml), then those variables.
    #[arg(long, short, global = true, env = "ESCALATIONS_CONFIG")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP ingress (agent API, widget API, health) and its admin
    /// listener (`[admin]`, default port 9180: health, readiness, metrics, operations API).
    Ingress,
    /// Run a worker (consume its share of the shards, apply, commit, fire
    /// timers, send webhooks) and its admin listener (default port 9181).
    Worker,
    /// Run the ingress and a worker in one process (development, small sites).
    /// Without --config: the built-in development configuration (RabbitMQ and
    /// PostgreSQL on localhost, the demo at http://127.0.0.1:8080/demo, one `demo`
    /// bot) and the contact-centre simulator in the same process. One admin listener (default port 9182).
    All,
    /// Play a contact centre: receive a bot's webhooks (signatures verified), answer
    /// each escalation with queue updates, an agent, messages and a disconnect,
    /// through the agent API. Without --config: the development configuration.
    Simulate(SimulateArgs),
    /// Create or upgrade the PostgreSQL schema (idempotent; safe to run concurrently).
    Migrate,
    /// Show which worker holds which shard, and which workers are alive
    /// (a heartbeat within `worker.lease_ttl_ms`).
    Shards {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Declare or delete the RabbitMQ exchanges and queues.
    Topology {
        /// declare (default) or delete.
        #[command(subcommand)]
        action: Option<TopologyAction>,
    },
    /// Webhook dead letters: list, show, replay, skip, purge.
    Dlq {
        /// What to do with them.
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Events RabbitMQ dead-lettered (undecodable, refused by the store, or over
    /// the delivery limit): list, replay to their shard queues, purge.
    DeadEvents {
        /// What to do with them.
        #[command(subcommand)]
        action: DeadEventsAction,
    },
    /// Conversations: their timelines.
    Conversations {
        /// What to show.
        #[command(subcommand)]
        action: ConversationsAction,
    },
    /// Settings: check them and print the effective values (secrets hidden).
    Config {
        /// check (default).
        #[command(subcommand)]
        action: Option<ConfigAction>,
    },
}

/// `topology` actions.
#[derive(Debug, Subcommand)]
pub enum TopologyAction {
    /// Declare the exchange, shard queues and dead-letter queue (idempotent).
    Declare,
    /// Delete them all, with their messages. Needs --yes.
    Delete {
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
    /// Recreate queues declared by an earlier version (a broker-side delivery
    /// limit that dead-letters valid events) with the current arguments,
    /// keeping their messages in order. Stop every ingress and worker first.
    /// Resumable: run it again after an interruption. Needs --yes.
    Migrate {
        /// Confirm that no ingress or worker is running.
        #[arg(long)]
        yes: bool,
    },
}

/// `dead-events` actions.
#[derive(Debug, Subcommand)]
pub enum DeadEventsAction {
    /// List them without consuming them, oldest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Republish every decodable one to its conversation's shard queue (each
    /// acked only once the broker confirmed its copy). A dry run without --yes.
    Replay {
        /// Replay them.
        #[arg(long)]
        yes: bool,
    },
    /// Delete them all. Needs --yes.
    Purge {
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
}

/// `config` actions.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Load and validate; print every problem, or the effective settings as
    /// TOML with every secret shown as "***".
    Check,
}

/// Which dead letters a `dlq` command applies to. Filters combine with AND.
#[derive(Debug, Clone, Default, Args)]
pub struct DlqFilterArgs {
    /// Only this bot's.
    #[arg(long, value_name = "BOT")]
    pub bot: Option<String>,
    /// Only this conversation's (platformConversationId).
    #[arg(long, value_name = "CONVERSATION")]
    pub conversation: Option<String>,
    /// Only those given up for this reason: final_status, out_of_budget, no_endpoint,
    /// escalation_ended or undecodable.
    #[arg(long, value_name = "REASON")]
    pub reason: Option<String>,
    /// Dead-lettered at or after this time: RFC 3339 (2025-01-02T03:04:05Z) or a
    /// duration ago (30m, 2h, 7d, 1h30m).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Dead-lettered before this time (same formats as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

/// `dlq` actions.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// List dead letters, oldest first (a table, or JSON with --json).
    List {
        /// Which ones.
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter (or any delivery): its payload and every attempt.
    Show {
        /// The delivery id (first column of `dlq list`).
        id: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-queue dead letters with a fresh budget and the same webhook-id: one by id,
    /// or every match of the filters (a dry run unless --yes), each conversation's in
    /// sequence order.
    Replay {
        /// The delivery id; omit it to replay by filters.
        id: Option<i64>,
        /// Which ones, when no id is given.
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// Replay the matches (without it, only list what would be replayed).
        #[arg(long)]
        yes: bool,
        /// Print the result as JSON (what the admin API answers).
        #[arg(long)]
        json: bool,
    },
    /// Mark a dead letter skipped: kept in the history, never sent.
    Skip {
        /// The delivery id.
        id: i64,
    },
    /// Delete the matching dead letters and their attempts. Needs --yes.
    Purge {
        /// Which ones.
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
}

/// `conversations` actions.
#[derive(Debug, Subcommand)]
pub enum ConversationsAction {
    /// A conversation's timeline: events with verdicts, transitions, widget events,
    /// webhook deliveries and their attempts, in time order.
    Show {
        /// The bot id.
        bot: String,
        /// The platformConversationId.
        conversation: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `simulate` options. The agent connects after the queue updates, greets, answers
/// every visitor message ("You said: ..."), and disconnects when the visitor says
/// "bye" or when the session time is up.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Address to receive webhooks on. Default: the host and port of the bot's
    /// webhook_url (every interface if the host is a name).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Base URL of the ingress whose agent API it posts to. Default: http.bind
    /// (0.0.0.0 becomes 127.0.0.1).
    #[arg(long, value_name = "URL")]
    pub ingress: Option<String>,
    /// The bot whose contact centre it plays (its webhook secrets and first API key
    /// are used). Default: demo.bot, else the only bot with a webhook_url.
    #[arg(long)]
    pub bot: Option<String>,
    /// Queue updates before the agent connects (positions N down to 1).
    #[arg(long, default_value_t = 2)]
    pub queue_updates: u32,
    /// Milliseconds before each queue update, and before the agent connects.
    #[arg(long, default_value_t = 1500)]
    pub queue_interval_ms: u64,
    /// The agent's display name.
    #[arg(long, default_value = "Alex (simulated agent)")]
    pub agent: String,
    /// Milliseconds the agent takes to answer a visitor message.
    #[arg(long, default_value_t = 700)]
    pub reply_delay_ms: u64,
    /// Seconds after connecting when the agent leaves on its own; 0: only on "bye".
    #[arg(long, default_value_t = 600)]
    pub session_secs: u64,
}
