//! The `treeshift` binary: parses flags, runs one lifecycle operation
//! (`treeshift-lifecycle`) and prints its typed result, for a person or
//! as JSON. Errors become `anyhow` with context only here.

mod cli;
mod keep;
mod keys;
mod logging;
mod output;
mod progress;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{
    ApproveArgs, Cli, Command, ConnectionCommand, ConnectionSetArgs, ConnectionsArgs, CopyArgs,
    DiscoverArgs, LogsArgs, MigrateArgs, RekeyArgs, RetryArgs, RetryPhase, ReviewArgs, ServeArgs,
    SetSecretArgs, SideArg, StatusArgs, VerifyArgs, WorkerArgs, WorkerSide,
};
use keys::CliKeys;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use treeshift_core::{Extras, Keep, Policy, RelPath, Side};
use treeshift_engine::{DiscoveryProgress, EngineError};
use treeshift_lifecycle::{
    Calls, Cancel, DiscoveryReport, DiscoveryRequest, ErrorClass, LifecycleError, Limits,
    Migration, OpenState, SecretSource, StateHandle,
};
use treeshift_store::{OpenMode, ReviewSelect, StoreError};

/// Makes glibc give every allocation of 1 MiB or more its own mapping,
/// returned to the system when freed. By default glibc raises that
/// threshold to the largest block freed so far, after which the 8 MiB
/// buffers of uploads come from per-thread arenas that keep them when
/// freed: with 32 transfer threads, a copy of large files to S3 peaked at
/// about three times the memory it had in use (docs/BENCHMARKS.md).
#[allow(unsafe_code)]
fn return_large_blocks_at_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt changes a setting of the allocator; it is called
    // first in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

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
    /// Stopped on request (SIGINT, SIGTERM); run again to go on.
    Cancelled = 130,
}

fn main() -> ExitCode {
    return_large_blocks_at_once();
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
            ExitCode::from(exit_for_error(&e) as u8)
        }
    }
}

/// The exit code an error gives.
fn exit_for_error(e: &anyhow::Error) -> Exit {
    if e.downcast_ref::<UsageError>().is_some() {
        return Exit::Usage;
    }
    let engine = |e: &EngineError| match e {
        EngineError::ApprovalRequired(_) => Exit::Approval,
        EngineError::Cancelled => Exit::Cancelled,
        _ => Exit::Error,
    };
    if let Some(e) = e.downcast_ref::<LifecycleError>() {
        return match (e, e.class()) {
            (LifecycleError::Engine(e), _) => engine(e),
            (_, ErrorClass::Input) => Exit::Usage,
            (_, ErrorClass::Approval) => Exit::Approval,
            (_, ErrorClass::Failure) => Exit::Error,
        };
    }
    e.downcast_ref::<EngineError>().map_or(Exit::Error, engine)
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

/// What every command shares: the keys, the request limits, and the token
/// a first SIGINT or SIGTERM raises (a second one ends the process at
/// once).
struct Session {
    keys: Arc<CliKeys>,
    limits: Limits,
    cancel: Cancel,
}

impl Session {
    fn new(cli: &Cli) -> Result<Session> {
        let cancel = Cancel::new();
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(
                signal,
                Exit::Cancelled as i32,
                cancel.flag(),
            )?;
            signal_hook::flag::register(signal, cancel.flag())?;
        }
        Ok(Session {
            keys: Arc::new(CliKeys {
                args: cli.key.clone(),
                interactive: !matches!(cli.command, Command::Serve(_)),
            }),
            limits: Limits {
                src_tps: cli.src_tps,
                dst_tps: cli.dst_tps,
                lease_time: cli
                    .lease_time
                    .map(|s| std::time::Duration::from_secs(s.into())),
            },
            cancel,
        })
    }

    /// Opens an existing state file's migration, its log records going to
    /// the file while it is open.
    fn open(&self, state: &Path) -> Result<Migration> {
        let m = Migration::open(state, self.keys.clone(), self.limits)?;
        logging::table().attach(m.handle().clone());
        Ok(m)
    }
}

