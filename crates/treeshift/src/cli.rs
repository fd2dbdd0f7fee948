//! Command-line flags (clap). Resolved into engine calls in `main.rs`.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use treeshift_core::{FilterSpec, parse_size, parse_time};

/// One-way migration of a source tree to a destination tree.
#[derive(Debug, Parser)]
#[command(name = "treeshift", version, about)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Also send log records, one JSON object per datagram, to this UDP
    /// address (e.g. 127.0.0.1:5140).
    #[arg(long, value_name = "ADDR", global = true)]
    pub log_udp: Option<std::net::SocketAddr>,
    /// The least severe level sent to --log-udp.
    #[arg(long, value_enum, default_value_t = LogLevel::Info, global = true)]
    pub log_udp_level: LogLevel,
    /// Requests a second to the source, at most (remote storage only;
    /// throttled requests are retried whatever the limit).
    #[arg(long, value_name = "N", global = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub src_tps: Option<u32>,
    /// Requests a second to the destination, at most (remote storage only).
    #[arg(long, value_name = "N", global = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub dst_tps: Option<u32>,
    /// With the state in PostgreSQL: how long this process's hold on a
    /// folder or a copy item lasts unless renewed (it renews three times a
    /// lease), which is how long its share waits for the others if it dies
    /// [default: 30].
    #[arg(long, value_name = "SECS", global = true, value_parser = clap::value_parser!(u16).range(1..=3600))]
    pub lease_time: Option<u16>,
    /// The key that opens the secrets sealed in the state file.
    #[command(flatten)]
    pub key: KeyArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the key that seals a migration's secrets comes from, besides
/// `TREESHIFT_MASTER_KEY` (32 bytes in base64) in the environment.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct KeyArgs {
    /// A file whose first line is the passphrase that seals (or opens) the
    /// migration's secrets, stretched with Argon2id; instead of
    /// TREESHIFT_MASTER_KEY.
    #[arg(long, value_name = "FILE", global = true)]
    pub passphrase_file: Option<PathBuf>,
    /// Ask for that passphrase on the terminal (it is asked anyway when the
    /// secrets are sealed under one and no file is given).
    #[arg(long, global = true, conflicts_with = "passphrase_file")]
    pub ask_passphrase: bool,
}

/// The commands of the CLI contract.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Walk both trees and record what a copy would do (resumes if the state
    /// file already holds this migration).
    Discover(DiscoverArgs),
    /// Show the summary and progress of a migration.
    Status(StatusArgs),
    /// List items by status.
    Review(ReviewArgs),
    /// Approve the plan discovery produced (records it with its hash).
    Approve(ApproveArgs),
    /// Copy exactly the approved plan (resumes a stopped copy).
    Copy(CopyArgs),
    /// Re-read every copied item on the destination and compare.
    Verify(VerifyArgs),
    /// Discover, approve, copy and verify in one go.
    Migrate(MigrateArgs),
    /// After fixing the cause: list the folders whose listing failed again
    /// (walking their subtrees) and copy the items whose copy failed again;
    /// nothing that succeeded is redone.
    Retry(RetryArgs),
    /// Print the log records kept in the state file.
    Logs(LogsArgs),
    /// List the migration's connections, secrets masked.
    Connections(ConnectionsArgs),
    /// Set a connection's secrets (sealed in the state file).
    #[command(subcommand)]
    Connection(ConnectionCommand),
    /// Seal the migration's secrets under a new key (the old one no longer
    /// opens them).
    Rekey(RekeyArgs),
    /// Serve the HTTP API over the migrations in a folder (one state file
    /// each).
    Serve(ServeArgs),
    /// Join a migration whose state is in PostgreSQL (started by
    /// discover): list folders of both sides beside the other workers, on
    /// this host or any other, until discovery is done; then, if a plan is
    /// approved and its copy not finished, copy beside them until it is.
    Worker(WorkerArgs),
}

/// `worker --state postgres://...`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The migration's state: a PostgreSQL database that discover made
    /// (postgres://USER@HOST:PORT/DB).
    #[arg(long)]
    pub state: PathBuf,
    /// Folders listed at once per side, and items copied at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
    /// Which tree's folders this worker lists: both (and then it copies
    /// too), or src or dst alone (a host near one tree; it does not copy).
    #[arg(long, value_enum, default_value_t = WorkerSide::Both)]
    pub side: WorkerSide,
    /// Print the summary (and the copy's, as `copy`) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What a worker takes part in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkerSide {
    /// Both trees' listings, then the copy.
    Both,
    /// The source's listings.
    Src,
    /// The destination's listings.
    Dst,
}

