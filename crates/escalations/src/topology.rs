//! `escalations topology`: declare or delete the RabbitMQ side (docs/protocol.md §8).

use anyhow::{Context, bail};
use broker::Topology;
use lapin::ConnectionProperties;
use settings::Settings;

use crate::cli::TopologyAction;

/// Declares (idempotent) or deletes the exchanges and queues of `settings.broker`.
pub async fn run(settings: &Settings, action: Option<TopologyAction>) -> anyhow::Result<()> {
    let b = &settings.broker;
    let topology =
        Topology::new(b.prefix.clone(), b.shards, b.delivery_limit).with_quorum_size(b.quorum_size);
    let (connection, _node) = broker::Nodes::new(&b.url)
        .connect(ConnectionProperties::default(), std::time::Duration::from_secs(10))
        .await
        .with_context(|| format!("connecting to RabbitMQ at {}", settings::redact_urls(&b.url)))?;
    let channel = connection.create_channel().await.context("opening a channel")?;
    match action.unwrap_or(TopologyAction::Declare) {
        TopologyAction::Declare => {
            topology.declare(&channel).await.context("declaring the topology")?;
            println!(
                "declared exchange {}, {} shard queues {}..{}, dead-letter queue {}",
                topology.exchange(),
                b.shards,
                topology.shard_queue(0),
                topology.shard_queue(b.shards - 1),
                topology.dead_letter_queue()
            );
        }
        TopologyAction::Migrate { yes } => {
            if !yes {
                bail!(
                    "this recreates every queue of prefix {:?} declared by an earlier version; stop \
                     every ingress and worker, then pass --yes",
                    b.prefix
                );
            }
            let report =
                broker::migrate::migrate(&topology, &connection).await.context("migrating the topology")?;
            for queue in &report {
                let what = if queue.recreated { "recreated" } else { "already current" };
                println!("{:<40} {what}, {} message(s) moved back in order", queue.queue, queue.messages);
            }
            let recreated = report.iter().filter(|queue| queue.recreated).count();
            println!("{recreated} of {} queue(s) recreated; the topology is current", report.len());
        }
        TopologyAction::Delete { yes } => {
            if !yes {
                bail!("this deletes every queue of prefix {:?} with its messages; pass --yes", b.prefix);
            }
            topology.delete(&channel).await.context("deleting the topology")?;
            println!("deleted the topology of prefix {:?}", b.prefix);
        }
    }
    connection.close(200, "bye".into()).await.context("closing the connection")?;
    Ok(())
}