/// Closes a migration: its log records are flushed and the file committed.
fn close(m: Migration) -> Result<()> {
    logging::table().detach();
    m.close().context("closing the migration's state")
}

/// Runs `f` on an open migration and closes it, whatever `f` returned.
fn with_migration<T>(m: Migration, f: impl FnOnce(&Migration) -> Result<T>) -> Result<T> {
    let result = f(&m);
    let closed = close(m);
    let value = result?;
    closed?;
    Ok(value)
}

fn run(cli: Cli) -> Result<Exit> {
    let ctx = Session::new(&cli)?;
    match cli.command {
        Command::Discover(args) => discover(args, &ctx),
        Command::Status(args) => status(args, &ctx),
        Command::Review(args) => review(args),
        Command::Approve(args) => approve(args, &ctx),
        Command::Copy(args) => copy(args, &ctx),
        Command::Verify(args) => verify(args, &ctx),
        Command::Migrate(args) => migrate(args, &ctx),
        Command::Retry(args) => retry(args, &ctx),
        Command::Logs(args) => logs(args),
        Command::Connections(args) => connections(args, &ctx),
        Command::Connection(ConnectionCommand::Set(args)) => connection_set(args, &ctx),
        Command::Connection(ConnectionCommand::SetSecret(args)) => {
            connection_set_secret(args, &ctx)
        }
        Command::Rekey(args) => rekey(args, &ctx),
        Command::Serve(args) => serve(args, &ctx),
        Command::Worker(args) => worker(args, &ctx),
    }
}

fn serve(args: ServeArgs, ctx: &Session) -> Result<Exit> {
    if ctx.keys.args.ask_passphrase {
        return Err(usage(
            "serve asks nothing on a terminal: give --passphrase-file FILE or set TREESHIFT_MASTER_KEY",
        ));
    }
    let token = match &args.token_file {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                usage(format!(
                    "cannot read the token file {}: {e}",
                    file.display()
                ))
            })?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            if token.len() < 16 {
                return Err(usage(format!(
                    "the token in {} is shorter than 16 characters",
                    file.display()
                )));
            }
            Some(token)
        }
        None => None,
    };
    let config = treeshift_server::Config {
        dir: args.dir.clone(),
        listen: args.listen,
        token,
        limits: ctx.limits,
        logs: logging::routes(),
        idle_close: std::time::Duration::from_secs(args.idle_close),
    };
    treeshift_server::serve(config, ctx.keys.clone(), ctx.cancel.clone(), |addr| {
        eprintln!(
            "treeshift: serving {} on http://{addr}/api/migrations",
            args.dir.display()
        );
    })
    .map_err(usage)?;
    Ok(Exit::Done)
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

/// Progress for a discovery: bars on a terminal, lines otherwise.
fn discovery_progress() -> Arc<dyn DiscoveryProgress> {
    if std::io::stderr().is_terminal() {
        Arc::new(progress::Bars::new())
    } else {
        Arc::new(progress::Lines::new())
    }
}