/// `serve --dir DIR`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The folder of the migrations' state files (NAME.duckdb).
    #[arg(long)]
    pub dir: PathBuf,
    /// The address to listen on; anything but loopback needs --token-file.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: std::net::SocketAddr,
    /// A file whose first line is the token every request must carry
    /// (Authorization: Bearer TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Close a migration's state file after this many seconds unused with
    /// no job running, so that the CLI can open it meanwhile.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub idle_close: u64,
}

/// `connections --state FILE`.
#[derive(Debug, clap::Args)]
pub struct ConnectionsArgs {
    /// The state file.
    #[arg(long)]
    pub state: PathBuf,
    /// Print them as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `connection set|set-secret`.
#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    /// Replace all of one side's secrets, from a secret file or else from
    /// the environment (the same names the service's tools read).
    Set(ConnectionSetArgs),
    /// Replace one secret (a rotated key): its value is read from stdin
    /// (asked without echo on a terminal).
    SetSecret(SetSecretArgs),
}

/// Which side a connection serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SideArg {
    /// The source.
    Src,
    /// The destination.
    Dst,
}

/// `connection set --state FILE --side S`.
#[derive(Debug, clap::Args)]
pub struct ConnectionSetArgs {
    /// The state file.
    #[arg(long)]
    pub state: PathBuf,
    /// The side.
    #[arg(long, value_enum)]
    pub side: SideArg,
    /// A file of NAME=VALUE lines (AWS_SECRET_ACCESS_KEY=..., as the
    /// service's environment variables are named); without it, the
    /// environment.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
}

/// `connection set-secret --state FILE --side S NAME`.
#[derive(Debug, clap::Args)]
pub struct SetSecretArgs {
    /// The state file.
    #[arg(long)]
    pub state: PathBuf,
    /// The side.
    #[arg(long, value_enum)]
    pub side: SideArg,
    /// The secret's name (e.g. AWS_SECRET_ACCESS_KEY, SSH_PRIVATE_KEY).
    pub name: String,
}

/// `rekey --state FILE`.
#[derive(Debug, clap::Args)]
pub struct RekeyArgs {
    /// The state file.
    #[arg(long)]
    pub state: PathBuf,
    /// A file holding the new master key (32 bytes in base64); or set
    /// TREESHIFT_NEW_MASTER_KEY.
    #[arg(long, value_name = "FILE")]
    pub new_master_key_file: Option<PathBuf>,
    /// A file whose first line is the new passphrase.
    #[arg(long, value_name = "FILE", conflicts_with = "new_master_key_file")]
    pub new_passphrase_file: Option<PathBuf>,
    /// Ask for the new passphrase on the terminal.
    #[arg(long, conflicts_with_all = ["new_master_key_file", "new_passphrase_file"])]
    pub ask_new_passphrase: bool,
}

/// Log levels, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Progress of rounds, passes and sweeps (what the state file keeps).
    Info,
    /// Details.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// As `tracing` names it.
    pub fn level(self) -> tracing::Level {
        match self {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// `logs --state FILE`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The state file, or a PostgreSQL database (postgres://...).
    #[arg(long)]
    pub state: PathBuf,
    /// The least severe level printed (the state file keeps info and above).
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub level: LogLevel,
    /// Keep printing records as they arrive (polls the state file; while a
    /// run holds it, records appear when it is free: use --log-udp on that
    /// run for live logs).
    #[arg(long)]
    pub follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// Which part of a migration a retry sweep redoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RetryPhase {
    /// Folders whose listing failed (and their subtrees).
    Discovery,
    /// Items whose copy failed.
    Copy,
}

/// `retry --state FILE`.
#[derive(Debug, clap::Args)]
pub struct RetryArgs {
    /// The state file.
    #[arg(long)]
    pub state: PathBuf,
    /// Only this phase (default: discovery, then copy if a plan was
    /// approved).
    #[arg(long, value_enum)]
    pub phase: Option<RetryPhase>,
    /// Only the failed items at or under this path (relative to the roots).
    #[arg(long)]
    pub path: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Items copied at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
}

/// `approve --state FILE`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The state file.
    #[arg(long)]
    pub state: PathBuf,
    /// What to do with destination items that differ from the source:
    /// skip (leave them), overwrite (replace them), newer (replace files
    /// older than the source's), rename (move them aside, then copy).
    #[arg(long, default_value = "skip")]
    pub policy: String,
    /// What to do with destination items the source does not have: leave
    /// them, or move them into .treeshift-quarantine/pass-N/ on the
    /// destination (nothing is ever deleted).
    #[arg(long, default_value = "leave")]
    pub extras: String,
    /// Print the approval as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `copy --state FILE`.
#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The state file.
    #[arg(long)]
    pub state: PathBuf,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Items copied at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
}

