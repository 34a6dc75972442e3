//! `LISTEN` on a connection of its own: how a webhook dispatcher hears at once
//! of deliveries a worker in another process has just committed (the worker
//! calls [`Store::announce_outbox`] after the commit), instead of at its next
//! poll.
//!
//! The `NOTIFY` is a transaction of its own, not part of the worker's batch:
//! PostgreSQL serializes the commits of notifying transactions on one lock,
//! held through the commit's WAL flush, which capped the whole pipeline at
//! about 480 events/s on the test machine. Alone and with
//! `synchronous_commit` off (a lost notice costs one poll interval, nothing
//! else), it holds that lock for microseconds.

use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::deliveries::outbox_channel;
use crate::error::Result;
use crate::pool::Store;

/// Notifications of new deliveries, for as long as the connection lives.
#[derive(Debug)]
pub struct OutboxListener {
    notified: mpsc::Receiver<()>,
    // Dropping the client closes the connection.
    _client: tokio_postgres::Client,
}

impl OutboxListener {
    /// Waits for the next notification (several that arrived meanwhile count
    /// as one). `None`: the connection is gone; listen again.
    pub async fn notified(&mut self) -> Option<()> {
        self.notified.recv().await?;
        while self.notified.try_recv().is_ok() {}
        Some(())
    }
}

impl Store {
    /// Tells every dispatcher listening on this schema that deliveries were
    /// queued (after they were committed).
    ///
    /// # Errors
    ///
    /// No connection, or the statement failed; the dispatchers then find
    /// the deliveries at their next poll.
    pub async fn announce_outbox(&self) -> Result<()> {
        let channel = outbox_channel(self.schema());
        let client = self.client().await?;
        client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL synchronous_commit TO off; SELECT pg_notify('{channel}', ''); COMMIT"
            ))
            .await?;
        Ok(())
    }

    /// Opens a connection of its own and `LISTEN`s on the outbox channel of
    /// this schema.
    ///
    /// # Errors
    ///
    /// The connection or the `LISTEN` failed.
    pub async fn listen_outbox(&self) -> Result<OutboxListener> {
        let (client, mut connection) = self.connection_config().connect(NoTls).await?;
        let (tx, notified) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        // Full means one is already waiting: enough.
                        if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "outbox listener connection failed");
                        break;
                    }
                }
            }
        });
        let channel = outbox_channel(self.schema()).replace('"', "\"\"");
        client.batch_execute(&format!("LISTEN \"{channel}\"")).await?;
        Ok(OutboxListener { notified, _client: client })
    }
}