/// Says that a delta pass started, if one did.
fn start_next_pass(m: &Migration) -> Result<()> {
    if let Some(pass) = m.start_next_pass()? {
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

/// The destination's options, with those `--folder-markers` and
/// `--compare` stand for.
fn dst_options(args: &DiscoverArgs) -> Result<Vec<String>> {
    let mut options = args.dst_opt.clone();
    // A flag that is an object store's option, refused with `why` where
    // the destination's service does not take it.
    let mut object_store_flag = |flag: &str, key: &str, value: &str, why: &str| {
        if !treeshift_backend::remote::takes_option(&args.dst, key) {
            return Err(usage(format!(
                "{flag} is for object stores (s3://, azblob://, gcs://): {} {why}",
                args.dst
            )));
        }
        options.push(format!("{key}={value}"));
        Ok(())
    };
    if args.folder_markers {
        object_store_flag(
            "--folder-markers",
            "folder_markers",
            "true",
            "holds folders of its own",
        )?;
    }
    if let Some(by) = args.compare {
        object_store_flag(
            "--compare",
            "compare",
            by.as_str(),
            "lists each file's own mtime",
        )?;
    }
    Ok(options)
}

/// Opens both backends and the state file of a discovery, and says which
/// side's secrets could not be kept.
fn prepare_discovery(args: &DiscoverArgs, ctx: &Session) -> Result<Migration> {
    let keep: Keep = keep::resolve(
        args.keep.owners.as_deref(),
        args.keep.xattrs,
        args.keep.acls,
        args.keep.hard_links,
    )
    .map_err(|e| usage(format!("{e:#}")))?;
    let request = DiscoveryRequest {
        state: args.state.clone(),
        src: with_options(&args.src, &args.src_opt)?,
        dst: with_options(&args.dst, &dst_options(args)?)?,
        secrets: [&args.src_secret_file, &args.dst_secret_file].map(|file| {
            file.clone()
                .map_or(SecretSource::Environment, SecretSource::File)
        }),
        filter: args.filter.spec(),
        dst_case_insensitive: args.dst_case_insensitive,
        keep,
    };
    let m = Migration::prepare_discovery(&request, ctx.keys.clone(), ctx.limits)?;
    logging::table().attach(m.handle().clone());
    let not_kept: Vec<&str> = m
        .secrets_not_kept()
        .iter()
        .map(|s| match s {
            Side::Src => "source",
            Side::Dst => "destination",
        })
        .collect();
    if !not_kept.is_empty() {
        eprintln!(
            "treeshift: note: the {} secrets are read from the environment on every run, not kept: set {} (or give --passphrase-file) to seal them in the state file",
            not_kept.join(" and "),
            keys::MASTER_KEY_ENV
        );
    }
    Ok(m)
}

/// Runs `f` on a prepared discovery and closes it; a first discovery that
/// could not start leaves no state file.
fn with_discovery<T>(m: Migration, f: impl FnOnce(&Migration) -> Result<T>) -> Result<T> {
    match f(&m) {
        Ok(value) => {
            close(m)?;
            Ok(value)
        }
        Err(e) => {
            logging::table().detach();
            match e.downcast_ref::<LifecycleError>() {
                Some(le) => m.close_after(le),
                None => drop(m),
            }
            Err(e)
        }
    }
}

/// Joins a discovery whose state is in PostgreSQL, until it is done.
fn worker(args: WorkerArgs, ctx: &Session) -> Result<Exit> {
    if !treeshift_lifecycle::state::is_database(&args.state) {
        return Err(usage(
            "worker joins a migration whose state is in PostgreSQL (--state postgres://...); \
             a state file is discovered by one process: run discover again to resume it",
        ));
    }
    let m = ctx.open(&args.state)?;
    let workers = usize::from(args.workers);
    let side = match args.side {
        WorkerSide::Both => None,
        WorkerSide::Src => Some(Side::Src),
        WorkerSide::Dst => Some(Side::Dst),
    };
    let (report, copied, calls) = with_migration(m, |m| {
        let report = m.discover_side(side, workers, discovery_progress(), &ctx.cancel)?;
        let copied = match side.is_none() && m.copy_to_join()? {
            true => {
                let progress = progress::Transfer::new("copy", true);
                Some(m.copy(workers, &progress, &ctx.cancel)?)
            }
            false => None,
        };
        Ok((report, copied, m.calls()))
    })?;
    let Some(copied) = copied else {
        return print_discovery(&report, &calls, args.json, &args.state);
    };
    if args.json {
        print_json(
            &serde_json::json!({ "calls": calls, "copy": copied }),
            Some(&report),
        )?;
    } else {
        output::print_summary(&report.summary, &args.state);
        output::print_copy(&copied, &args.state);
    }
    Ok(exit_for(
        report.summary.failed + report.summary.invalid_name + copied.failed + copied.changed > 0,
    ))
}

fn discover(args: DiscoverArgs, ctx: &Session) -> Result<Exit> {
    let m = prepare_discovery(&args, ctx)?;
    let (report, calls) = with_discovery(m, |m| {
        start_next_pass(m)?;
        let report = m.discover(usize::from(args.workers), discovery_progress(), &ctx.cancel)?;
        Ok((report, m.calls()))
    })?;
    print_discovery(&report, &calls, args.json, &args.state)
}

/// Prints what a discovery found (as JSON, with the calls each side
/// made, if asked); the exit status says whether anything failed.
fn print_discovery(
    report: &DiscoveryReport,
    calls: &Calls,
    json: bool,
    state: &Path,
) -> Result<Exit> {
    if json {
        print_json(&serde_json::json!({ "calls": calls }), Some(report))?;
    } else {
        output::print_summary(&report.summary, state);
    }
    Ok(exit_for(
        report.summary.failed + report.summary.invalid_name > 0,
    ))
}

/// Prints `value` as pretty JSON, with the fields of `first` before its
/// own (a typed result with what this command adds).
fn print_json(extra: &serde_json::Value, first: Option<&impl serde::Serialize>) -> Result<()> {
    let mut value = match first {
        Some(v) => serde_json::to_value(v)?,
        None => serde_json::json!({}),
    };
    if let (Some(out), Some(more)) = (value.as_object_mut(), extra.as_object()) {
        out.extend(more.clone());
    }
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

fn exit_for(failed_items: bool) -> Exit {
    if failed_items {
        Exit::FailedItems
    } else {
        Exit::Done
    }
}

fn approve(args: ApproveArgs, ctx: &Session) -> Result<Exit> {
    let policy = parse_policy(&args.policy)?;
    let extras = args.extras.parse::<Extras>().map_err(usage)?;
    let report = with_migration(ctx.open(&args.state)?, |m| {
        Ok(m.approve(policy, extras, &approver())?)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        output::print_approval(&report.approval);
        if let Some(cost) = &report.cost {
            output::print_cost(cost);
        }
        println!("next: treeshift copy --state {}", args.state.display());
    }
    Ok(Exit::Done)
}

fn copy(args: CopyArgs, ctx: &Session) -> Result<Exit> {
    let (summary, calls) = with_migration(ctx.open(&args.state)?, |m| {
        let progress = progress::Transfer::new("copy", true);
        let summary = m.copy(usize::from(args.workers), &progress, &ctx.cancel)?;
        Ok((summary, m.calls()))
    })?;
    if args.json {
        print_json(&serde_json::json!({ "calls": calls }), Some(&summary))?;
    } else {
        output::print_copy(&summary, &args.state);
    }
    Ok(exit_for(summary.failed + summary.changed > 0))
}

fn retry(args: RetryArgs, ctx: &Session) -> Result<Exit> {
    let prefix = args.path.as_deref().map(RelPath::from_typed);
    let discovery = args.phase != Some(RetryPhase::Copy);
    let copying = args.phase != Some(RetryPhase::Discovery);
    with_migration(ctx.open(&args.state)?, |m| {
        let mut report = serde_json::json!({});
        let mut problems = 0;
        if discovery {
            let swept = m.retry_discovery(
                prefix.clone(),
                usize::from(args.workers),
                discovery_progress(),
                &ctx.cancel,
            )?;
            if !args.json {
                let r = swept.requeued;
                println!(
                    "re-queued {} failed folders ({} source, {} destination)",
                    output::thousands(r.total()),
                    output::thousands(r.src),
                    output::thousands(r.dst)
                );
                if let Some(summary) = &swept.summary {
                    output::print_summary(summary, &args.state);
                }
            }
            problems += swept.summary.as_ref().map_or(0, |s| s.failed);
            report["discovery"] = serde_json::to_value(&swept)?;
        }
        if copying {
            if !discovery {
                m.require_approval()?;
            }
            let progress = progress::Transfer::new("copy", true);
            match m.retry_copy(prefix, usize::from(args.workers), &progress, &ctx.cancel)? {
                Some(swept) => {
                    if !args.json {
                        if swept.approval_extended > 0 {
                            println!(
                                "approval extended to {} new items (created under the approved policy)",
                                output::thousands(swept.approval_extended)
                            );
                        }
                        println!(
                            "re-queued {} failed copies",
                            output::thousands(swept.requeued)
                        );
                        output::print_copy(&swept.summary, &args.state);
                    }
                    problems += swept.summary.failed + swept.summary.changed;
                    report["copy"] = serde_json::to_value(&swept)?;
                }
                None if !args.json => println!(
                    "nothing approved yet: review the plan (treeshift review --state {0}) and approve it (treeshift approve --state {0})",
                    args.state.display()
                ),
                None => {}
            }
        }
        if args.json {
            report["calls"] = serde_json::to_value(m.calls())?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Ok(exit_for(problems > 0))
    })
}

fn verify(args: VerifyArgs, ctx: &Session) -> Result<Exit> {
    let (summary, calls) = with_migration(ctx.open(&args.state)?, |m| {
        let progress = progress::Transfer::new("verify", false);
        let summary = m.verify(
            args.checksum,
            usize::from(args.workers),
            &progress,
            &ctx.cancel,
        )?;
        Ok((summary, m.calls()))
    })?;
    if args.json {
        print_json(&serde_json::json!({ "calls": calls }), Some(&summary))?;
    } else {
        output::print_verify(&summary, &args.state);
    }
    Ok(exit_for(summary.mismatch + summary.failed > 0))
}

fn migrate(args: MigrateArgs, ctx: &Session) -> Result<Exit> {
    let policy = parse_policy(&args.policy)?;
    let extras = args.extras.parse::<Extras>().map_err(usage)?;
    let d = &args.discover;
    let m = prepare_discovery(d, ctx)?;
    with_discovery(m, |m| {
        start_next_pass(m)?;
        let workers = usize::from(d.workers);
        let discovered = m.discover(workers, discovery_progress(), &ctx.cancel)?;
        if !d.json {
            output::print_summary(&discovered.summary, &d.state);
        }
        if !args.yes {
            eprintln!(
                "treeshift: approval required: review the plan (treeshift review --state {0}), then approve it (treeshift approve --state {0}) and copy, or run migrate again with --yes",
                d.state.display()
            );
            return Ok(Exit::Approval);
        }
        let approved = m.approve(policy, extras, &approver())?;
        if !d.json {
            output::print_approval(&approved.approval);
        }
        let copied = m.copy(workers, &progress::Transfer::new("copy", true), &ctx.cancel)?;
        if !d.json {
            output::print_copy(&copied, &d.state);
        }
        let progress = progress::Transfer::new("verify", false);
        let verified = m.verify(args.checksum, workers, &progress, &ctx.cancel)?;
        if d.json {
            let value = serde_json::json!({
                "discovery": discovered,
                "approval": approved.approval,
                "copy": copied,
                "verify": verified,
                "calls": m.calls(),
            });
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            output::print_verify(&verified, &d.state);
        }
        let s = &discovered.summary;
        Ok(exit_for(
            s.failed
                + s.invalid_name
                + copied.failed
                + copied.changed
                + verified.mismatch
                + verified.failed
                > 0,
        ))
    })
}

fn status(args: StatusArgs, ctx: &Session) -> Result<Exit> {
    let report = with_migration(ctx.open(&args.state)?, |m| Ok(m.status()?))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "migration: {} -> {}",
            report.src_location, report.dst_location
        );
        if !report.filter.is_empty() {
            println!("filters:   {}", report.filter.rules().join(", "));
        }
        if report.dst_case_insensitive {
            println!("names:     the destination is case-insensitive (case clashes are excluded)");
        }
        println!("phase:     {}", report.phase);
        output::print_summary(&report.summary, &args.state);
        if let Some(a) = &report.approval {
            output::print_approval(a);
        }
        if let Some(c) = &report.copy {
            output::print_copy(c, &args.state);
        }
        if let Some(v) = &report.verify {
            output::print_verify(v, &args.state);
        }
        output::print_estimate(&report.estimate);
        if let Some(cost) = report
            .cost
            .as_ref()
            .filter(|_| report.estimate.files + report.estimate.folders > 0)
        {
            output::print_cost(cost);
        }
        output::print_errors(&report.errors);
        output::print_workers(&report.workers);
    }
    Ok(exit_for(report.has_problems()))
}

fn side(arg: SideArg) -> Side {
    match arg {
        SideArg::Src => Side::Src,
        SideArg::Dst => Side::Dst,
    }
}

fn connections(args: ConnectionsArgs, ctx: &Session) -> Result<Exit> {
    let (view, spec) = with_migration(ctx.open(&args.state)?, |m| {
        Ok((
            treeshift_lifecycle::connections::list(m.handle())?,
            m.handle().migration()?,
        ))
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(Exit::Done);
    }
    if view.connections.is_empty() {
        println!("no connection recorded (the migration reads its secrets from the environment)");
        println!("source:      {}", spec.src);
        println!("destination: {}", spec.dst);
        return Ok(Exit::Done);
    }
    for c in &view.connections {
        println!("{} {} ({}) {}", c.side, c.id, c.kind, c.location);
        match (c.secrets.is_empty(), c.takes_secrets) {
            (true, true) => {
                println!("    secrets: none kept (read from the environment on every run)")
            }
            (true, false) => println!("    secrets: none (it takes none)"),
            _ => {}
        }
        for (name, masked) in &c.secrets {
            println!("    {name}={masked}");
        }
        println!("    updated: {}", c.updated_at);
    }
    match view.sealed_under {
        Some(kind) => println!("sealed under a {}", kind.replace('-', " ")),
        None => println!("nothing sealed"),
    }
    Ok(Exit::Done)
}

fn connection_set(args: ConnectionSetArgs, ctx: &Session) -> Result<Exit> {
    let side = side(args.side);
    let names = with_migration(ctx.open(&args.state)?, |m| {
        Ok(treeshift_lifecycle::connections::set(
            m.handle(),
            side,
            &args
                .secret_file
                .clone()
                .map_or(SecretSource::Environment, SecretSource::File),
            ctx.keys.as_ref(),
        )?)
    })?;
    println!("{side}: sealed {}", names.join(", "));
    Ok(Exit::Done)
}

fn connection_set_secret(args: SetSecretArgs, ctx: &Session) -> Result<Exit> {
    let side = side(args.side);
    with_migration(ctx.open(&args.state)?, |m| {
        let value = keys::read_value(&args.name)?;
        Ok(treeshift_lifecycle::connections::set_secret(
            m.handle(),
            side,
            &args.name,
            value,
            ctx.keys.as_ref(),
        )?)
    })?;
    println!("{side}: sealed {}", args.name);
    Ok(Exit::Done)
}

fn rekey(args: RekeyArgs, ctx: &Session) -> Result<Exit> {
    let new_key = keys::new_key(&args)?;
    let count = with_migration(ctx.open(&args.state)?, |m| {
        Ok(treeshift_lifecycle::connections::rekey(
            m.handle(),
            ctx.keys.as_ref(),
            &new_key,
        )?)
    })?;
    println!(
        "sealed {count} connection(s) under a new data key, wrapped under the new {}",
        new_key.kind()
    );
    Ok(Exit::Done)
}

/// Opens the state file without logging to it (reading logs must not
/// write any).
fn read_store<T>(path: &Path, f: impl FnOnce(&StateHandle) -> Result<T>) -> Result<T> {
    let (state, _) = OpenState::open(path, OpenMode::Existing, None)?;
    let result = f(state.handle());
    let closed = state.close();
    let value = result?;
    closed.context("closing the migration's state")?;
    Ok(value)
}

fn review(args: ReviewArgs) -> Result<Exit> {
    let select = match args.changes {
        true => ReviewSelect::Changes,
        false => args.status.parse::<ReviewSelect>().map_err(usage)?,
    };
    let (state, _) = OpenState::open(&args.state, OpenMode::Existing, None)?;
    let handle = state.handle().clone();
    let (tx, rx) = crossbeam_channel::bounded(4);
    let producer = std::thread::spawn(move || handle.review(select, tx));
    let printed = output::print_review(rx, args.format);
    let produced = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the review thread panicked"))?;
    state.close()?;
    produced?;
    printed?;
    Ok(Exit::Done)
}

fn logs(args: LogsArgs) -> Result<Exit> {
    let level = args.level.level().as_str();
    let mut after = 0;
    let mut told_busy = false;
    loop {
        let read = read_store(&args.state, |h| {
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
