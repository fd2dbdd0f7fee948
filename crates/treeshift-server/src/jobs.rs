//! A job: one lifecycle operation on a thread of its own, its progress
//! counted as it goes, and its outcome once it ends.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use treeshift_core::{Extras, Policy, RelPath, Side};
use treeshift_engine::{CopyProgress, DiscoveryProgress, VerifyProgress};
use treeshift_lifecycle::{Cancel, LifecycleError, Migration};
use treeshift_store::CopyTodo;

/// The operations a job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Walk both trees (or go on walking them).
    Discover,
    /// Copy the approved plan.
    Copy,
    /// Check what was copied.
    Verify,
    /// Walk the failed folders again and copy the failed items again.
    Retry,
}

impl Op {
    pub fn parse(text: &str) -> Option<Op> {
        match text {
            "discover" => Some(Op::Discover),
            "copy" => Some(Op::Copy),
            "verify" => Some(Op::Verify),
            "retry" => Some(Op::Retry),
            _ => None,
        }
    }
}

/// How a job runs.
#[derive(Clone, Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JobOptions {
    /// Workers (folders listed at once per side, or items copied at once).
    pub workers: Option<usize>,
    /// Verify: read and compare content too.
    pub checksum: bool,
    /// Retry: only at or under this path.
    pub path: Option<String>,
}

/// Samples a job's history holds at most: when full, every other one is
/// dropped and the interval doubles, so a job of any length keeps its
/// whole shape in bounded memory.
const HISTORY_MAX: usize = 720;

/// What a job has done so far, counted by its progress callbacks, and a
/// sample of it now and then (a second apart at first) for a chart.
#[derive(Debug)]
pub struct Counts {
    listed: [AtomicU64; 2],
    found: [AtomicU64; 2],
    rounds: [AtomicU64; 2],
    items_total: AtomicU64,
    items_done: AtomicU64,
    bytes_total: AtomicU64,
    bytes_done: AtomicU64,
    started: Instant,
    /// When the next sample is due, in ms since `started`: the callbacks
    /// check it without a lock.
    next_sample_ms: AtomicU64,
    history: Mutex<History>,
}

#[derive(Debug)]
struct History {
    every_ms: u64,
    samples: Vec<Sample>,
}

/// The job's counts at one moment.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Sample {
    /// Seconds since the job started.
    pub t_s: f64,
    pub src_folders_listed: u64,
    pub dst_folders_listed: u64,
    pub items_done: u64,
    pub bytes_done: u64,
}

/// A snapshot of [`Counts`].
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CountsView {
    pub src_folders_listed: u64,
    pub dst_folders_listed: u64,
    /// Children the listed folders held, by side.
    pub src_nodes_found: u64,
    pub dst_nodes_found: u64,
    pub src_round: u64,
    pub dst_round: u64,
    pub items_total: u64,
    pub items_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
}

fn ix(side: Side) -> usize {
    usize::from(side == Side::Dst)
}

impl Counts {
    fn new() -> Counts {
        Counts {
            listed: Default::default(),
            found: Default::default(),
            rounds: Default::default(),
            items_total: AtomicU64::new(0),
            items_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            started: Instant::now(),
            next_sample_ms: AtomicU64::new(0),
            history: Mutex::new(History {
                every_ms: 1000,
                samples: Vec::new(),
            }),
        }
    }

    /// Takes a sample if one is due (or `always`). A callback on another
    /// thread that finds the history locked leaves the sample to it.
    fn tick(&self, always: bool) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if !always && now < self.next_sample_ms.load(Ordering::Relaxed) {
            return;
        }
        let mut history = if always {
            self.history.lock().unwrap_or_else(|p| p.into_inner())
        } else {
            match self.history.try_lock() {
                Ok(h) => h,
                Err(_) => return,
            }
        };
        let view = self.view();
        history.samples.push(Sample {
            t_s: now as f64 / 1000.0,
            src_folders_listed: view.src_folders_listed,
            dst_folders_listed: view.dst_folders_listed,
            items_done: view.items_done,
            bytes_done: view.bytes_done,
        });
        if history.samples.len() >= HISTORY_MAX {
            let mut keep = false;
            history.samples.retain(|_| {
                keep = !keep;
                keep
            });
            history.every_ms *= 2;
        }
        self.next_sample_ms
            .store(now + history.every_ms, Ordering::Relaxed);
    }

    fn samples(&self) -> Vec<Sample> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.samples.clone()
    }

    fn view(&self) -> CountsView {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountsView {
            src_folders_listed: get(&self.listed[0]),
            dst_folders_listed: get(&self.listed[1]),
            src_nodes_found: get(&self.found[0]),
            dst_nodes_found: get(&self.found[1]),
            src_round: get(&self.rounds[0]),
            dst_round: get(&self.rounds[1]),
            items_total: get(&self.items_total),
            items_done: get(&self.items_done),
            bytes_total: get(&self.bytes_total),
            bytes_done: get(&self.bytes_done),
        }
    }
}

impl DiscoveryProgress for Counts {
    fn round_started(&self, side: Side, round: u32, _pending: u64) {
        self.rounds[ix(side)].store(u64::from(round), Ordering::Relaxed);
    }

    fn folder_done(&self, side: Side, children: u64) {
        self.listed[ix(side)].fetch_add(1, Ordering::Relaxed);
        self.found[ix(side)].fetch_add(children, Ordering::Relaxed);
        self.tick(false);
    }
}

impl CopyProgress for Counts {
    fn start(&self, todo: &CopyTodo) {
        self.items_total
            .store(todo.files + todo.folders, Ordering::Relaxed);
        self.bytes_total.store(todo.bytes, Ordering::Relaxed);
    }

