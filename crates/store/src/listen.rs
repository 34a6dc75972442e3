//! `LISTEN` on a connection of its own: how a webhook dispatcher hears at once
//! of deliveries a worker in another process has just committed (the worker's
//! insert sends `NOTIFY` at commit, `deliveries.rs`), instead of at its next
//! poll.

use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::deliveries::outbox_channel;
use crate::error::Result;
use crate::store::Store;

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
