//! What the CLI prints: summaries (discovery, approval, copy, verify) and
//! review rows.

use crate::cli::Format;
use anyhow::Result;
use crossbeam_channel::Receiver;
use serde::Serialize;
use std::io::{BufWriter, Write};
use std::path::Path;
use treeshift_backend::remote::Requests;
use treeshift_core::{Approval, CopySummary, Policy, Summary, VerifySummary, display_bytes};
use treeshift_lifecycle::CopyCost;
use treeshift_store::{Estimate, LogEntry, ReviewItem, TaskErrors, WorkerLeases};

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in binary units, one decimal.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The human summary after `discover` and in `status`.
pub fn print_summary(s: &Summary, state: &Path) {
    let state_word = if s.is_done() {
        "complete"
    } else {
        "in progress (run discover again to resume)"
    };
    if s.pass > 1 {
        println!("discovery (pass {}) {state_word}", s.pass);
        if s.src_rounds.done {
            let c = &s.changes;
            println!(
                "  changed on src since pass {}: {} new, {} modified, {} deleted (review --changes)",
                s.pass - 1,
                thousands(c.new),
                thousands(c.modified),
                thousands(c.deleted)
            );
        }
    } else {
        println!("discovery {state_word}");
    }
    for (label, t) in [("src", &s.src), ("dst", &s.dst)] {
        let mut line = format!(
            "  {label}: {} folders, {} files, {}",
            thousands(t.folders),
            thousands(t.files),
            human_bytes(t.bytes)
        );
        if t.symlinks > 0 || t.special > 0 {
            line.push_str(&format!(
                ", {} symlinks, {} special",
                thousands(t.symlinks),
                thousands(t.special)
            ));
        }
        println!("{line}");
    }
    let rows = [
        ("missing", s.missing),
        ("outdated", s.outdated),
        ("differs", s.differs),
        ("conflict", s.conflict),
        ("same", s.same),
        ("extra", s.extra),
        ("excluded", s.excluded),
        ("invalid-name", s.invalid_name),
        ("failed", s.failed),
        ("unclassified", s.unclassified),
    ];
    for (label, n) in rows {
        if n > 0 || matches!(label, "missing" | "same") {
            println!("  {label:<13}{:>12}", thousands(n));
        }
    }
    // Exactly what the default approval copies; what it leaves beside it.
    let mut to_copy = format!(
        "  to copy: {} files ({}), {} folders to create",
        thousands(s.to_copy.files),
        human_bytes(s.to_copy.bytes),
        thousands(s.to_copy.folders)
    );
    if s.to_copy.metadata > 0 {
        to_copy.push_str(&format!(
            ", {} items' metadata to update",
            thousands(s.to_copy.metadata)
        ));
    }
    println!("{to_copy}");
    if s.left_alone.items > 0 {
        println!(
            "  left alone: {} items ({}) that differ from a destination treeshift did not leave so; \
             approve --policy overwrite, newer or rename acts on them",
            thousands(s.left_alone.items),
            human_bytes(s.left_alone.bytes)
        );
    }
    if s.failed > 0 {
        println!(
            "  {} folders could not be listed: treeshift review --state {} --status failed",
            s.failed,
            state.display()
        );
    }
    println!("state: {}", state.display());
}

/// The approved plan.
pub fn print_approval(a: &Approval) {
    let c = &a.counts;
    println!(
        "plan approved by {} at {} (policy {}, plan {})",
        a.approved_by, a.approved_at, a.policy, a.plan_hash
    );
    println!(
        "  create {} folders, copy {} files and links ({}); leave {} items alone",
        thousands(c.folders),
        thousands(c.files),
        human_bytes(c.bytes),
        thousands(c.skipped)
    );
    if c.metadata > 0 {
        println!(
            "  update the mode, owner or extended attributes of {} items in place",
            thousands(c.metadata)
        );
    }
    if c.replaces > 0 {
        let how = match a.policy {
            Policy::Rename => "moved aside (name.treeshift-old)",
            _ => "replaced",
        };
        println!(
            "  {} destination items will be {how}",
            thousands(c.replaces)
        );
    }
    if c.quarantines > 0 {
        println!(
            "  {} destination extras will be moved into .treeshift-quarantine/pass-{}/",
            thousands(c.quarantines),
            a.pass
        );
    }
}

