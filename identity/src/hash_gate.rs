//! Admission to argon2 checks: at most `limits.hash_concurrency` run at once, at most
//! `limits.hash_queue` more wait for one, and the rest are refused at once (503, Retry-After).
//!
//! Why: argon2id is slow and memory-hard on purpose (19 MiB per check at the default cost), and
//! anyone can make the issuer run one: every wrong client secret, even for a client id that does
//! not exist (that one is checked against a dummy hash, so that it takes as long). Unbounded,
//! 200 concurrent wrong-secret clients took the process from 70 MB to 5.4 GB on the blocking
//! pool. Bounded here, checks cost at most `hash_concurrency` work areas, allocated once and
//! reused, so the bound holds whatever the allocator keeps.
//!
//! A check that has not started is abandoned with its request: the place in the queue is
//! awaited in the request's future, and the listener drops that future when the client goes
//! (`Handler::abandon_when_client_leaves`), which gives the place back. A check that has started
//! runs to its end on the blocking pool (argon2 cannot be interrupted) and keeps its permit
//! until then, so the bound counts the memory really in use.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics;
use crate::password::{self, WorkArea};

/// The gate; one per issuer.
pub struct HashGate {
    permits: Arc<Semaphore>,
    queue: usize,
    waiting: Arc<AtomicUsize>,
    areas: Arc<Mutex<Vec<WorkArea>>>,
}

/// Every check is running and the queue is full: answer 503 and come back later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl Busy {
    /// A queue of a few checks drains in well under a second; a second is the smallest
    /// `Retry-After` there is.
    pub const RETRY_AFTER: Duration = Duration::from_secs(1);
}

/// Permission to run one check now.
pub struct HashPermit {
    permit: OwnedSemaphorePermit,
    areas: Arc<Mutex<Vec<WorkArea>>>,
}

impl HashGate {
    /// `concurrency` checks at once (at least one), `queue` more waiting.
    pub fn new(concurrency: usize, queue: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            queue,
            waiting: Arc::new(AtomicUsize::new(0)),
            areas: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Waits for a check to be allowed to run, or refuses at once when the queue is full.
    /// Dropping the future gives its place in the queue back. Permits go in arrival order.
    pub async fn admit(&self) -> Result<HashPermit, Busy> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let Some(_place) = QueuePlace::take(&self.waiting, self.queue) else {
                    metrics::HASH_QUEUE_FULL.inc();
                    return Err(Busy);
                };
                // The semaphore is never closed, so this waits for a permit.
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Busy)?
            }
        };
        Ok(HashPermit {
            permit,
            areas: self.areas.clone(),
        })
    }
}

impl HashPermit {
    /// Checks `secret` against `phc` on the blocking pool. `None` is a user or client that does
    /// not exist: the secret is checked against the dummy hash, to take as long, and refused.
    /// The permit goes with the check: dropping this future does not end a check that has
    /// started, nor free its permit before it ends.
    pub async fn verify(self, secret: String, phc: Option<String>) -> bool {
        metrics::HASH_CHECKS.inc();
        let HashPermit { permit, areas } = self;
        let check = move || {
            let mut area = areas
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .unwrap_or_default();
            let ok = match phc.as_deref() {
                Some(phc) => password::verify(&secret, phc, &mut area),
                None => {
                    let _ = password::verify(&secret, password::dummy_hash(), &mut area);
                    false
                }
            };
            // At most one area per permit: the area goes back before the permit is released.
            areas.lock().unwrap_or_else(|p| p.into_inner()).push(area);
            drop(permit);
            ok
        };
        tokio::task::spawn_blocking(check).await.unwrap_or(false)
    }
}

/// A place in the queue, given back when dropped (the request was answered or abandoned).
struct QueuePlace<'a>(&'a AtomicUsize);

impl<'a> QueuePlace<'a> {
    fn take(waiting: &'a AtomicUsize, limit: usize) -> Option<Self> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(waiting))
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beyond_the_running_checks_and_the_queue_requests_are_refused() {
        let gate = HashGate::new(1, 2);
        let running = gate.admit().await.unwrap();
        // Two may wait; a third is refused at once.
        let mut first = Box::pin(gate.admit());
        let mut second = Box::pin(gate.admit());
        assert!(futures_poll(&mut first).is_none());
        assert!(futures_poll(&mut second).is_none());
        assert_eq!(gate.admit().await.err(), Some(Busy));
        // An abandoned waiter gives its place back.
        drop(second);
        let mut third = Box::pin(gate.admit());
        assert!(futures_poll(&mut third).is_none());
        // The running check ends: the first waiter runs next, in arrival order.
        drop(running);
        let _runs = first.await.expect("the first waiter runs");
        assert!(futures_poll(&mut third).is_none());
    }

    #[tokio::test]
    async fn checks_use_the_dummy_hash_for_unknown_accounts_and_reuse_their_memory() {
        let gate = HashGate::new(1, 0);
        let phc = password::hash("right").unwrap();
        let permit = gate.admit().await.unwrap();
        assert!(permit.verify("right".into(), Some(phc.clone())).await);
        let permit = gate.admit().await.unwrap();
        assert!(!permit.verify("wrong".into(), Some(phc)).await);
        let permit = gate.admit().await.unwrap();
        // Even the dummy hash's own password does not make an unknown account.
        assert!(!permit.verify("dummy-password".into(), None).await);
        assert_eq!(gate.areas.lock().unwrap().len(), 1, "one area, reused");
    }

    /// Polls `f` once: `Some` if it finished.
    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