    fn folder_done(&self) {
        self.items_done.fetch_add(1, Ordering::Relaxed);
        self.tick(false);
    }

    fn file_done(&self, bytes: u64) {
        self.items_done.fetch_add(1, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        self.tick(false);
    }
}

impl VerifyProgress for Counts {
    fn start(&self, items: u64) {
        self.items_total.store(items, Ordering::Relaxed);
    }

    fn item_done(&self, bytes: u64) {
        self.items_done.fetch_add(1, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        self.tick(false);
    }
}

/// How a job ended.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Outcome {
    /// It finished; its report.
    Done { report: serde_json::Value },
    /// It was stopped on request; starting it again goes on.
    Stopped,
    /// It failed.
    Failed { error: String },
}

/// One job.
pub struct Job {
    pub op: Op,
    pub cancel: Cancel,
    counts: Arc<Counts>,
    outcome: Mutex<Option<Outcome>>,
}

/// A job as the API shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub op: Op,
    pub running: bool,
    pub elapsed_s: f64,
    pub progress: CountsView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

impl Job {
    pub fn is_running(&self) -> bool {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    pub fn view(&self) -> JobView {
        let outcome = self
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        JobView {
            op: self.op,
            running: outcome.is_none(),
            elapsed_s: self.counts.started.elapsed().as_secs_f64(),
            progress: self.counts.view(),
            outcome,
        }
    }

    /// The job's counts over time.
    pub fn history(&self) -> JobHistory {
        JobHistory {
            op: self.op,
            samples: self.counts.samples(),
        }
    }
}

/// A job's counts over time, for a chart of its throughput.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct JobHistory {
    pub op: Op,
    pub samples: Vec<Sample>,
}

/// Starts `op` on `migration` on a thread of its own.
pub fn start(
    op: Op,
    options: JobOptions,
    migration: Arc<Migration>,
    name: &str,
) -> std::io::Result<Arc<Job>> {
    let job = Arc::new(Job {
        op,
        cancel: Cancel::new(),
        counts: Arc::new(Counts::new()),
        outcome: Mutex::new(None),
    });
    let running = job.clone();
    record(&migration, "INFO", format!("{} job started", op_name(op)));
    let span = crate::migration_span(name);
    std::thread::Builder::new()
        .name(format!("treeshift-job-{op:?}").to_lowercase())
        .spawn(move || {
            // The engine's records (and its threads') are the migration's.
            let _in_span = span.enter();
            running.counts.tick(true);
            let result = run(op, &options, &migration, &running);
            running.counts.tick(true);
            let outcome = match result {
                Ok(report) => Outcome::Done { report },
                Err(LifecycleError::Engine(treeshift_engine::EngineError::Cancelled)) => {
                    Outcome::Stopped
                }
                Err(e) => Outcome::Failed {
                    error: crate::error::error_text(&e),
                },
            };
            let (level, said) = match &outcome {
                Outcome::Done { .. } => ("INFO", "done".to_string()),
                Outcome::Stopped => ("INFO", "stopped on request".to_string()),
                Outcome::Failed { error } => ("ERROR", format!("failed: {error}")),
            };
            record(&migration, level, format!("{} job {said}", op_name(op)));
            // What the job did is committed before it reads as ended, so
            // a status asked then (read from what is committed) shows it.
            if let Err(e) = migration.handle().flush() {
                tracing::warn!(error = %e, "could not commit the job's last records");
            }
            tracing::info!(op = ?op, outcome = ?outcome, "job ended");
            *running.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        })?;
    Ok(job)
}

fn op_name(op: Op) -> String {
    format!("{op:?}").to_lowercase()
}

/// Adds a record of the server's own (a job started or ended) to the
/// migration's `logs` table, at once. The engine's records reach it
/// through the log subscriber, by the migration's span.
pub fn record(m: &Migration, level: &'static str, message: String) {
    let record = treeshift_store::LogRecord::now(level, "treeshift::server", message);
    let _ = m.handle().append_logs(vec![record]);
}

fn run(
    op: Op,
    options: &JobOptions,
    m: &Migration,
    job: &Job,
) -> Result<serde_json::Value, LifecycleError> {
    let workers = options.workers.unwrap_or(8).clamp(1, 1024);
    let counts = job.counts.clone();
    let json = |v: serde_json::Result<serde_json::Value>| {
        v.map_err(|e| LifecycleError::Io(format!("report: {e}")))
    };
    match op {
        Op::Discover => {
            m.start_next_pass()?;
            let report = m.discover(workers, counts, &job.cancel)?;
            json(serde_json::to_value(report))
        }
        Op::Copy => json(serde_json::to_value(m.copy(
            workers,
            counts.as_ref(),
            &job.cancel,
        )?)),
        Op::Verify => json(serde_json::to_value(m.verify(
            options.checksum,
            workers,
            counts.as_ref(),
            &job.cancel,
        )?)),
        Op::Retry => {
            let prefix = options.path.as_deref().map(RelPath::from_typed);
            let discovery =
                m.retry_discovery(prefix.clone(), workers, counts.clone(), &job.cancel)?;
            let copy = m.retry_copy(prefix, workers, counts.as_ref(), &job.cancel)?;
            json(Ok(
                serde_json::json!({ "discovery": discovery, "copy": copy }),
            ))
        }
    }
}

/// Parses a policy and what happens to extras, as the CLI takes them.
pub fn policy(policy: &str, extras: &str) -> Result<(Policy, Extras), String> {
    Ok((policy.parse::<Policy>()?, extras.parse::<Extras>()?))
}
