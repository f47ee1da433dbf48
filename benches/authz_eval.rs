//! Micro-benchmark of in-process policy evaluation (`gatehouse-authz`) on the shipped policies
//! (`conf/policies`). Not a timing harness and never a test: it prints a table and exits 0 whatever
//! the numbers are. See benches/README.md ("Policy decision benchmarks").
//!
//!     cargo bench --bench authz_eval                 # full run (about 20 s of measuring)
//!     cargo bench --bench authz_eval -- --quick      # smoke run (also: SMOKE=1)
//!     AUTHZ_EVAL_PROFILE='log on' perf record …      # one benchmark alone for 10 s, no table
//!
//! Every benchmark times batches of evaluations (one sample = the mean of 1000 decisions, 200
//! with --quick) and reports the median, p90, p99 and minimum of those per-decision means. The
//! benchmarks are interleaved sample by sample, so slow drift of the machine lands on all of
//! them alike. The reference peer is the cost of executing ONE compiled CEL expression
//! (`resource.owner == principal.sub`) with the `cel` crate directly, on a context built once:
//! the ratio `evaluate / 1 CEL expression` says how many bare expressions one decision costs.
//! Ratios pair the samples of one round (taken a few ms apart) and report the median ratio.
//!
//! `Authorizer::authorize` is measured twice in the same run, with the decision log on (a
//! temporary file, the shipped redaction) and off: the target is the median with the log
//! on. The log's writer thread works off the deciding thread; its CPU per line is printed too.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_authz::config::DecisionLogSettings;
use gatehouse_authz::decision_log::DecisionLog;
use gatehouse_authz::{metrics, policy, Authorizer, BatchRequest, Options, PolicySet, Request};
use serde_json::json;

// The allocator of the `gatehouse-authz` binary and of the gateway that embeds the evaluator:
// the benchmark measures what they run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The target for one in-process decision (information only, never a failure).
const TARGET_MEDIAN_US: f64 = 2.0;

struct Settings {
    quick: bool,
    /// Samples per benchmark.
    samples: usize,
    /// Decisions per sample.
    per_sample: usize,
    /// Unmeasured running time per benchmark before the first sample.
    warmup: Duration,
}

impl Settings {
    fn from_env_and_args() -> Self {
        let mut quick = std::env::var("SMOKE").is_ok_and(|v| v == "1");
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--quick" => quick = true,
                // cargo bench passes --bench to harness = false targets.
                "--bench" => {}
                "-h" | "--help" => {
                    println!(
                        "usage: cargo bench --bench authz_eval [-- --quick]   (SMOKE=1 = --quick)"
                    );
                    std::process::exit(0);
                }
                other => eprintln!("authz_eval: ignoring argument {other:?}"),
            }
        }
        if quick {
            Self {
                quick,
                samples: 15,
                per_sample: 200,
                warmup: Duration::from_millis(20),
            }
        } else {
            Self {
                quick,
                samples: 400,
                per_sample: 1000,
                warmup: Duration::from_millis(300),
            }
        }
    }
}

/// Where and when a request comes from (the contexts of conf/policies/documents_test.yaml).
const OFFICE_HOURS_REMOTE: (&str, &str) = ("203.0.113.9", "2026-11-23T10:00:00+01:00"); // Monday 10:00
const NIGHT_REMOTE: (&str, &str) = ("203.0.113.9", "2026-11-23T23:00:00+01:00"); // Monday 23:00
const NIGHT_OFFICE: (&str, &str) = ("10.1.2.3", "2026-11-23T23:00:00+01:00");

fn principal(sub: &str, roles: &[&str]) -> serde_json::Value {
    json!({
        "sub": sub,
        "roles": roles,
        "attributes": {"email": format!("{sub}@example.com"), "department": "engineering"},
    })
}

fn document(id: &str, owner: Option<&str>) -> serde_json::Value {
    let mut doc =
        json!({"type": "document", "id": id, "attributes": {"classification": "internal"}});
    if let Some(owner) = owner {
        doc["owner"] = json!(owner);
    }
    doc
}

fn context((ip, time): (&str, &str)) -> serde_json::Value {
    json!({"ip": ip, "time": time, "tenant": "acme"})
}

/// One scenario of the shipped policies, and the answer it must get.
struct Scenario {
    name: &'static str,
    request: Request,
    allow: bool,
    /// The deciding rule; `None` when no rule matched.
    rule: Option<&'static str>,
}

