//! The evaluator as a running service uses it: the current policy set (hot-swapped on reload),
//! metrics and the decision log around every decision. The HTTP service is a thin layer over
//! this, and the gateway can hold one to decide in-process with the same policies.
//!
//! A reload (file watcher, SIGHUP, `POST /reload`) goes through the kit's [`ReloadGate`]: attempts
//! run one at a time, so a slow attempt that read older files cannot store its set over the
//! newer one another attempt stored meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use gatehouse_service::{
    LocatedErrors, ReloadGate, ReloadOutcome, Reloadable, Watched, WatchedPath,
};
use serde_json::{Map, Value};

use crate::decision::{Decision, Options};
use crate::decision_log::{DecisionLog, Input};
use crate::metrics;
use crate::policy::{self, PolicySet};
use crate::request::{BatchRequest, Request};

pub struct Authorizer {
    policies: ArcSwap<PolicySet>,
    directory: PathBuf,
    log: Option<DecisionLog>,
    gate: ReloadGate,
}

impl Authorizer {
    /// Loads the policies under `directory`; a set that does not load is an error at start.
    pub fn new(directory: &Path, log: Option<DecisionLog>) -> Result<Self, LocatedErrors> {
        metrics::init();
        let set = policy::load(directory)?;
        metrics::POLICIES.set(set.policies.len() as i64);
        tracing::info!(
            policies = set.policies.len(),
            set = set.version(),
            dir = %directory.display(),
            "policies loaded"
        );
        Ok(Self {
            policies: ArcSwap::from_pointee(set),
            directory: directory.to_path_buf(),
            log,
            gate: ReloadGate::new(&metrics::RELOADS, "policies"),
        })
    }

    pub fn policies(&self) -> Arc<PolicySet> {
        self.policies.load_full()
    }

    /// One decision, counted and logged.
    pub fn authorize(&self, request: &Request) -> Decision {
        self.decide(request, Options::default())
    }

    pub fn decide(&self, request: &Request, options: Options) -> Decision {
        let set = self.policies.load();
        let started = SystemTime::now();
        let decision = set.evaluate(request, options);
        let (finished, elapsed) = since(started);
        let input = Input {
            principal: &request.principal,
            resource: &request.resource,
            action: &request.action,
            context: &request.context,
        };
        self.record(&set, &decision, (finished, elapsed), input);
        decision
    }

    /// Many checks for one principal: the principal and context are converted once.
    pub fn decide_batch(&self, batch: &BatchRequest, options: Options) -> Vec<Decision> {
        let set = self.policies.load();
        let started = SystemTime::now();
        let decisions = set.evaluate_batch(batch, options);
        let (finished, elapsed) = since(started);
        // One evaluation served every check: each is charged its share.
        let elapsed = elapsed / decisions.len().max(1) as u32;
        for (decision, check) in decisions.iter().zip(&batch.checks) {
            let input = Input {
                principal: &batch.principal,
                resource: &check.resource,
                action: &check.action,
                context: &batch.context,
            };
            self.record(&set, decision, (finished, elapsed), input);
        }
        decisions
    }

    /// Counts `decision`, made at `finished` in `elapsed`, and logs it.
    fn record(
        &self,
        set: &PolicySet,
        decision: &Decision,
        (finished, elapsed): (SystemTime, Duration),
        input: Input<'_>,
    ) {
        metrics::EVALUATION.observe(elapsed.as_secs_f64());
        metrics::count_decision(decision.allow, decision.policy_id.as_ref());
        if decision.condition_error {
            metrics::CONDITION_ERRORS.inc();
        }
        if let Some(log) = &self.log {
            log.record(
                decision,
                input,
                set.version(),
                finished,
                elapsed.as_secs_f64() * 1e6,
            );
        }
    }

    /// Reads the policy directory and swaps the new set in; the gate around it counts and logs.
    fn load_and_swap(&self) -> Result<ReloadOutcome, LocatedErrors> {
        let set = policy::load(&self.directory)?;
        if set.hash == self.policies.load().hash {
            return Ok(ReloadOutcome::Unchanged);
        }
        tracing::info!(
            policies = set.policies.len(),
            set = set.version(),
            "policies reloaded"
        );
        metrics::POLICIES.set(set.policies.len() as i64);
        self.policies.store(Arc::new(set));
        Ok(ReloadOutcome::Applied)
    }
}

/// The time now and how long since `started`: two reads of one clock serve the latency metric
/// and the decision-log line's time (a third read, of the monotonic clock for the latency, was
/// about 1% of a logged decision in a profile). Wall-clock time can step back (NTP, an
/// operator): that decision's latency is then recorded as zero rather than as a wrap.
fn since(started: SystemTime) -> (SystemTime, Duration) {
    let now = SystemTime::now();
    (now, now.duration_since(started).unwrap_or_default())
}

impl Reloadable for Authorizer {
    /// Reloads the policy directory. On error the running set stays.
    fn reload(&self) -> Result<ReloadOutcome, LocatedErrors> {
        self.gate.run(|| self.load_and_swap())
    }

    fn reload_status(&self) -> Map<String, Value> {
        Map::from_iter([("version".into(), self.policies().version().into())])
    }
}

impl Watched for Authorizer {
    fn watched_paths(&self) -> Vec<WatchedPath> {
        vec![WatchedPath::tree(&self.directory)]
    }
}
