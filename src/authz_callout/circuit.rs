//! A circuit breaker for the remote policy service: after `failures` consecutive failures the
//! circuit opens and calls fail at once for `open_for`; then one trial call is let through, and
//! its outcome closes the circuit or opens it again. A service that is down then costs a request
//! nothing, and the service is not hammered while it recovers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

struct Inner {
    state: State,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
}

pub struct Circuit {
    failures: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

impl Circuit {
    pub fn new(failures: u32, open_for: Duration) -> Circuit {
        metrics::AUTHZ_CIRCUIT_STATE.set(0);
        Circuit {
            failures: failures.max(1),
            open_for,
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive_failures: 0,
                opened_at: None,
            }),
        }
    }

    /// Whether a call may go out now. While open, none may until `open_for` has passed; then
    /// exactly one (the trial) until it reports back.
    pub fn allow(&self) -> bool {
        let mut inner = self.lock();
        match inner.state {
            State::Closed => true,
            State::HalfOpen => false,
            State::Open => {
                if inner
                    .opened_at
                    .is_some_and(|at| at.elapsed() >= self.open_for)
                {
                    self.set(&mut inner, State::HalfOpen);
                    true
                } else {
                    false
                }
            }
        }
    }

    pub fn succeeded(&self) {
        let mut inner = self.lock();
        inner.consecutive_failures = 0;
        if inner.state != State::Closed {
            tracing::info!("policy service answers again: circuit closed");
            self.set(&mut inner, State::Closed);
        }
    }

    pub fn failed(&self) {
        let mut inner = self.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let trial_failed = inner.state == State::HalfOpen;
        if trial_failed
            || (inner.state == State::Closed && inner.consecutive_failures >= self.failures)
        {
            if inner.state == State::Closed {
                tracing::warn!(
                    failures = inner.consecutive_failures,
                    open_for = ?self.open_for,
                    "policy service failing: circuit open, calls fail at once"
                );
            }
            inner.opened_at = Some(Instant::now());
            self.set(&mut inner, State::Open);
        }
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    fn set(&self, inner: &mut Inner, state: State) {
        inner.state = state;
        metrics::AUTHZ_CIRCUIT_STATE.set(state.gauge());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_a_good_trial() {
        let c = Circuit::new(3, Duration::from_millis(30));
        c.failed();
        c.failed();
        c.succeeded(); // not consecutive
        c.failed();
        c.failed();
        assert!(c.allow());
        c.failed();
        assert_eq!(c.state(), State::Open);
        assert!(!c.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.allow(), "one trial after open_for");
        assert!(!c.allow(), "only one trial at a time");
        c.failed();
        assert_eq!(c.state(), State::Open, "a failed trial opens it again");
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.allow());
        c.succeeded();
        assert_eq!(c.state(), State::Closed);
        assert!(c.allow());
    }
}