fn scenario(
    name: &'static str,
    (sub, roles): (&str, &[&str]),
    action: &str,
    owner: &str,
    ctx: (&str, &str),
    expect: (bool, Option<&'static str>),
) -> Scenario {
    let body = json!({
        "principal": principal(sub, roles),
        "resource": document("d1", Some(owner)),
        "action": action,
        "context": context(ctx),
    });
    // Parsed once, the way the HTTP API parses a body.
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let request: Request = gatehouse_authz::request::parse_json(&bytes)
        .unwrap_or_else(|e| fail(&format!("scenario {name}: request does not parse: {e}")));
    Scenario {
        name,
        request,
        allow: expect.0,
        rule: expect.1,
    }
}

fn scenarios() -> Vec<Scenario> {
    vec![
        // The owner, through the derived role `owner` (a CEL condition), after the working-hours
        // deny rule's two conditions came out false.
        scenario(
            "owner edit (allow)",
            ("alice", &[]),
            "edit",
            "alice",
            OFFICE_HOURS_REMOTE,
            (true, Some("owner-or-admin-edits")),
        ),
        // A plain role: no derived role needed.
        scenario(
            "editor view (allow)",
            ("bob", &["editor"]),
            "view",
            "alice",
            OFFICE_HOURS_REMOTE,
            (true, Some("editors-and-owners-view")),
        ),
        // Every allow rule tried, the derived role evaluated and false: no rule matched.
        scenario(
            "editor edit (deny, no match)",
            ("bob", &["editor"]),
            "edit",
            "alice",
            OFFICE_HOURS_REMOTE,
            (false, None),
        ),
        // The working-hours deny rule: remote, Monday 23:00 Paris.
        scenario(
            "night remote (deny, working hours)",
            ("alice", &[]),
            "view",
            "alice",
            NIGHT_REMOTE,
            (false, Some("outside-hours-outside-office")),
        ),
        scenario(
            "admin delete (allow)",
            ("carol", &["admin"]),
            "delete",
            "alice",
            OFFICE_HOURS_REMOTE,
            (true, Some("owner-or-admin-edits")),
        ),
        // Outside hours, but from the office network: the deny rule's `ipInRange` holds.
        scenario(
            "night office network (allow)",
            ("alice", &[]),
            "view",
            "alice",
            NIGHT_OFFICE,
            (true, Some("editors-and-owners-view")),
        ),
    ]
}

/// Ten checks for one principal in one context (`/authz/v1/authorize/batch`).
fn batch10() -> BatchRequest {
    let checks: Vec<_> = [
        ("d1", Some("alice"), "view"),
        ("d1", Some("alice"), "edit"),
        ("d1", Some("alice"), "delete"),
        ("d2", Some("bob"), "view"),
        ("d2", Some("bob"), "edit"),
        ("d3", None, "view"),
        ("d3", None, "delete"),
        ("d4", Some("alice"), "share"),
        ("d5", Some("carol"), "view"),
        ("d6", Some("alice"), "view"),
    ]
    .into_iter()
    .map(|(id, owner, action)| json!({"resource": document(id, owner), "action": action}))
    .collect();
    let body = json!({
        "principal": principal("alice", &[]),
        "context": context(OFFICE_HOURS_REMOTE),
        "checks": checks,
    });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    gatehouse_authz::request::parse_json(&bytes)
        .unwrap_or_else(|e| fail(&format!("batch request does not parse: {e}")))
}

fn fail(message: &str) -> ! {
    eprintln!("authz_eval: error: {message}");
    std::process::exit(1);
}

/// One timed benchmark: `run(n)` performs `n` units of work; each unit is `decisions_per_unit`
/// decisions (10 for a batch of ten checks).
struct Bench<'a> {
    name: String,
    decisions_per_unit: usize,
    run: Box<dyn FnMut(usize) + 'a>,
    /// Per-decision nanoseconds, one entry per sample.
    samples: Vec<f64>,
}

impl<'a> Bench<'a> {
    fn new(
        name: impl Into<String>,
        decisions_per_unit: usize,
        run: impl FnMut(usize) + 'a,
    ) -> Self {
        Self {
            name: name.into(),
            decisions_per_unit,
            run: Box::new(run),
            samples: Vec::new(),
        }
    }

    fn units_per_sample(&self, per_sample: usize) -> usize {
        (per_sample / self.decisions_per_unit).max(1)
    }