/// Copy progress and results.
pub fn print_copy(c: &CopySummary, state: &Path) {
    let word = if c.is_finished() {
        "finished"
    } else {
        "in progress (run copy again to resume)"
    };
    println!(
        "copy {word}: {} copied ({} of {}), {} skipped",
        thousands(c.copied),
        human_bytes(c.bytes_copied),
        human_bytes(c.bytes_planned),
        thousands(c.skipped)
    );
    if c.pending + c.copying > 0 {
        println!("  {} items still to copy", thousands(c.pending + c.copying));
    }
    if c.changed > 0 {
        println!(
            "  {} items changed since discovery, not copied: treeshift review --state {} --status changed",
            thousands(c.changed),
            state.display()
        );
    }
    if c.failed > 0 {
        println!(
            "  {} items failed: treeshift review --state {} --status copy-failed",
            thousands(c.failed),
            state.display()
        );
    }
}

/// Verification results.
pub fn print_verify(v: &VerifySummary, state: &Path) {
    println!(
        "verify{}: {} checked, {} match, {} mismatch, {} could not be checked",
        if v.checksum { " (content hashes)" } else { "" },
        thousands(v.checked),
        thousands(v.verified),
        thousands(v.mismatch),
        thousands(v.failed)
    );
    if v.mismatch + v.failed > 0 {
        println!(
            "  see: treeshift review --state {} --status mismatch",
            state.display()
        );
    }
}

#[derive(Serialize)]
struct JsonItem<'a> {
    side: &'a str,
    status: &'a str,
    kind: &'a str,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
    size: u64,
    mtime_ns: Option<i64>,
    reason: Option<&'a str>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prints review batches as they arrive (bounded memory for any size).
/// A closed pipe (`| head`) ends the listing quietly.
pub fn print_review(rx: Receiver<Vec<ReviewItem>>, format: Format) -> Result<()> {
    match write_review(rx, format) {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<csv::Error>().is_some_and(
                |csv| matches!(csv.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe),
            )
    })
}

