//! The `treeshift` binary: parses flags, opens the state file, runs the
//! engine, prints results. Errors become `anyhow` with context only here.

mod cli;
mod connections;
mod credentials;
mod keep;
mod logging;
mod output;
mod progress;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{
    ApproveArgs, Cli, Command, ConnectionCommand, CopyArgs, DiscoverArgs, KeyArgs, LogsArgs,
    MigrateArgs, RetryArgs, RetryPhase, ReviewArgs, StatusArgs, VerifyArgs,
};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use treeshift_backend::{Backend, Counted};
use treeshift_core::{
    CopyStatus, CopySummary, Extras, Filter, Policy, RelPath, Status, Summary, VerifySummary,
};
use treeshift_engine::{CopyOptions, DiscoverOptions, DiscoveryProgress, EngineError};
use treeshift_store::{MigrationSpec, OpenMode, ReviewSelect, Store, StoreError, StoreHandle};

/// Process exit codes of the CLI contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// Done.
    Done = 0,
    /// An error stopped the command.
    Error = 1,
    /// The command line was wrong.
    Usage = 2,
    /// Copy needs an approval that matches the current plan.
    Approval = 3,
    /// Finished, but some items failed.
    FailedItems = 4,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let udp = match cli.log_udp.map(logging::UdpSink::new).transpose() {
        Ok(sink) => sink.map(|s| (s, cli.log_udp_level.level())),
        Err(e) => {
            eprintln!("treeshift: error: --log-udp: {e}");
            return ExitCode::from(Exit::Usage as u8);
        }
    };
    logging::init(cli.verbose, udp);
    match run(cli) {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(e) => {
            eprintln!("treeshift: error: {e:#}");
            let exit = if e.downcast_ref::<UsageError>().is_some() {
                Exit::Usage
            } else if matches!(
                e.downcast_ref::<EngineError>(),
                Some(EngineError::ApprovalRequired(_))
            ) {
                Exit::Approval
            } else {
                Exit::Error
            };
            ExitCode::from(exit as u8)
        }
    }
}

/// Input that is wrong on its face (a bad glob, an unknown backend):
/// reported with exit code 2, like clap's own usage errors.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