    fn warm_up(&mut self, settings: &Settings) {
        let units = self.units_per_sample(settings.per_sample).min(100);
        let started = Instant::now();
        while started.elapsed() < settings.warmup {
            (self.run)(units);
        }
    }

    fn sample(&mut self, settings: &Settings) {
        let units = self.units_per_sample(settings.per_sample);
        let started = Instant::now();
        (self.run)(units);
        let elapsed = started.elapsed();
        self.samples
            .push(elapsed.as_nanos() as f64 / (units * self.decisions_per_unit) as f64);
    }

    fn stats(&self) -> Stats {
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        let at = |p: f64| {
            let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
            v[i.min(v.len() - 1)] / 1000.0
        };
        Stats {
            median: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            min: at(0.0),
        }
    }
}

/// Microseconds per decision.
#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    p90: f64,
    p99: f64,
    min: f64,
}

/// `resource.owner == principal.sub` compiled and executed by the `cel` crate alone, on a
/// context with the two variables added once: the cheapest useful thing a CEL policy engine can
/// do per decision.
fn bare_cel_peer() -> impl FnMut(usize) {
    let program = cel::Program::compile("resource.owner == principal.sub")
        .unwrap_or_else(|e| fail(&format!("bare CEL expression: {e}")));
    let mut ctx = cel::Context::default();
    let string = |s: &str| cel::Value::String(Arc::new(s.to_string()));
    let map = |entries: Vec<(&str, cel::Value)>| {
        cel::Value::Map(cel::objects::Map {
            map: Arc::new(
                entries
                    .into_iter()
                    .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.to_string())), v))
                    .collect(),
            ),
        })
    };
    ctx.add_variable_from_value(
        "principal",
        map(vec![
            ("sub", string("alice")),
            ("roles", cel::Value::List(Arc::new(Vec::new()))),
        ]),
    );
    ctx.add_variable_from_value(
        "resource",
        map(vec![
            ("type", string("document")),
            ("id", string("d1")),
            ("owner", string("alice")),
        ]),
    );
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(true)) => {}
        other => fail(&format!("bare CEL expression returned {other:?}, not true")),
    }
    move |n| {
        for _ in 0..n {
            let _ = black_box(program.execute(black_box(&ctx)));
        }
    }
}

fn check_scenarios(set: &PolicySet, scenarios: &[Scenario]) {
    for s in scenarios {
        let d = set.evaluate(&s.request, Options::default());
        if d.allow != s.allow || d.rule.as_deref() != s.rule {
            fail(&format!(
                "scenario {:?}: expected allow={} rule={:?}, got allow={} rule={:?} ({}); \
                 did conf/policies change?",
                s.name,
                s.allow,
                s.rule,
                d.allow,
                d.rule.as_deref(),
                d.reason
            ));
        }
    }
}

