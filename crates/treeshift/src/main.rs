//! The `treeshift` binary: parses flags, opens the state file, runs the
//! engine, prints results. Errors become `anyhow` with context only here.

mod cli;
mod output;
mod progress;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{Cli, Command, DiscoverArgs, ReviewArgs, StatusArgs};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use treeshift_core::{Filter, Status};
use treeshift_engine::{DiscoverOptions, DiscoveryProgress};
use treeshift_store::{MigrationSpec, OpenMode, ReviewSelect, Store};

/// Process exit codes of the CLI contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// Done.
    Done = 0,
    /// An error stopped the command.
    Error = 1,
    /// The command line was wrong.
    Usage = 2,
    /// Finished, but some items failed.
    FailedItems = 4,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(e) => {
            eprintln!("treeshift: error: {e:#}");
            let exit = if e.downcast_ref::<UsageError>().is_some() {
                Exit::Usage
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

/// Opens a location; malformed or unsupported ones are usage errors.
fn open_backend(location: &str, role: &str) -> Result<Arc<dyn treeshift_backend::Backend>> {
    use treeshift_backend::ErrorKind;
    treeshift_backend::open(location).map_err(|e| match e.kind {
        ErrorKind::Other | ErrorKind::Unsupported | ErrorKind::InvalidName => {
            usage(format!("{role}: {e}"))
        }
        _ => anyhow::Error::new(e).context(role.to_string()),
    })
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> Result<Exit> {
    match cli.command {
        Command::Discover(args) => discover(args),
        Command::Status(args) => status(args),
        Command::Review(args) => review(args),
    }
}

fn discover(args: DiscoverArgs) -> Result<Exit> {
    let filter = Filter::new(&args.excludes).map_err(usage)?;
    let src = open_backend(&args.src, "source")?;
    let dst = open_backend(&args.dst, "destination")?;
    let spec = MigrationSpec {
        src: src.describe(),
        dst: dst.describe(),
        excludes: args.excludes.clone(),
    };
    let (store, resumed) = Store::open(&args.state, OpenMode::CreateOrResume(spec))?;
    if resumed {
        tracing::info!(state = %args.state.display(), "resuming from the state file");
    }
    let display: Arc<dyn DiscoveryProgress> = if std::io::stderr().is_terminal() {
        Arc::new(progress::Bars::new())
    } else {
        Arc::new(progress::Lines::new())
    };
    let progress = Arc::new(progress::Timed::new(display));
    let options = DiscoverOptions {
        workers: usize::from(args.workers),
        ..DiscoverOptions::default()
    };
    let result = treeshift_engine::discover(
        &store.handle(),
        src,
        dst,
        &filter,
        &options,
        progress.clone(),
    );
    let close = store.close();
    let timing = serde_json::json!({
        "src_done_s": progress.done_secs(treeshift_core::Side::Src),
        "dst_done_s": progress.done_secs(treeshift_core::Side::Dst),
        "total_s": progress.elapsed_secs(),
    });
    drop(progress); // finishes the bars before the summary is printed
    let summary = result?;
    close.context("closing the state file")?;
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["timing"] = timing;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        output::print_summary(&summary, &args.state);
    }
    Ok(if summary.failed > 0 {
        Exit::FailedItems
    } else {
        Exit::Done
    })
}

fn status(args: StatusArgs) -> Result<Exit> {
    let (store, _) = Store::open(&args.state, OpenMode::Existing)?;
    let handle = store.handle();
    let migration = handle.migration()?;
    let phase = handle.phase()?;
    let summary = handle.summary()?;
    store.close()?;
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["phase"] = phase.into();
        value["src_location"] = migration.src.into();
        value["dst_location"] = migration.dst.into();
        value["excludes"] = migration.excludes.into();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("migration: {} -> {}", migration.src, migration.dst);
        if !migration.excludes.is_empty() {
            println!("excludes:  {}", migration.excludes.join(" "));
        }
        println!("phase:     {phase}");
        output::print_summary(&summary, &args.state);
    }
    Ok(if summary.failed > 0 {
        Exit::FailedItems
    } else {
        Exit::Done
    })
}

fn review(args: ReviewArgs) -> Result<Exit> {
    let select = match args.status.as_str() {
        "all" => ReviewSelect::Actionable,
        "failed" => ReviewSelect::Failed,
        other => ReviewSelect::Status(other.parse::<Status>().map_err(|e| {
            usage(format!("{e}; expected one of missing, differs, conflict, same, extra, excluded, failed, all"))
        })?),
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