/// `verify --state FILE`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The state file.
    #[arg(long)]
    pub state: PathBuf,
    /// Also compare content hashes (BLAKE3), reading both sides in full.
    #[arg(long)]
    pub checksum: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Items checked at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
}

/// `migrate SRC DST --state FILE --yes`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// What to discover (source, destination, state file, filters).
    #[command(flatten)]
    pub discover: DiscoverArgs,
    /// Approve the plan without review (without it, migrate stops after
    /// discovery with exit code 3).
    #[arg(long)]
    pub yes: bool,
    /// The policy for items that differ (see `approve --policy`).
    #[arg(long, default_value = "skip")]
    pub policy: String,
    /// What to do with destination extras (see `approve --extras`).
    #[arg(long, default_value = "leave")]
    pub extras: String,
    /// Verify with content hashes.
    #[arg(long)]
    pub checksum: bool,
}

/// `discover SRC DST --state FILE`.
#[derive(Debug, clap::Args)]
pub struct DiscoverArgs {
    /// Source: a local path, file:///path, sim:key=value,..., or remote
    /// storage (s3://bucket/prefix, azblob://container/prefix,
    /// gcs://bucket/prefix).
    pub src: String,
    /// Destination: same forms as the source.
    pub dst: String,
    /// An option of a remote source (as in its location's query string,
    /// e.g. region=eu-west-1); repeatable. Recorded with the migration.
    #[arg(long, value_name = "KEY=VALUE")]
    pub src_opt: Vec<String>,
    /// An option of a remote destination; repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub dst_opt: Vec<String>,
    /// Towards an object store (s3, azblob, gcs): keep each empty folder as
    /// a zero-byte `name/` marker object (the option folder_markers=true).
    /// Without it such a store holds no empty folder: the plan leaves them
    /// alone, with the reason. Recorded with the migration.
    #[arg(long)]
    pub folder_markers: bool,
    /// Towards an object store: how an object treeshift did not write is
    /// compared when size and listed MD5 cannot tell (the option
    /// compare=...). `size` (the default): by size, no request per object;
    /// `meta-mtime`: also by the mtime in its metadata (rclone's key), one
    /// HEAD per object on every discovery, as rclone. What treeshift wrote
    /// is told by its record either way. Recorded with the migration.
    #[arg(long, value_name = "size|meta-mtime")]
    pub compare: Option<CompareBy>,
    /// The source's secrets: a file of NAME=VALUE lines named as the
    /// service's environment variables (AWS_SECRET_ACCESS_KEY=...). Sealed
    /// in the state file when a key is given; without it, the environment.
    #[arg(long, value_name = "FILE")]
    pub src_secret_file: Option<PathBuf>,
    /// The destination's secrets, as --src-secret-file.
    #[arg(long, value_name = "FILE")]
    pub dst_secret_file: Option<PathBuf>,
    /// The state file (created, or resumed if it holds this migration),
    /// or a PostgreSQL database (postgres://USER@HOST:PORT/DB) that
    /// `treeshift worker` processes on other hosts join.
    #[arg(long)]
    pub state: PathBuf,
    /// The filter rules.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The destination holds names that differ only in letter case as one
    /// (SMB and NTFS shares, APFS by default, casefolded ext4 folders): of
    /// such source siblings only the first is planned, the others are
    /// excluded with the reason. Recorded in the state file.
    #[arg(long)]
    pub dst_case_insensitive: bool,
    /// What the migration keeps besides data and mtimes.
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Folders listed at once per side.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
}

