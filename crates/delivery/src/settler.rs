//! Group commit of settlements: every finished attempt hands its settlement
//! here, and one task writes whatever has gathered in one transaction
//! (`Store::settle_deliveries`), so a dispatcher sending thousands of webhooks
//! a second commits tens of transactions, not thousands. Each caller waits for
//! its own answer: whether its claim still held.

use std::sync::Arc;
use std::time::Duration;

use store::{SettleJob, Store};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::warn;

use domain::report::error_chain;

/// Settlements written in one transaction at most.
const MAX_BATCH: usize = 512;
/// Settlements waiting at most; a full queue makes attempts wait (backpressure).
const QUEUE: usize = 4096;
/// Tries of one batch on transient database errors.
const TRIES: u32 = 4;

struct Request {
    job: SettleJob,
    reply: oneshot::Sender<bool>,
}

/// The handle attempts settle through; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Settler {
    queue: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("id", &self.job.id).finish_non_exhaustive()
    }
}

impl Settler {
    /// Starts the settling task; it ends when every handle is dropped and the
    /// queue is drained. `settled` is notified after each committed batch
    /// (heads moved on: more may be due).
    pub(crate) fn spawn(
        store: Store,
        claimer: String,
        settled: Arc<Notify>,
    ) -> (Settler, tokio::task::JoinHandle<()>) {
        let (queue, requests) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(store, claimer, requests, settled));
        (Settler { queue }, task)
    }

    /// Settles `job`; returns whether the row was updated. `false` when the
    /// claim was lost or the database kept failing: the lease then runs out
    /// and the delivery is claimed again (at-least-once).
    pub(crate) async fn settle(&self, job: SettleJob) -> bool {
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Request { job, reply }).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

async fn run(store: Store, claimer: String, mut requests: mpsc::Receiver<Request>, settled: Arc<Notify>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let jobs: Vec<SettleJob> = batch.iter().map(|request| request.job.clone()).collect();
        let started = std::time::Instant::now();
        let held = settle_with_retries(&store, &claimer, &jobs).await;
        tracing::debug!(rows = jobs.len(), ms = started.elapsed().as_secs_f64() * 1e3, "settled a batch");
        metrics::histogram!(crate::metrics::SETTLE_BATCH_SIZE).record(jobs.len() as f64);
        for (request, held) in batch.drain(..).zip(held) {
            if !held {
                warn!(
                    delivery_id = request.job.id,
                    "claim lost before settling (lease expired or row purged)"
                );
            }
            // The attempt may have been cancelled meanwhile; nothing to tell.
            let _ = request.reply.send(held);
        }
        settled.notify_one();
    }
}

async fn settle_with_retries(store: &Store, claimer: &str, jobs: &[SettleJob]) -> Vec<bool> {
    let mut delay = Duration::from_millis(100);
    for round in 1..=TRIES {
        match store.settle_deliveries(claimer, jobs).await {
            Ok(held) => return held,
            Err(error) if error.is_transient() && round < TRIES => {
                warn!(error = %error_chain(&error), round, rows = jobs.len(), "settling deliveries; retrying");
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            Err(error) if jobs.len() > 1 && !error.is_transient() => {
                // One bad settlement must not fail the others: each alone.
                warn!(error = %error_chain(&error), rows = jobs.len(), "settling a batch failed; one by one");
                let mut held = Vec::with_capacity(jobs.len());
                for job in jobs {
                    held.push(
                        Box::pin(settle_with_retries(store, claimer, std::slice::from_ref(job))).await[0],
                    );
                }
                return held;
            }
            Err(error) => {
                warn!(
                    error = %error_chain(&error),
                    rows = jobs.len(),
                    "settling deliveries failed; their leases will expire"
                );
                break;
            }
        }
    }
    vec![false; jobs.len()]
}