fn write_review(rx: Receiver<Vec<ReviewItem>>, format: Format) -> Result<()> {
    let stdout = std::io::stdout().lock();
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(stdout);
            w.write_record([
                "side", "status", "kind", "path", "size", "mtime_ns", "reason",
            ])?;
            for item in rx.iter().flatten() {
                w.write_record([
                    item.side.as_str().as_bytes(),
                    item.status.as_bytes(),
                    item.kind.as_str().as_bytes(),
                    item.path.as_bytes(),
                    item.size.to_string().as_bytes(),
                    item.mtime_ns
                        .map(|m| m.to_string())
                        .unwrap_or_default()
                        .as_bytes(),
                    item.reason.as_deref().unwrap_or("").as_bytes(),
                ])?;
            }
            w.flush()?;
        }
        Format::Json => {
            let mut out = BufWriter::new(stdout);
            for item in rx.iter().flatten() {
                let bytes = item.path.as_bytes();
                let utf8 = std::str::from_utf8(bytes).ok();
                let row = JsonItem {
                    side: item.side.as_str(),
                    status: &item.status,
                    kind: item.kind.as_str(),
                    path: utf8
                        .map_or_else(|| String::from_utf8_lossy(bytes).into_owned(), String::from),
                    path_hex: utf8.is_none().then(|| hex(bytes)),
                    size: item.size,
                    mtime_ns: item.mtime_ns,
                    reason: item.reason.as_deref(),
                };
                serde_json::to_writer(&mut out, &row)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
        Format::Table => {
            let mut out = BufWriter::new(stdout);
            writeln!(
                out,
                "{:<4} {:<9} {:<8} {:>14}  path  [reason]",
                "side", "status", "kind", "size"
            )?;
            for item in rx.iter().flatten() {
                let reason = item
                    .reason
                    .as_deref()
                    .map(|r| format!("  [{r}]"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:<4} {:<9} {:<8} {:>14}  {}{reason}",
                    item.side.as_str(),
                    item.status,
                    item.kind.as_str(),
                    thousands(item.size),
                    display_bytes(item.path.as_bytes())
                )?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

/// Prints one log record: a line for a terminal, or one JSON object. A
/// closed pipe is an `Err` of kind `BrokenPipe` for the caller to stop on.
pub fn print_log(entry: &LogEntry, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")
    } else {
        writeln!(
            out,
            "{} {:<5} {}: {}",
            entry.at, entry.level, entry.target, entry.message
        )
    }
}

/// What is left to copy and, once a copy has run, how long it should take.
pub fn print_estimate(e: &Estimate) {
    if e.files + e.folders == 0 {
        return;
    }
    let mut line = format!(
        "left to copy: {} files ({}), {} folders",
        thousands(e.files),
        human_bytes(e.bytes),
        thousands(e.folders)
    );
    match (e.eta_s, e.files_per_s, e.bytes_per_s) {
        (Some(eta), Some(files), Some(bytes)) => line.push_str(&format!(
            "; at {:.0} files/s and {}/s so far: about {}",
            files,
            human_bytes(bytes as u64),
            human_duration(eta)
        )),
        _ => line.push_str("; no copy throughput measured yet"),
    }
    println!("{line}");
}

/// The cost of the copy left, where a side is remote.
pub fn print_cost(cost: &CopyCost) {
    let side = |name: &str, r: &Requests| {
        let kinds: Vec<String> = [
            ("PUT", r.put),
            ("parts", r.parts),
            ("GET", r.get),
            ("HEAD", r.head),
            ("LIST", r.list),
            ("other", r.other),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{} {k}", thousands(*n)))
        .collect();
        println!(
            "  {name}: {} requests{}",
            thousands(r.total()),
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            }
        );
    };
    println!(
        "cost of the copy on remote storage ({} through the network):",
        human_bytes(cost.bytes)
    );
    if let Some(r) = &cost.src {
        side("source", r);
    }
    if let Some(r) = &cost.dst {
        side("destination", r);
    }
}

/// Failures recorded so far, by kind, and the latest one.
pub fn print_errors(e: &TaskErrors) {
    if e.total == 0 {
        return;
    }
    let kinds: Vec<String> = e
        .by_kind
        .iter()
        .map(|(k, n)| format!("{k} {}", thousands(*n)))
        .collect();
    println!(
        "failures recorded: {} ({})",
        thousands(e.total),
        kinds.join(", ")
    );
    if let Some(last) = e.recent.first() {
        println!(
            "  latest: {} {} {} {}: {} (attempt {})",
            last.at, last.side, last.operation, last.path, last.message, last.attempt
        );
    }
}

/// The worker processes holding folders of a shared state, one line per
/// process, side and round.
pub fn print_workers(workers: &[WorkerLeases]) {
    for w in workers {
        let lease = match w.expires_in_ms {
            ms if ms >= 0 => format!("lease for {} more", human_duration(ms as f64 / 1000.0)),
            ms => format!(
                "expired {} ago: another worker takes them over",
                human_duration(-ms as f64 / 1000.0)
            ),
        };
        match w.side.as_str() {
            "copy" => println!(
                "worker {}: {} items of the copy ({lease})",
                w.holder,
                thousands(w.held)
            ),
            side => println!(
                "worker {}: {} {side} folders of round {} ({lease})",
                w.holder,
                thousands(w.held),
                w.round
            ),
        }
    }
}

/// `3725.0` → `1h 2m 5s`.
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, s) => format!("{h}h {m}m {s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
