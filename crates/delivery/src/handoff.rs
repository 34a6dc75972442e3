//! Deliveries a worker hands to the webhook dispatcher of its own process,
//! without a claim round (docs/protocol.md §4).
//!
//! Before its transaction, the worker reserves a slot of the endpoint for
//! each conversation it queues a webhook for ([`Handoff::reserve`]: only
//! while the endpoint's circuit is closed and it has room). The transaction
//! inserts each such conversation's new head already claimed by this
//! dispatcher, for a claim round's lease, on the database's clock
//! (`store::queue_webhook_deliveries`); a conversation whose earlier
//! deliveries are still pending keeps waiting for them. After the commit the
//! worker hands the claimed deliveries over ([`Handoff::hand`]) and the
//! dispatcher sends each at once, in its own task, as if it had claimed it.
//! What is not handed (the process died between commit and hand-off) is
//! claimed again when the lease expires: at-least-once, as for any claim.
//!
//! This saves, per webhook, the claim round's statement (a head rewritten)
//! and the wait for it: under load, the path a visitor message takes to its
//! `widgetMessage` is the worker's commit and one HTTP request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chrono::Utc;
use store::{ClaimedDelivery, Store};
use tokio::sync::Notify;
use tracing::warn;

use domain::report::error_chain;

use crate::targets::{ClaimGuard, Target};

/// A reserved slot of an endpoint: it counts against the endpoint's claims
/// until the delivery it was reserved for is sent, or until it is dropped.
#[derive(Debug)]
pub struct Slot(ClaimGuard);

/// What the worker and the dispatcher of one process share: the dispatcher's
/// wake-up and the hand-off of deliveries claimed at insert. Cheap to clone.
/// Until a dispatcher is attached (or after it stopped) nothing is reserved,
/// and deliveries take the claim rounds' path.
#[derive(Debug, Clone, Default)]
pub struct Handoff {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Starts a claim round.
    wake: Arc<Notify>,
    /// Something was handed over.
    handed: Notify,
    queue: Mutex<Queue>,
    attached: OnceLock<Attached>,
}

#[derive(Debug, Default)]
struct Queue {
    deliveries: Vec<(ClaimedDelivery, ClaimGuard)>,
    closed: bool,
}

#[derive(Debug)]
struct Attached {
    claimer: String,
    lease: Duration,
    targets: HashMap<String, Arc<Target>>,
    store: Store,
}

impl Handoff {
    /// A hand-off no dispatcher serves yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a claim round of the dispatcher now rather than at its next
    /// poll (deliveries were queued that were not handed over).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The dispatcher's wake-up, which [`Handoff::wake`] notifies.
    pub fn wakes(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    /// The serving dispatcher's claimer name and lease, while one is
    /// attached and running.
    pub fn claimer(&self) -> Option<(&str, Duration)> {
        let attached = self.inner.attached.get()?;
        if self.queue().closed {
            return None;
        }
        Some((attached.claimer.as_str(), attached.lease))
    }

    /// A slot of `bot`'s endpoint, if a delivery may be claimed for it now:
    /// a dispatcher is attached, the endpoint's circuit is closed and it has
    /// a free slot.
    pub fn reserve(&self, bot: &str) -> Option<Slot> {
        let attached = self.inner.attached.get()?;
        let (_, endpoint) = attached.targets.get(bot)?.endpoint.as_ref()?;
        if self.queue().closed {
            return None;
        }
        endpoint.try_start(Utc::now()).map(Slot)
    }

    /// Hands a delivery claimed at insert (by [`Handoff::claimer`]) to the
    /// dispatcher, with the slot reserved for it. After the dispatcher
    /// stopped, the claim is given back instead, for another dispatcher.
    pub fn hand(&self, delivery: ClaimedDelivery, slot: Slot) {
        let mut queue = self.queue();
        if !queue.closed {
            queue.deliveries.push((delivery, slot.0));
            drop(queue);
            self.inner.handed.notify_one();
            return;
        }
        drop(queue);
        drop(slot);
        if let Some(attached) = self.inner.attached.get() {
            release(attached.store.clone(), attached.claimer.clone(), vec![delivery.id]);
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves this hand-off from one dispatcher; `false` if another one
    /// already does (then that one is handed the deliveries).
    pub(crate) fn attach(
        &self,
        claimer: &str,
        lease: Duration,
        targets: &HashMap<String, Arc<Target>>,
        store: &Store,
    ) -> bool {
        let attached =
            Attached { claimer: claimer.to_owned(), lease, targets: targets.clone(), store: store.clone() };
        self.inner.attached.set(attached).is_ok()
    }

    /// Waits until something is handed over.
    pub(crate) async fn handed(&self) {
        self.inner.handed.notified().await;
    }

    /// What was handed over since the last call.
    pub(crate) fn take(&self) -> Vec<(ClaimedDelivery, ClaimGuard)> {
        std::mem::take(&mut self.queue().deliveries)
    }

    /// The dispatcher stops: nothing more is reserved or taken, and claims
    /// handed over but not yet taken are given back.
    pub(crate) fn close(&self) {
        let left = {
            let mut queue = self.queue();
            queue.closed = true;
            std::mem::take(&mut queue.deliveries)
        };
        if let (Some(attached), false) = (self.inner.attached.get(), left.is_empty()) {
            let ids = left.into_iter().map(|(delivery, _)| delivery.id).collect();
            release(attached.store.clone(), attached.claimer.clone(), ids);
        }
    }
}

/// Gives claims back (due now, unclaimed), in the background.
fn release(store: Store, claimer: String, ids: Vec<i64>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        if let Err(error) = store.release_claims(&ids, &claimer).await {
            warn!(
                error = %error_chain(&error),
                deliveries = ids.len(),
                "giving back claims handed over at shutdown failed; their leases will expire"
            );
        }
    });
}
