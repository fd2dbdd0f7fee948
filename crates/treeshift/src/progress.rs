//! Progress on the terminal: bars on a TTY, plain lines otherwise.

use crate::output::thousands;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use treeshift_core::Side;
use treeshift_engine::{CopyProgress, DiscoveryProgress, VerifyProgress};
use treeshift_store::CopyTodo;

/// Counters of one side.
#[derive(Default)]
struct SideCounts {
    round: AtomicU64,
    folders: AtomicU64,
    nodes: AtomicU64,
    round_pending: AtomicU64,
    round_done: AtomicU64,
}

impl SideCounts {
    fn start_round(&self, round: u32, pending: u64) {
        self.round.store(u64::from(round), Ordering::Relaxed);
        self.round_pending.store(pending, Ordering::Relaxed);
        self.round_done.store(0, Ordering::Relaxed);
    }

    /// Counts one finished folder; returns the folders finished so far.
    fn folder_done(&self, children: u64) -> u64 {
        self.round_done.fetch_add(1, Ordering::Relaxed);
        self.nodes.fetch_add(children, Ordering::Relaxed);
        self.folders.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn line(&self, side: Side, elapsed: Duration) -> String {
        let folders = self.folders.load(Ordering::Relaxed);
        let rate = folders as f64 / elapsed.as_secs_f64().max(0.001);
        format!(
            "{side} round {} ({}/{} folders) | {} folders, {} nodes | {:.0} folders/s",
            self.round.load(Ordering::Relaxed),
            thousands(self.round_done.load(Ordering::Relaxed)),
            thousands(self.round_pending.load(Ordering::Relaxed)),
            thousands(folders),
            thousands(self.nodes.load(Ordering::Relaxed)),
            rate
        )
    }
}

fn idx(side: Side) -> usize {
    match side {
        Side::Src => 0,
        Side::Dst => 1,
    }
}

/// Two spinners (src, dst) redrawn by indicatif.
pub struct Bars {
    counts: [SideCounts; 2],
    bars: [ProgressBar; 2],
    started: Instant,
    _multi: MultiProgress,
}

impl Bars {
    /// Starts drawing on stderr.
    pub fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        let style =
            ProgressStyle::with_template("{spinner} {msg}").expect("static template parses");
        let bar = || {
            let b = multi.add(ProgressBar::new_spinner());
            b.set_style(style.clone());
            b.enable_steady_tick(Duration::from_millis(125));
            b
        };
        Bars {
            counts: Default::default(),
            bars: [bar(), bar()],
            started: Instant::now(),
            _multi: multi,
        }
    }

    fn redraw(&self, side: Side) {
        self.bars[idx(side)].set_message(self.counts[idx(side)].line(side, self.started.elapsed()));
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        for b in &self.bars {
            b.finish();
        }
    }
}

impl DiscoveryProgress for Bars {
    fn round_started(&self, side: Side, round: u32, pending: u64) {
        self.counts[idx(side)].start_round(round, pending);
        self.redraw(side);
    }

    fn folder_done(&self, side: Side, children: u64) {
        // indicatif throttles drawing; formatting is the only cost here.
        if self.counts[idx(side)]
            .folder_done(children)
            .is_multiple_of(64)
        {
            self.redraw(side);
        }
    }

    fn round_sealed(&self, side: Side, _round: u32, done: bool) {
        self.redraw(side);
        if done {
            let msg = format!(
                "{} (done)",
                self.counts[idx(side)].line(side, self.started.elapsed())
            );
            self.bars[idx(side)].finish_with_message(msg);
        }
    }
}

/// Plain log lines for pipes and CI: one per side every few seconds and at
/// each round seal.
pub struct Lines {
    counts: [SideCounts; 2],
    started: Instant,
    last: Mutex<Instant>,
}

impl Lines {
    /// Starts counting.
    pub fn new() -> Self {
        Lines {
            counts: Default::default(),
            started: Instant::now(),
            last: Mutex::new(Instant::now()),
        }
    }

    fn print(&self, side: Side) {
        eprintln!(
            "treeshift: {}",
            self.counts[idx(side)].line(side, self.started.elapsed())
        );
    }
}

impl DiscoveryProgress for Lines {
    fn round_started(&self, side: Side, round: u32, pending: u64) {
        self.counts[idx(side)].start_round(round, pending);
    }

    fn folder_done(&self, side: Side, children: u64) {
        self.counts[idx(side)].folder_done(children);
        // try_lock: a worker never waits on another's printing.
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.elapsed() >= Duration::from_secs(5) {
            *last = Instant::now();
            drop(last);
            self.print(Side::Src);
            self.print(Side::Dst);
        }
    }

    fn round_sealed(&self, side: Side, round: u32, done: bool) {
        if done {
            eprintln!("treeshift: {side} done after round {round}");
        }
    }
}

/// Copy and verify progress: a bar of bytes with rate and ETA on a TTY,
/// a line every few seconds otherwise.
pub struct Transfer {
    bar: ProgressBar,
    tty: bool,
    by_bytes: bool,
    verb: &'static str,
    items: AtomicU64,
    total_items: AtomicU64,
    bytes: AtomicU64,
    last: Mutex<Instant>,
}

impl Transfer {
    /// A reporter for `verb` ("copy", "verify"); the bar counts bytes if
    /// `by_bytes`, else items.
    pub fn new(verb: &'static str, by_bytes: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let template = if by_bytes {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
        } else {
            "{msg} [{bar:30}] {per_sec} ETA {eta}"
        };
        let bar = if tty {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(8));
            b.set_style(
                ProgressStyle::with_template(template)
                    .expect("static template parses")
                    .progress_chars("=> "),
            );
            b
        } else {
            ProgressBar::hidden()
        };
        Transfer {
            bar,
            tty,
            by_bytes,
            verb,
            items: AtomicU64::new(0),
            total_items: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    fn set_total(&self, items: u64, bytes: u64) {
        self.total_items.store(items, Ordering::Relaxed);
        self.bar
            .set_length(if self.by_bytes { bytes } else { items });
        self.bar.reset_eta();
    }

    fn done(&self, bytes: u64) {
        let items = self.items.fetch_add(1, Ordering::Relaxed) + 1;
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.bar.inc(if self.by_bytes { bytes } else { 1 });
        let total = self.total_items.load(Ordering::Relaxed);
        if self.tty {
            if items.is_multiple_of(64) || items == total {
                self.bar.set_message(format!(
                    "{} {}/{} items",
                    self.verb,
                    thousands(items),
                    thousands(total)
                ));
            }
            return;
        }
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.elapsed() >= Duration::from_secs(5) {
            *last = Instant::now();
            eprintln!(
                "treeshift: {} {}/{} items, {}",
                self.verb,
                thousands(items),
                thousands(total),
                crate::output::human_bytes(self.bytes.load(Ordering::Relaxed))
            );
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl CopyProgress for Transfer {
    fn start(&self, todo: &CopyTodo) {
        self.set_total(todo.folders + todo.files, todo.bytes);
    }

    fn folder_done(&self) {
        self.done(0);
    }

    fn file_done(&self, bytes: u64) {
        self.done(bytes);
    }
}

impl VerifyProgress for Transfer {
    fn start(&self, items: u64) {
        self.set_total(items, 0);
    }

    fn item_done(&self, bytes: u64) {
        self.done(bytes);
    }
}