/// What a migration keeps besides data and mtimes (modes always). Recorded
/// in the state file; a resumed discovery must give the same.
#[derive(Debug, clap::Args)]
pub struct KeepArgs {
    /// Owners: keep (the source's user and group ids), ignore, or
    /// map:FILE (lines 'user SRC DST' and 'group SRC DST', names or ids).
    /// Default: keep when this process may set owners (root, CAP_CHOWN),
    /// else ignore.
    #[arg(long, value_name = "keep|ignore|map:FILE")]
    pub owners: Option<String>,
    /// Extended attributes (user., trusted., security.).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub xattrs: bool,
    /// POSIX ACLs.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub acls: bool,
    /// Files with several names (hard links) are recreated as one file
    /// with those names.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub hard_links: bool,
}

/// Filter rules: run on every child as it is listed; an excluded node is
/// recorded with its rule and its subtree is not walked. They are stored in
/// the state file and are part of the approved plan.
#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// Leave out what matches this .gitignore-style pattern: '*.tmp' at any
    /// depth, '/build' or 'a/*/cache' from the root, 'logs/' folders only,
    /// '!keep.tmp' to keep something back; repeatable, the last match wins.
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Only files (and symlinks, special files) matching one of these
    /// patterns take part; folders are still walked; repeatable.
    #[arg(long = "include", value_name = "PATTERN")]
    pub includes: Vec<String>,
    /// Leave out files smaller than this (e.g. 10k, 1.5M, 2G; powers of 1024).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub min_size: Option<u64>,
    /// Leave out files larger than this.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_size: Option<u64>,
    /// Leave out files modified before this UTC date (2026-01-31 or
    /// 2026-01-31T12:00:00Z).
    #[arg(long, value_name = "DATE", value_parser = time)]
    pub modified_after: Option<i64>,
    /// Leave out files modified at or after this UTC date.
    #[arg(long, value_name = "DATE", value_parser = time)]
    pub modified_before: Option<i64>,
    /// Leave out hidden nodes (names starting with '.') and their subtrees.
    #[arg(long)]
    pub skip_hidden: bool,
    /// Leave out symlinks.
    #[arg(long)]
    pub skip_symlinks: bool,
    /// Leave out special files (fifos, sockets, devices).
    #[arg(long)]
    pub skip_special: bool,
}

impl FilterArgs {
    /// The rules as the state file records them.
    pub fn spec(&self) -> FilterSpec {
        FilterSpec {
            excludes: self.excludes.clone(),
            includes: self.includes.clone(),
            min_size: self.min_size,
            max_size: self.max_size,
            modified_after: self.modified_after,
            modified_before: self.modified_before,
            skip_hidden: self.skip_hidden,
            skip_symlinks: self.skip_symlinks,
            skip_special: self.skip_special,
        }
    }
}

fn size(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| e.to_string())
}

fn time(text: &str) -> Result<i64, String> {
    parse_time(text).map_err(|e| e.to_string())
}

/// `status --state FILE`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The state file, or a PostgreSQL database (postgres://...).
    #[arg(long)]
    pub state: PathBuf,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `review --state FILE`.
#[derive(Debug, clap::Args)]
pub struct ReviewArgs {
    /// The state file, or a PostgreSQL database (postgres://...).
    #[arg(long)]
    pub state: PathBuf,
    /// Which items: missing, differs, conflict, same, extra, excluded,
    /// invalid-name, failed, or all (everything but same) from discovery; pending,
    /// copying, copied, skipped, changed or copy-failed from the copy;
    /// mismatch from verify.
    #[arg(long, default_value = "all", conflicts_with = "changes")]
    pub status: String,
    /// List what changed on the source since the previous pass (new,
    /// modified, deleted) instead.
    #[arg(long)]
    pub changes: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Review output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal (names escaped).
    Table,
    /// One JSON object per line.
    Json,
    /// CSV with a header.
    Csv,
}

/// How a destination object treeshift did not write is compared
/// (`--compare`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CompareBy {
    /// Size (and MD5 where both listings give one).
    Size,
    /// Also the mtime in the object's metadata: one HEAD per object.
    MetaMtime,
}

impl CompareBy {
    /// As the location option `compare=` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareBy::Size => "size",
            CompareBy::MetaMtime => "meta-mtime",
        }
    }
}
