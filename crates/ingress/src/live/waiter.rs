//! [`VerdictWaiter`]: one request's wait for its event's verdict (see
//! [`super::LiveHub::expect_verdict`]).

use std::sync::PoisonError;
use std::time::Duration;

use domain::{Phase, Verdict};
use tokio::sync::oneshot;

use super::{LiveHub, WaitKey};

/// A wait for one event's verdict; see [`LiveHub::expect_verdict`].
#[derive(Debug)]
pub struct VerdictWaiter {
    pub(super) hub: LiveHub,
    pub(super) key: WaitKey,
    pub(super) number: u64,
    pub(super) queue: Option<String>,
    pub(super) receiver: oneshot::Receiver<(Verdict, Phase)>,
}

impl VerdictWaiter {
    /// The queue to name as the command's `reply_to`; `None` while the hub
    /// has never connected.
    pub fn queue(&self) -> Option<&str> {
        self.queue.as_deref()
    }

    /// The verdict and the phase after it, if the worker's reply comes within
    /// `wait` (it does not when this instance reconnected meanwhile: the
    /// caller then reads the event log).
    pub async fn wait(mut self, wait: Duration) -> Option<(Verdict, Phase)> {
        tokio::time::timeout(wait, &mut self.receiver).await.ok()?.ok()
    }
}

impl Drop for VerdictWaiter {
    fn drop(&mut self) {
        let mut waiters = self.hub.0.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = waiters.get_mut(&self.key) {
            list.retain(|(number, _)| *number != self.number);
            if list.is_empty() {
                waiters.remove(&self.key);
            }
        }
    }
}
