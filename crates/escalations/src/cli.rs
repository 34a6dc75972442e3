//! Command-line interface: one binary, one subcommand per role or operator task.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Widget escalations: relay between a chatbot's widget and a contact centre's agents.
#[derive(Debug, Parser)]
#[command(name = "escalations", version, about)]
pub struct Cli {
    /// Settings file (TOML). Without it: defaults, then `ESCALATIONS__*` variables.
    #[arg(long, short, global = true, env = "ESCALATIONS_CONFIG")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP ingress (agent API, widget writes, health, metrics).
    Ingress,
    /// Run a worker: consume its share of the shards, apply, commit, fire timers.
    Worker,
    /// Run the ingress and a worker in one process (development, small sites).
    All,
    /// Create or upgrade the PostgreSQL schema (idempotent; safe to run concurrently).
    Migrate,
    /// Show which worker holds which shard, and which workers are alive.
    Shards,
    /// Declare or delete the RabbitMQ exchanges and queues.
    Topology {
        /// declare (default) or delete.
        #[command(subcommand)]
        action: Option<TopologyAction>,
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
}

/// `config` actions.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Load and validate; print every problem, or the effective settings.
    Check,
}