/// The backends this process opened, by role, each behind a layer that
/// counts its calls (reported as `calls` in `--json` results).
static OPENED: std::sync::Mutex<Vec<(&'static str, Arc<Counted>)>> =
    std::sync::Mutex::new(Vec::new());

/// Requests-per-second limits by role, from `--src-tps` and `--dst-tps`.
static TPS: std::sync::OnceLock<(Option<u32>, Option<u32>)> = std::sync::OnceLock::new();

/// Opens a location with its connection's secrets; malformed or
/// unsupported ones are usage errors. A process works on one migration, so
/// a role is opened once and reused.
fn open_backend(
    location: &str,
    role: &'static str,
    secrets: treeshift_core::Secrets,
) -> Result<Arc<dyn Backend>> {
    use treeshift_backend::ErrorKind;
    if let Some(backend) = already_open(role) {
        return Ok(backend);
    }
    let mut opened = OPENED.lock().unwrap_or_else(|p| p.into_inner());
    let (src_tps, dst_tps) = TPS.get().copied().unwrap_or_default();
    let options = treeshift_backend::OpenOptions {
        tps: if role == "source" { src_tps } else { dst_tps },
        secrets,
    };
    let backend = treeshift_backend::open(location, &options).map_err(|e| match e.kind {
        ErrorKind::Other | ErrorKind::Unsupported | ErrorKind::InvalidName => {
            usage(format!("{role}: {e}"))
        }
        _ => anyhow::Error::new(e).context(role.to_string()),
    })?;
    let counted = Arc::new(Counted::new(backend));
    opened.push((role, counted.clone()));
    Ok(counted)
}

/// The backend of `role`, if this process has opened it.
fn already_open(role: &str) -> Option<Arc<dyn Backend>> {
    let opened = OPENED.lock().unwrap_or_else(|p| p.into_inner());
    let found = opened.iter().find(|(r, _)| *r == role)?;
    Some(found.1.clone())
}

/// Calls made to each backend so far, by role.
fn calls() -> serde_json::Value {
    let opened = OPENED.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = serde_json::Map::new();
    for (role, backend) in opened.iter() {
        let key = if *role == "source" { "src" } else { "dst" };
        let mut counts = serde_json::to_value(backend.counts()).unwrap_or_default();
        if let Some(requests) = backend.requests() {
            counts["requests"] = serde_json::to_value(requests).unwrap_or_default();
        }
        out.insert(key.to_string(), counts);
    }
    out.into()
}

fn run(cli: Cli) -> Result<Exit> {
    let _ = TPS.set((cli.src_tps, cli.dst_tps));
    let keys = &cli.key;
    match cli.command {
        Command::Discover(args) => discover(args, keys),
        Command::Status(args) => status(args),
        Command::Review(args) => review(args),
        Command::Approve(args) => approve(args),
        Command::Copy(args) => copy(args, keys),
        Command::Verify(args) => verify(args, keys),
        Command::Migrate(args) => migrate(args, keys),
        Command::Retry(args) => retry(args, keys),
        Command::Logs(args) => logs(args),
        Command::Connections(args) => connections::list(args),
        Command::Connection(ConnectionCommand::Set(args)) => connections::set(args, keys),
        Command::Connection(ConnectionCommand::SetSecret(args)) => {
            connections::set_secret(args, keys)
        }
        Command::Rekey(args) => connections::rekey(args, keys),
    }
}

/// Opens the state file, runs `f` on it, and closes it (committing what
/// was buffered) whatever `f` returned.
fn with_store<T>(
    path: &Path,
    mode: OpenMode,
    f: impl FnOnce(&StoreHandle) -> Result<T>,
) -> Result<T> {
    open_store(path, mode, true, f)
}

/// Like `with_store`; `keep_logs` decides whether this command's own log
/// records go to the file (reading logs must not write any).
fn open_store<T>(
    path: &Path,
    mode: OpenMode,
    keep_logs: bool,
    f: impl FnOnce(&StoreHandle) -> Result<T>,
) -> Result<T> {
    let (store, resumed) = Store::open(path, mode)?;
    let logs = logging::table();
    if keep_logs {
        logs.attach(store.handle());
    }
    if resumed {
        tracing::debug!(state = %path.display(), "resuming from the state file");
    }
    let result = f(&store.handle());
    if keep_logs {
        logs.detach();
    }
    let closed = store.close();
    let value = result?;
    closed.context("closing the state file")?;
    Ok(value)
}

/// The backends of the migration a state file holds, with the secrets it
/// sealed (or the environment's).
fn migration_backends(
    handle: &StoreHandle,
    keys: &KeyArgs,
) -> Result<(Arc<dyn Backend>, Arc<dyn Backend>)> {
    if let (Some(src), Some(dst)) = (already_open("source"), already_open("destination")) {
        return Ok((src, dst)); // a migrate's copy, after its discovery
    }
    let spec = handle.migration()?;
    let [src, dst] = credentials::for_existing(handle, keys)?;
    Ok((
        open_backend(&spec.src, "source", src)?,
        open_backend(&spec.dst, "destination", dst)?,
    ))
}

fn parse_policy(text: &str) -> Result<Policy> {
    text.parse::<Policy>().map_err(usage)
}

/// Who approves: the user name of this process as the environment has it,
/// else its user id.
fn approver() -> String {
    use std::os::unix::fs::MetadataExt;
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .or_else(|| {
            std::fs::metadata("/proc/self")
                .ok()
                .map(|m| format!("uid {}", m.uid()))
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Runs discovery with progress; returns the summary and its timing.
fn run_discovery(
    handle: &StoreHandle,
    src: Arc<dyn Backend>,
    dst: Arc<dyn Backend>,
    filter: &Filter,
    workers: u16,
) -> Result<(Summary, serde_json::Value)> {
    let display: Arc<dyn DiscoveryProgress> = if std::io::stderr().is_terminal() {
        Arc::new(progress::Bars::new())
    } else {
        Arc::new(progress::Lines::new())
    };
    let progress = Arc::new(progress::Timed::new(display));
    let options = DiscoverOptions {
        workers: usize::from(workers),
        ..DiscoverOptions::default()
    };
    let result = treeshift_engine::discover(handle, src, dst, filter, &options, progress.clone());
    let timing = serde_json::json!({
        "src_done_s": progress.done_secs(treeshift_core::Side::Src),
        "dst_done_s": progress.done_secs(treeshift_core::Side::Dst),
        "total_s": progress.elapsed_secs(),
    });
    drop(progress); // finishes the bars before the summary is printed
    Ok((result?, timing))
}

fn log_approval(a: &treeshift_core::Approval) {
    tracing::info!(by = %a.approved_by, policy = %a.policy, extras = a.extras.as_str(), plan = %a.plan_hash, items = a.items, "plan approved");
}

/// On a state file whose copy finished, starts a delta pass: both trees
/// are walked again and the changes become a new plan to approve.
fn start_next_pass(handle: &StoreHandle) -> Result<()> {
    if let Some(pass) = handle.next_pass()? {
        tracing::info!(pass, "delta pass started");
        eprintln!(
            "treeshift: the copy of pass {} finished; pass {pass} walks both trees again for what changed",
            pass - 1
        );
    }
    Ok(())
}

/// A remote location with `--src-opt`/`--dst-opt` options added to its
/// query string (the backend checks them as it checks the query's own).
fn with_options(location: &str, options: &[String]) -> Result<String> {
    if options.is_empty() {
        return Ok(location.to_string());
    }
    if !location.contains("://") || location.starts_with("file://") {
        return Err(usage(format!(
            "{location}: options (--src-opt/--dst-opt) apply to remote storage only"
        )));
    }
    let mut out = location.to_string();
    for option in options {
        if !option.contains('=') {
            return Err(usage(format!("option '{option}' is not KEY=VALUE")));
        }
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(option);
    }
    Ok(out)
}

/// What a discovery runs with.
struct DiscoverySetup {
    filter: Filter,
    src: Arc<dyn Backend>,
    dst: Arc<dyn Backend>,
    mode: OpenMode,
    /// The secrets both sides were opened with, to record.
    secrets: credentials::ForDiscovery,
}

/// Opens the backends and the state file of a discovery.
fn discovery_setup(args: &DiscoverArgs, keys: &KeyArgs) -> Result<DiscoverySetup> {
    let spec = args.filter.spec();
    let filter = Filter::new(&spec).map_err(usage)?;
    let src_location = with_options(&args.src, &args.src_opt)?;
    let dst_location = with_options(&args.dst, &args.dst_opt)?;
    let secrets = credentials::for_discovery(
        &args.state,
        [&src_location, &dst_location],
        [
            args.src_secret_file.as_deref(),
            args.dst_secret_file.as_deref(),
        ],
        keys,
    )?;
    let src = open_backend(&src_location, "source", secrets.secrets[0].clone())?;
    let dst = open_backend(&dst_location, "destination", secrets.secrets[1].clone())?;
    let spec = MigrationSpec {
        src: src.describe(),
        dst: dst.describe(),
        filter: spec,
        dst_case_insensitive: args.dst_case_insensitive,
        keep: keep::within(
            keep::resolve(
                args.keep.owners.as_deref(),
                args.keep.xattrs,
                args.keep.acls,
                args.keep.hard_links,
            )
            .map_err(|e| usage(format!("{e:#}")))?,
            &src.capabilities(),
            &dst.capabilities(),
        ),
    };
    Ok(DiscoverySetup {
        filter,
        src,
        dst,
        mode: OpenMode::CreateOrResume(Box::new(spec)),
        secrets,
    })
}

fn discover(args: DiscoverArgs, keys: &KeyArgs) -> Result<Exit> {
    let DiscoverySetup {
        filter,
        src,
        dst,
        mode,
        secrets,
    } = discovery_setup(&args, keys)?;
    let fresh = !args.state.exists();
    let (summary, timing) = with_store(&args.state, mode, |h| {
        credentials::record(h, secrets, keys)?;
        start_next_pass(h)?;
        run_discovery(h, src, dst, &filter, args.workers)
    })
    .inspect_err(|e| forget_unstarted(&args.state, fresh, e))?;
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["timing"] = timing;
        value["calls"] = calls();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        output::print_summary(&summary, &args.state);
    }
    Ok(exit_for(summary.failed + summary.invalid_name > 0))
}

/// A first discovery that could not start (a root missing, not a folder,
/// or unreachable: a wrong bucket, credentials or endpoint) leaves no state
/// file behind. It recorded nothing but the migration's locations, and a
/// run with the location corrected would be refused as another
/// migration's.
fn forget_unstarted(state: &Path, fresh: bool, e: &anyhow::Error) {
    let unstarted = e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<EngineError>(),
            Some(
                EngineError::Root { .. }
                    | EngineError::SrcRootMissing(_)
                    | EngineError::RootNotFolder { .. }
            )
        )
    });
    if fresh && unstarted {
        let mut wal = state.as_os_str().to_owned();
        wal.push(".wal");
        let _ = std::fs::remove_file(state);
        let _ = std::fs::remove_file(wal);
    }
}

