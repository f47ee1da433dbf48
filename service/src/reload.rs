//! Reload bookkeeping shared by the three services: one outcome type, one trait the admin
//! listener and the file watcher call, and one gate that serialises attempts, counts them and
//! logs every rejected problem.

use std::sync::Mutex;

use prometheus::IntCounterVec;
use serde_json::{Map, Value};

use crate::located::LocatedErrors;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new configuration is serving.
    Applied,
    /// The files say what the running configuration already says.
    Unchanged,
}

impl ReloadOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadOutcome::Applied => "applied",
            ReloadOutcome::Unchanged => "unchanged",
        }
    }
}

/// Something whose configuration can be read again while it serves. A failed reload keeps the
/// running configuration.
pub trait Reloadable: Send + Sync + 'static {
    /// Reads, checks and swaps in the configuration. Blocking: call it off the async workers.
    fn reload(&self) -> Result<ReloadOutcome, LocatedErrors>;

    /// Fields the `POST /reload` answer carries beside `result`, such as the running version.
    fn reload_status(&self) -> Map<String, Value> {
        Map::new()
    }
}

/// Serialises reloads (the watcher, SIGHUP and `POST /reload` may race, and a slower attempt
/// must not store an older configuration after a newer one), counts them by result and logs
/// why one was rejected.
pub struct ReloadGate {
    lock: Mutex<()>,
    counter: IntCounterVec,
    /// What is reloaded, for the log line: "config", "policies".
    what: &'static str,
}

impl ReloadGate {
    /// `counter` has one label, `result` (`success`, `failure`); both series exist from the start.
    pub fn new(counter: &IntCounterVec, what: &'static str) -> Self {
        for result in ["success", "failure"] {
            counter.with_label_values(&[result]);
        }
        Self {
            lock: Mutex::new(()),
            counter: counter.clone(),
            what,
        }
    }

    /// Runs one attempt with no other attempt in flight.
    pub fn run(
        &self,
        attempt: impl FnOnce() -> Result<ReloadOutcome, LocatedErrors>,
    ) -> Result<ReloadOutcome, LocatedErrors> {
        let _serialised = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = attempt();
        match &result {
            Ok(ReloadOutcome::Applied) => self.counter.with_label_values(&["success"]).inc(),
            Ok(ReloadOutcome::Unchanged) => {}
            Err(errors) => {
                self.counter.with_label_values(&["failure"]).inc();
                for e in &errors.0 {
                    tracing::error!(problem = %e, what = self.what, "reload rejected; the running {} stays", self.what);
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::located::LocatedError;
    use prometheus::Opts;
    use std::sync::Arc;

    #[test]
    fn attempts_never_overlap_and_are_counted() {
        let counter = IntCounterVec::new(Opts::new("t_reloads", "t"), &["result"])
            .unwrap_or_else(|e| panic!("{e}"));
        let gate = Arc::new(ReloadGate::new(&counter, "config"));
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (gate, inside) = (gate.clone(), inside.clone());
                std::thread::spawn(move || {
                    gate.run(|| {
                        let was = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        assert_eq!(was, 0, "two reloads ran at once");
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        if i % 2 == 0 {
                            Ok(ReloadOutcome::Applied)
                        } else {
                            Err(LocatedError::whole_file("x.yaml", "bad").into())
                        }
                    })
                })
            })
            .collect();
        for t in threads {
            let _ = t
                .join()
                .unwrap_or_else(|_| panic!("a reload thread panicked"));
        }
        assert_eq!(counter.with_label_values(&["success"]).get(), 4);
        assert_eq!(counter.with_label_values(&["failure"]).get(), 4);
    }
}