fn main() {
    let settings = Settings::from_env_and_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let policies = root.join("conf/policies");
    let set = policy::load(&policies)
        .unwrap_or_else(|e| fail(&format!("{}: policies rejected:\n{e}", policies.display())));
    let scenarios = scenarios();
    check_scenarios(&set, &scenarios);
    let batch = batch10();

    // The full in-process path: metrics, and the decision log writing to a temporary file with
    // the shipped config's redaction.
    let log_dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let log_path: PathBuf = log_dir.path().join("decisions.log");
    let log = DecisionLog::open(&DecisionLogSettings {
        path: log_path.display().to_string(),
        queue: 8192,
        max_file_bytes: 16 * 1024 * 1024,
        keep_files: 1,
        redact: vec!["principal.attributes.email".into()],
    })
    .unwrap_or_else(|e| fail(&format!("decision log: {e}")));
    let authorizer =
        Authorizer::new(&policies, Some(log)).unwrap_or_else(|e| fail(&format!("authorizer: {e}")));
    // The same path without a decision log: what the log adds is the difference.
    let unlogged =
        Authorizer::new(&policies, None).unwrap_or_else(|e| fail(&format!("authorizer: {e}")));

    // A fixed pseudo-random order of the scenarios for the mixed benchmarks, so the branch
    // predictor cannot learn a short cycle.
    let mut x: u32 = 0x9e37_79b9;
    let order: Vec<usize> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as usize % scenarios.len()
        })
        .collect();

    // Decisions asked of the logging authorizer, warm-up included: each is a line written or
    // dropped.
    let logged_decisions = std::cell::Cell::new(0u64);
    let mut benches: Vec<Bench> = Vec::new();
    for s in &scenarios {
        let (set, request) = (&set, &s.request);
        benches.push(Bench::new(format!("evaluate: {}", s.name), 1, move |n| {
            for _ in 0..n {
                black_box(set.evaluate(black_box(request), Options::default()));
            }
        }));
    }
    let (set_ref, scen, ord) = (&set, &scenarios, &order);
    let mut at = 0usize;
    benches.push(Bench::new("evaluate: mixed (all six)", 1, move |n| {
        for _ in 0..n {
            let request = &scen[ord[at % ord.len()]].request;
            at = at.wrapping_add(1);
            black_box(set_ref.evaluate(black_box(request), Options::default()));
        }
    }));
    let batch_ref = &batch;
    benches.push(Bench::new("evaluate_batch: 10 checks", 10, move |n| {
        for _ in 0..n {
            black_box(set_ref.evaluate_batch(black_box(batch_ref), Options::default()));
        }
    }));
    let (auth, asked) = (&authorizer, &logged_decisions);
    let mut at = 0usize;
    benches.push(Bench::new(
        "Authorizer::authorize: mixed, log on",
        1,
        move |n| {
            for _ in 0..n {
                let request = &scen[ord[at % ord.len()]].request;
                at = at.wrapping_add(1);
                black_box(auth.authorize(black_box(request)));
            }
            asked.set(asked.get() + n as u64);
        },
    ));
    let auth = &unlogged;
    let mut at = 0usize;
    benches.push(Bench::new(
        "Authorizer::authorize: mixed, log off",
        1,
        move |n| {
            for _ in 0..n {
                let request = &scen[ord[at % ord.len()]].request;
                at = at.wrapping_add(1);
                black_box(auth.authorize(black_box(request)));
            }
        },
    ));
    benches.push(Bench::new(
        "peer: 1 bare CEL expression",
        1,
        bare_cel_peer(),
    ));
    // Rows after the scenarios', in the order pushed above.
    let (mixed_row, batch_row, authorize_row, unlogged_row, peer_row) = (
        scenarios.len(),
        scenarios.len() + 1,
        scenarios.len() + 2,
        scenarios.len() + 3,
        scenarios.len() + 4,
    );

    // For a profiler: one benchmark alone, for a while, and no table.
    if let Ok(name) = std::env::var("AUTHZ_EVAL_PROFILE") {
        let Some(b) = benches.iter_mut().find(|b| b.name.contains(&name)) else {
            fail(&format!("AUTHZ_EVAL_PROFILE={name:?} names no benchmark"));
        };
        eprintln!("authz_eval: running {:?} alone for 10 s", b.name);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            (b.run)(1000);
        }
        return;
    }

    let load_before = load_average();
    println!(
        "gatehouse-authz in-process evaluation  {}  {} CPUs  policies {} (set {}, {} policies)",
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        policies.display(),
        set.version(),
        set.policies.len()
    );
    println!(
        "  {} samples x {} decisions per benchmark, interleaved; warm-up {} ms each{}",
        settings.samples,
        settings.per_sample,
        settings.warmup.as_millis(),
        if settings.quick {
            "  (quick: smoke run, numbers are noisy)"
        } else {
            ""
        }
    );
    println!("  load average before start: {load_before}");
    println!();

    let started = Instant::now();
    for b in &mut benches {
        b.warm_up(&settings);
    }
    // Interleaved: one sample of every benchmark per round.
    for _ in 0..settings.samples {
        for b in &mut benches {
            b.sample(&settings);
        }
    }
    let wall = started.elapsed();

    let stats: Vec<Stats> = benches.iter().map(Bench::stats).collect();
    let peer = stats[peer_row].median;
    // Ratios are the median, over rounds, of the ratio between two benchmarks' samples of the same
    // round (a few ms apart): a slow spell of the machine slows both and cancels out.
    let paired = |a: usize, b: usize| {
        let mut r: Vec<f64> = benches[a]
            .samples
            .iter()
            .zip(&benches[b].samples)
            .map(|(x, y)| x / y)
            .collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let hdr = [
        "benchmark (per decision)",
        "median µs",
        "p90 µs",
        "p99 µs",
        "min µs",
        "decisions/s",
        "× 1 CEL expr",
    ];
    let rows: Vec<[String; 7]> = benches
        .iter()
        .zip(&stats)
        .enumerate()
        .map(|(i, (b, s))| {
            [
                b.name.clone(),
                format!("{:.3}", s.median),
                format!("{:.3}", s.p90),
                format!("{:.3}", s.p99),
                format!("{:.3}", s.min),
                format!("{:.0}", 1e6 / s.median),
                format!("{:.1}", paired(i, peer_row)),
            ]
        })
        .collect();
    print_table(&hdr, &rows);
    println!();
    println!(
        "evaluate (mixed) / 1 bare CEL expression = {:.1}   (medians: {:.3} µs / {:.3} µs)",
        paired(mixed_row, peer_row),
        stats[mixed_row].median,
        peer
    );
    println!(
        "authorize, log off (evaluate + metrics) / evaluate (mixed) = {:.2}",
        paired(unlogged_row, mixed_row)
    );
    println!(
        "authorize, log on / log off = {:.2}   (medians: {:.3} µs / {:.3} µs; the log adds {:.3} µs \
         on the deciding thread)",
        paired(authorize_row, unlogged_row),
        stats[authorize_row].median,
        stats[unlogged_row].median,
        stats[authorize_row].median - stats[unlogged_row].median
    );
    println!(
        "evaluate_batch per check / evaluate (mixed) = {:.2}   ({:.3} µs per 10-check call)",
        paired(batch_row, mixed_row),
        stats[batch_row].median * 10.0
    );
    let met = |us: f64| {
        if us <= TARGET_MEDIAN_US {
            "met"
        } else {
            "not met"
        }
    };
    let slowest = stats[..mixed_row]
        .iter()
        .map(|s| s.median)
        .fold(0.0, f64::max);
    println!(
        "target: median ≤ {TARGET_MEDIAN_US} µs per decision: authorize, log on {:.3} µs: {} \
         (the issue's target); log off {:.3} µs: {}; evaluate (mixed) {:.3} µs: {}; slowest \
         scenario {slowest:.3} µs: {}   (information only)",
        stats[authorize_row].median,
        met(stats[authorize_row].median),
        stats[unlogged_row].median,
        met(stats[unlogged_row].median),
        stats[mixed_row].median,
        met(stats[mixed_row].median),
        met(slowest),
    );
    let writer_cpu = thread_cpu_seconds("decision-log");
    let dropped = metrics::LOG_DROPS.get();
    let lines = logged_decisions.get().saturating_sub(dropped);
    let logged = std::fs::read(&log_path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0);
    println!(
        "decision log: {lines} lines queued, {dropped} dropped (queue full), {logged} in the live \
         file (rotates at 16 MiB); writer thread {}",
        match writer_cpu {
            None => "CPU n/a".to_string(),
            // /proc counts in clock ticks: a smoke run may not last one.
            Some(0.0) => "CPU under one clock tick".to_string(),
            Some(s) => format!(
                "{:.0} ms CPU, {:.3} µs per line (off the deciding thread)",
                s * 1e3,
                s * 1e6 / lines.max(1) as f64
            ),
        }
    );
    println!(
        "measured for {:.1} s; load average at the end: {}",
        wall.as_secs_f64(),
        load_average()
    );
}

/// CPU time (user + system) of this process's thread named `name`, from /proc (clock ticks,
/// usually 10 ms: enough over a run of several seconds).
fn thread_cpu_seconds(name: &str) -> Option<f64> {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        // Fields after the command name, which is in parentheses: state is field 3, utime 14,
        // stime 15 (proc(5)).
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        return Some((utime + stime) / ticks as f64);
    }
    None
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

/// Columns as wide as their widest cell; the first is left-aligned (as benches/lib.sh's tables).
fn print_table<const N: usize>(hdr: &[&str; N], rows: &[[String; N]]) {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([hdr[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let w: Vec<usize> = (0..N).map(width).collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = " ".repeat(w[i] - c.chars().count());
                if i == 0 {
                    format!("{c}{pad}")
                } else {
                    format!("{pad}{c}")
                }
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    println!("{}", line(hdr.to_vec()));
    println!(
        "{}",
        w.iter()
            .map(|&x| "-".repeat(x))
            .collect::<Vec<_>>()
            .join("-+-")
    );
    for r in rows {
        println!("{}", line(r.iter().map(String::as_str).collect()));
    }
}