fn exit_for(failed_items: bool) -> Exit {
    if failed_items {
        Exit::FailedItems
    } else {
        Exit::Done
    }
}

fn approve(args: ApproveArgs) -> Result<Exit> {
    let policy = parse_policy(&args.policy)?;
    let extras = args.extras.parse::<Extras>().map_err(usage)?;
    let (approval, cost) = with_store(&args.state, OpenMode::Existing, |h| {
        let approval = h.approve(policy, extras, &approver())?;
        log_approval(&approval);
        let migration = h.migration()?;
        let estimate = h.estimate(output::CopyCost::part_size(&migration))?;
        Ok((approval, output::CopyCost::of(&migration, &estimate)))
    })?;
    if args.json {
        let mut value = serde_json::to_value(&approval)?;
        value["cost"] = serde_json::to_value(&cost)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        output::print_approval(&approval);
        if let Some(cost) = &cost {
            output::print_cost(cost);
        }
        println!("next: treeshift copy --state {}", args.state.display());
    }
    Ok(Exit::Done)
}

fn run_copy(handle: &StoreHandle, workers: u16, keys: &KeyArgs) -> Result<CopySummary> {
    let (src, dst) = migration_backends(handle, keys)?;
    let options = CopyOptions {
        workers: usize::from(workers),
        ..CopyOptions::default()
    };
    let progress = progress::Transfer::new("copy", true);
    Ok(treeshift_engine::copy(
        handle, src, dst, &options, &progress,
    )?)
}

