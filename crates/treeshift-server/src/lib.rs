//! treeshift's HTTP API (`treeshift serve`): one state file per migration
//! under a folder, each operation (discover, copy, verify, retry) a job on
//! a thread of its own that can be stopped and started again (a stopped
//! job resumes exactly as a killed one does), progress as server-sent
//! events, review pages by an opaque cursor, approval of exactly the plan
//! the caller saw. Every operation is the lifecycle's
//! (`treeshift-lifecycle`); this crate only routes, guards and reports.
//!
//! Guards: it listens on loopback unless given a token; with a token,
//! every request must carry it (`Authorization: Bearer ...`, compared in
//! constant time; never a cookie, so no cross-site request can use it); a
//! migration's name is one plain file name under the folder, never a
//! path, and a symlink there is refused; request bodies are limited;
//! errors are JSON with a message; no CORS header is ever sent.

mod api;
mod error;
mod jobs;
mod registry;
mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use treeshift_lifecycle::{Cancel, Keys, Limits};

pub use error::ServerError;

/// The name of the span a migration's work runs in (its field `name` is
/// the migration's name): opening its state file, its jobs, and every
/// thread they start. Log records made in it are the migration's.
pub const MIGRATION_SPAN: &str = "migration";

/// The span of the migration `name` (see [`MIGRATION_SPAN`]).
pub fn migration_span(name: &str) -> tracing::Span {
    tracing::info_span!("migration", name = %name)
}

/// Told when a migration's state file opens and when it closes, so that
/// the log records made in its span can go to its `logs` table. The
/// binary, which installs the log subscriber, implements it.
pub trait LogRoutes: Send + Sync {
    /// `name`'s state file is open: its records go to `store`.
    fn opened(&self, name: &str, store: treeshift_lifecycle::StateHandle);
    /// `name`'s state file is about to close: send what is pending.
    fn closed(&self, name: &str);
}

/// How the server runs.
pub struct Config {
    /// The folder of the migrations' state files.
    pub dir: PathBuf,
    /// Where it listens.
    pub listen: SocketAddr,
    /// The token every request must carry; required unless `listen` is
    /// a loopback address.
    pub token: Option<String>,
    /// Requests a second to each side's storage.
    pub limits: Limits,
    /// Where each migration's log records go.
    pub logs: Arc<dyn LogRoutes>,
    /// A migration's state file closes after this long unused with no job
    /// running (the CLI can open it meanwhile; the next request opens it
    /// again).
    pub idle_close: Duration,
}

/// Serves until `stop` is raised (then stops running jobs, which resume
/// when started again, and returns). `ready` is told the address bound.
pub fn serve(
    config: Config,
    keys: Arc<dyn Keys>,
    stop: Cancel,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    if !config.listen.ip().is_loopback() && config.token.is_none() {
        return Err(ServerError::Config(format!(
            "{} is not a loopback address: give --token-file so that only those with the token can use it",
            config.listen
        )));
    }
    if !config.dir.is_dir() {
        return Err(ServerError::Config(format!(
            "{} is not a folder",
            config.dir.display()
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("treeshift-http")
        .enable_all()
        .build()
        .map_err(|e| ServerError::Config(format!("start the HTTP runtime: {e}")))?;
    let registry = Arc::new(registry::Registry::new(
        config.dir,
        keys,
        config.limits,
        config.logs,
    ));
    let app = api::router(registry.clone(), config.token);
    let idle_close = config.idle_close;
    let janitor = registry.clone();
    runtime.block_on(async move {
        tokio::spawn(async move {
            let every = (idle_close / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
            loop {
                tokio::time::sleep(every).await;
                let registry = janitor.clone();
                let _ = tokio::task::spawn_blocking(move || registry.close_idle(idle_close)).await;
            }
        });
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServerError::Config(format!("listen on {}: {e}", config.listen)))?;
        let bound = listener
            .local_addr()
            .map_err(|e| ServerError::Config(e.to_string()))?;
        ready(bound);
        let stopping = stop.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                while !stopping.is_cancelled() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await
            .map_err(|e| ServerError::Config(format!("serve: {e}")))
    })?;
    // Running jobs stop where they stand, recorded; their files close.
    registry.stop_all();
    Ok(())
}
