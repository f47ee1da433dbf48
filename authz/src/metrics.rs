//! Prometheus metrics, registered in the default registry (the admin listener's `/metrics`, or the
//! gateway's when authz runs inside it).

use std::cell::RefCell;
use std::sync::{Arc, LazyLock};

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge,
    Histogram, IntCounter, IntCounterVec, IntGauge,
};

fn registered<T>(metric: prometheus::Result<T>) -> T {
    metric.unwrap_or_else(|e| panic!("metric registration: {e}"))
}

pub static DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(register_int_counter_vec!(
        "gatehouse_authz_decisions_total",
        "Authorization decisions, by result (allow|deny) and deciding policy (\"none\" when no rule matched).",
        &["result", "policy"]
    ))
});

/// Counts one decision in [`DECISIONS`]: `allow` or `deny`, by the deciding policy (`None`: no
/// rule matched).
///
/// `with_label_values` hashes the labels and takes the vector's lock at every call; the series
/// this thread used last are kept instead, keyed by the policy's `Arc` (the address of the
/// policy set's own string). The entry holds that `Arc`, so after a reload the address cannot
/// come back under another policy's name; a few old sets' names stay alive until the entries
/// are cleared (at most [`KEPT_SERIES`] per thread).
pub fn count_decision(allow: bool, policy: Option<&Arc<str>>) {
    type Series = (bool, Option<Arc<str>>, IntCounter);
    thread_local! {
        static SERIES: RefCell<Vec<Series>> = const { RefCell::new(Vec::new()) };
    }
    let resolve = || {
        let result = if allow { "allow" } else { "deny" };
        DECISIONS.with_label_values(&[result, policy.map_or("none", |p| &**p)])
    };
    let same = |(a, p, _): &&Series| {
        *a == allow
            && match (p, policy) {
                (None, None) => true,
                (Some(kept), Some(policy)) => Arc::ptr_eq(kept, policy),
                _ => false,
            }
    };
    let counted = SERIES.try_with(|series| {
        let Ok(mut series) = series.try_borrow_mut() else {
            return false;
        };
        match series.iter().find(same) {
            Some((_, _, counter)) => counter.inc(),
            None => {
                if series.len() >= KEPT_SERIES {
                    series.clear();
                }
                let counter = resolve();
                counter.inc();
                series.push((allow, policy.cloned(), counter));
            }
        }
        true
    });
    // Thread-local storage being torn down.
    if counted != Ok(true) {
        resolve().inc();
    }
}

/// Series of [`DECISIONS`] kept per thread by [`count_decision`].
const KEPT_SERIES: usize = 16;

pub static EVALUATION: LazyLock<Histogram> = LazyLock::new(|| {
    registered(register_histogram!(
        "gatehouse_authz_evaluation_duration_seconds",
        "Time to evaluate one decision in-process (policy lookup and conditions; not HTTP).",
        vec![1e-6, 2e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2]
    ))
});

pub static CONDITION_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(register_int_counter!(
        "gatehouse_authz_condition_errors_total",
        "Decisions in which a condition could not be evaluated (they fail closed)."
    ))
});

pub static RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(register_int_counter_vec!(
        "gatehouse_authz_policy_reloads_total",
        "Policy set reloads, by result (success|failure).",
        &["result"]
    ))
});

pub static POLICIES: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(register_int_gauge!(
        "gatehouse_authz_policies",
        "Resource policies in the running set."
    ))
});

pub static LOG_DROPS: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(register_int_counter!(
        "gatehouse_authz_decision_log_dropped_total",
        "Decision log lines dropped because the writer's queue was full."
    ))
});

pub static BAD_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(register_int_counter_vec!(
        "gatehouse_authz_bad_requests_total",
        "Requests answered 400, by the field at fault (top-level part; \"other\" for names the API does not know).",
        &["field"]
    ))
});

/// Registers every metric so `/metrics` lists them before the first event.
pub fn init() {
    LazyLock::force(&DECISIONS);
    LazyLock::force(&EVALUATION);
    LazyLock::force(&CONDITION_ERRORS);
    // Both `result` series: the ReloadGate that counts them creates them with the store.
    LazyLock::force(&RELOADS);
    LazyLock::force(&POLICIES);
    LazyLock::force(&LOG_DROPS);
    LazyLock::force(&BAD_REQUESTS);
}