fn run_verify(
    handle: &StoreHandle,
    checksum: bool,
    workers: u16,
    keys: &KeyArgs,
) -> Result<VerifySummary> {
    let (src, dst) = migration_backends(handle, keys)?;
    let progress = progress::Transfer::new("verify", false);
    Ok(treeshift_engine::verify(
        handle,
        src,
        dst,
        checksum,
        usize::from(workers),
        &progress,
    )?)
}

fn copy(args: CopyArgs, keys: &KeyArgs) -> Result<Exit> {
    let summary = with_store(&args.state, OpenMode::Existing, |h| {
        run_copy(h, args.workers, keys)
    })?;
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["calls"] = calls();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        output::print_copy(&summary, &args.state);
    }
    Ok(exit_for(summary.failed + summary.changed > 0))
}

fn retry(args: RetryArgs, keys: &KeyArgs) -> Result<Exit> {
    let prefix = args
        .path
        .as_deref()
        .map(|p| RelPath::from_bytes(p.trim_matches('/').as_bytes().to_vec()));
    let discovery = args.phase != Some(RetryPhase::Copy);
    let copying = args.phase != Some(RetryPhase::Discovery);
    with_store(&args.state, OpenMode::Existing, |h| {
        let mut report = serde_json::json!({});
        let mut problems = 0;
        if discovery {
            let requeued = h.requeue_failed_folders(prefix.clone())?;
            tracing::info!(
                src = requeued.src,
                dst = requeued.dst,
                "retry sweep: failed folders re-queued"
            );
            let progress = h.progress()?;
            if !args.json {
                println!(
                    "re-queued {} failed folders ({} source, {} destination)",
                    output::thousands(requeued.total()),
                    output::thousands(requeued.src),
                    output::thousands(requeued.dst)
                );
            }
            let mut value = serde_json::json!({ "requeued": requeued });
            if !(progress.src_done && progress.dst_done) {
                let spec = h.migration()?;
                let filter = Filter::new(&spec.filter).map_err(usage)?;
                let (src, dst) = migration_backends(h, keys)?;
                let (summary, _) = run_discovery(h, src, dst, &filter, args.workers)?;
                if !args.json {
                    output::print_summary(&summary, &args.state);
                }
                problems += summary.failed;
                value["summary"] = serde_json::to_value(&summary)?;
            }
            report["discovery"] = value;
        }
        if copying {
            if !discovery && h.approval()?.is_none() {
                return Err(EngineError::ApprovalRequired(StoreError::NotApproved).into());
            }
            let extended = h.extend_approval().map_err(EngineError::approval)?;
            if let Some(added) = extended {
                let requeued = h.requeue_failed_copies(prefix)?;
                tracing::info!(
                    requeued,
                    approval_extended = added,
                    "retry sweep: failed copies re-queued"
                );
                let summary = run_copy(h, args.workers, keys)?;
                if !args.json {
                    if added > 0 {
                        println!(
                            "approval extended to {} new items (created under the approved policy)",
                            output::thousands(added)
                        );
                    }
                    println!("re-queued {} failed copies", output::thousands(requeued));
                    output::print_copy(&summary, &args.state);
                }
                problems += summary.failed + summary.changed;
                let mut value = serde_json::to_value(&summary)?;
                value["requeued"] = requeued.into();
                value["approval_extended"] = added.into();
                report["copy"] = value;
            } else if !args.json {
                println!(
                    "nothing approved yet: review the plan (treeshift review --state {0}) and approve it (treeshift approve --state {0})",
                    args.state.display()
                );
            }
        }
        if args.json {
            report["calls"] = calls();
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Ok(exit_for(problems > 0))
    })
}

fn verify(args: VerifyArgs, keys: &KeyArgs) -> Result<Exit> {
    let summary = with_store(&args.state, OpenMode::Existing, |h| {
        run_verify(h, args.checksum, args.workers, keys)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        output::print_verify(&summary, &args.state);
    }
    Ok(exit_for(summary.mismatch + summary.failed > 0))
}

fn migrate(args: MigrateArgs, keys: &KeyArgs) -> Result<Exit> {
    let policy = parse_policy(&args.policy)?;
    let extras = args.extras.parse::<Extras>().map_err(usage)?;
    let d = &args.discover;
    let DiscoverySetup {
        filter,
        src,
        dst,
        mode,
        secrets,
    } = discovery_setup(d, keys)?;
    let fresh = !d.state.exists();
    with_store(&d.state, mode, |h| {
        credentials::record(h, secrets, keys)?;
        start_next_pass(h)?;
        let (summary, timing) = run_discovery(h, src, dst, &filter, d.workers)?;
        if !d.json {
            output::print_summary(&summary, &d.state);
        }
        if !args.yes {
            eprintln!(
                "treeshift: approval required: review the plan (treeshift review --state {0}), then approve it (treeshift approve --state {0}) and copy, or run migrate again with --yes",
                d.state.display()
            );
            return Ok(Exit::Approval);
        }
        let approval = h.approve(policy, extras, &approver())?;
        log_approval(&approval);
        if !d.json {
            output::print_approval(&approval);
        }
        let copied = run_copy(h, d.workers, keys)?;
        if !d.json {
            output::print_copy(&copied, &d.state);
        }
        let verified = run_verify(h, args.checksum, d.workers, keys)?;
        if d.json {
            let mut discovery = serde_json::to_value(&summary)?;
            discovery["timing"] = timing;
            let value = serde_json::json!({
                "discovery": discovery,
                "approval": approval,
                "copy": copied,
                "verify": verified,
                "calls": calls(),
            });
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            output::print_verify(&verified, &d.state);
        }
        Ok(exit_for(
            summary.failed
                + summary.invalid_name
                + copied.failed
                + copied.changed
                + verified.mismatch
                + verified.failed
                > 0,
        ))
    })
    .inspect_err(|e| forget_unstarted(&d.state, fresh, e))
}

fn status(args: StatusArgs) -> Result<Exit> {
    let (migration, phase, summary, approval, copied, verified, report) =
        with_store(&args.state, OpenMode::Existing, |h| {
            let approval = h.approval()?;
            let (copied, verified) = if approval.is_some() {
                (Some(h.copy_summary()?), h.verify_summary()?)
            } else {
                (None, None)
            };
            let migration = h.migration()?;
            let estimate = h.estimate(output::CopyCost::part_size(&migration))?;
            let report = (estimate, h.task_errors()?, h.queue_stats()?);
            Ok((
                migration,
                h.phase()?,
                h.summary()?,
                approval,
                copied,
                verified,
                report,
            ))
        })?;
    let (estimate, errors, rounds) = report;
    let cost = output::CopyCost::of(&migration, &estimate);
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["phase"] = phase.into();
        value["src_location"] = migration.src.into();
        value["dst_location"] = migration.dst.into();
        value["filter"] = serde_json::to_value(&migration.filter)?;
        value["dst_case_insensitive"] = migration.dst_case_insensitive.into();
        value["approval"] = serde_json::to_value(&approval)?;
        value["copy"] = serde_json::to_value(&copied)?;
        value["verify"] = serde_json::to_value(&verified)?;
        value["estimate"] = serde_json::to_value(&estimate)?;
        value["cost"] = serde_json::to_value(&cost)?;
        value["errors"] = serde_json::to_value(&errors)?;
        value["rounds"] = serde_json::to_value(&rounds)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("migration: {} -> {}", migration.src, migration.dst);
        if !migration.filter.is_empty() {
            println!("filters:   {}", migration.filter.rules().join(", "));
        }
        if migration.dst_case_insensitive {
            println!("names:     the destination is case-insensitive (case clashes are excluded)");
        }
        println!("phase:     {phase}");
        output::print_summary(&summary, &args.state);
        if let Some(a) = &approval {
            output::print_approval(a);
        }
        if let Some(c) = &copied {
            output::print_copy(c, &args.state);
        }
        if let Some(v) = &verified {
            output::print_verify(v, &args.state);
        }
        output::print_estimate(&estimate);
        if let Some(cost) = cost
            .as_ref()
            .filter(|_| estimate.files + estimate.folders > 0)
        {
            output::print_cost(cost);
        }
        output::print_errors(&errors);
    }
    let copy_problems = copied.map_or(0, |c| c.failed + c.changed);
    let verify_problems = verified.map_or(0, |v| v.mismatch + v.failed);
    Ok(exit_for(
        summary.failed + summary.invalid_name + copy_problems + verify_problems > 0,
    ))
}

fn review(args: ReviewArgs) -> Result<Exit> {
    let select = match args.status.as_str() {
        _ if args.changes => ReviewSelect::Changes,
        "all" => ReviewSelect::Actionable,
        "failed" => ReviewSelect::Failed,
        "copy-failed" => ReviewSelect::Copy(CopyStatus::Failed),
        "mismatch" => ReviewSelect::VerifyProblems,
        other => match (other.parse::<Status>(), other.parse::<CopyStatus>()) {
            (Ok(st), _) => ReviewSelect::Status(st),
            (_, Ok(cs)) if cs != CopyStatus::Failed => ReviewSelect::Copy(cs),
            _ => {
                return Err(usage(format!(
                    "unknown status '{other}'; expected one of missing, differs, conflict, same, extra, excluded, invalid-name, failed, all, pending, copying, copied, skipped, changed, copy-failed, mismatch"
                )));
            }
        },
    };
    let (store, _) = Store::open(&args.state, OpenMode::Existing)?;
    let handle = store.handle();
    let (tx, rx) = crossbeam_channel::bounded(4);
    let producer = std::thread::spawn(move || handle.review(select, tx));
    let printed = output::print_review(rx, args.format);
    let produced = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the review thread panicked"))?;
    store.close()?;
    produced?;
    printed?;
    Ok(Exit::Done)
}

fn logs(args: LogsArgs) -> Result<Exit> {
    let level = args.level.level().as_str();
    let mut after = 0;
    let mut told_busy = false;
    loop {
        let read = open_store(&args.state, OpenMode::Existing, false, |h| {
            let mut batch = h.logs(after, level, 10_000)?;
            while !batch.is_empty() {
                for entry in &batch {
                    match output::print_log(entry, args.json) {
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                            return Ok(false);
                        }
                        other => other?,
                    }
                }
                after = batch.last().map_or(after, |e| e.seq);
                batch = h.logs(after, level, 10_000)?;
            }
            Ok(true)
        });
        match read {
            Ok(false) => return Ok(Exit::Done), // the reader went away
            Ok(true) => told_busy = false,
            Err(e) if args.follow && is_in_use(&e) => {
                if !told_busy {
                    eprintln!(
                        "treeshift: the state file is in use by a running treeshift; new records appear when it is free"
                    );
                    told_busy = true;
                }
            }
            Err(e) => return Err(e),
        }
        if !args.follow {
            return Ok(Exit::Done);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn is_in_use(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<StoreError>(),
        Some(StoreError::InUse { .. })
    )
}
