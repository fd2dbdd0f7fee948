//! Where log records go: the terminal (by `-v` or `RUST_LOG`), the state
//! file's `logs` table (INFO and above, in batches), and optionally a UDP
//! sink with its own level (one JSON object per datagram). Under `serve`,
//! a record made in a migration's span goes to that migration's table.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use treeshift_lifecycle::StateHandle;
use treeshift_store::LogRecord;

/// Records kept in memory while no state file is open (or between
/// flushes); past this, records are counted as dropped, never block.
const PENDING_CAP: usize = 50_000;

/// How often buffered records go to the store.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// The sink of the `logs` table. Records are buffered here and handed to
/// the store by a flusher thread, never from the thread that logs: the
/// store's own thread logs too, and must never wait on itself.
#[derive(Default)]
pub struct TableSink {
    state: Mutex<SinkState>,
}

#[derive(Default)]
struct SinkState {
    pending: Vec<LogRecord>,
    dropped: u64,
    store: Option<StateHandle>,
    flusher: Option<std::thread::JoinHandle<()>>,
    /// Dropped to wake the flusher at once when the sink detaches (a
    /// sleeping flusher made every command wait up to `FLUSH_EVERY` at
    /// its end).
    wake: Option<mpsc::Sender<()>>,
}

static TABLE: OnceLock<Arc<TableSink>> = OnceLock::new();

/// The process's table sink.
pub fn table() -> Arc<TableSink> {
    TABLE.get_or_init(Arc::default).clone()
}

impl TableSink {
    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, record: LogRecord) {
        let mut state = self.lock();
        if state.pending.len() < PENDING_CAP {
            state.pending.push(record);
        } else {
            state.dropped += 1;
        }
    }

    /// Starts sending records to `store` (the state file just opened).
    pub fn attach(self: &Arc<Self>, store: StateHandle) {
        let sink = Arc::clone(self);
        let (wake, woken) = mpsc::channel::<()>();
        let flusher = std::thread::Builder::new()
            .name("treeshift-logs".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = woken.recv_timeout(FLUSH_EVERY) {
                    if !sink.flush() {
                        return;
                    }
                }
            })
            .ok();
        let mut state = self.lock();
        state.store = Some(store);
        state.flusher = flusher;
        state.wake = Some(wake);
    }

    /// Sends what is pending; false once detached.
    fn flush(&self) -> bool {
        let (store, mut batch, dropped) = {
            let mut state = self.lock();
            let Some(store) = state.store.clone() else {
                return false;
            };
            let dropped = std::mem::take(&mut state.dropped);
            (store, std::mem::take(&mut state.pending), dropped)
        };
        if dropped > 0 {
            batch.push(record(
                Level::WARN,
                "treeshift::logging",
                format!("{dropped} log records were dropped (too many at once)"),
            ));
        }
        if !batch.is_empty() {
            // A store that stopped reports that error on its own path.
            let _ = store.append_logs(batch);
        }
        true
    }

    /// Sends the rest and stops sending (the state file is about to close).
    pub fn detach(&self) {
        self.flush();
        let flusher = {
            let mut state = self.lock();
            state.store = None;
            state.wake = None;
            state.flusher.take()
        };
        if let Some(f) = flusher {
            let _ = f.join();
        }
    }
}

/// The `logs` tables of a server's open migrations, by name: a record
/// made in a migration's span (`treeshift_server::MIGRATION_SPAN`) goes
/// to its table, whichever thread made it.
#[derive(Default)]
pub struct Routes {
    sinks: Mutex<HashMap<String, Arc<TableSink>>>,
}

static ROUTES: OnceLock<Arc<Routes>> = OnceLock::new();

/// The process's routes.
pub fn routes() -> Arc<Routes> {
    ROUTES.get_or_init(Arc::default).clone()
}

impl Routes {
    fn sinks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TableSink>>> {
        self.sinks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `record` to `name`'s table; a migration not open drops it.
    fn push(&self, name: &str, record: LogRecord) {
        let sink = self.sinks().get(name).cloned();
        if let Some(sink) = sink {
            sink.push(record);
        }
    }
}

impl treeshift_server::LogRoutes for Routes {
    fn opened(&self, name: &str, store: StateHandle) {
        let sink = Arc::new(TableSink::default());
        sink.attach(store);
        let before = self.sinks().insert(name.to_string(), sink);
        if let Some(before) = before {
            before.detach();
        }
    }

    fn closed(&self, name: &str) {
        let sink = self.sinks().remove(name);
        if let Some(sink) = sink {
            sink.detach();
        }
    }
}

/// A UDP destination with its own level.
pub struct UdpSink {
    socket: UdpSocket,
    to: SocketAddr,
}

impl UdpSink {
    /// A sink sending to `to` from an ephemeral local port.
    pub fn new(to: SocketAddr) -> std::io::Result<UdpSink> {
        let local: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal address")
        } else {
            "[::]:0".parse().expect("literal address")
        };
        let socket = UdpSocket::bind(local)?;
        socket.set_nonblocking(true)?;
        Ok(UdpSink { socket, to })
    }
}

/// Installs the global subscriber: terminal by `verbose` (or `RUST_LOG`),
/// the `logs` table at INFO, and `udp` at its level if given.
pub fn init(verbose: u8, udp: Option<(UdpSink, Level)>) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let terminal_filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: a file or a pipe gets the
    // plain text.
    let terminal = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(terminal_filter);
    let table = TableLayer(table()).with_filter(LevelFilter::INFO);
    let udp = udp.map(|(sink, level)| UdpLayer(sink).with_filter(LevelFilter::from_level(level)));
    tracing_subscriber::registry()
        .with(terminal)
        .with(table)
        .with(udp)
        .init();
}

struct TableLayer(Arc<TableSink>);

/// The migration a span is of (see [`Routes`]).
struct MigrationName(String);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TableLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != treeshift_server::MIGRATION_SPAN {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(name), Some(span)) = (fields.name, ctx.span(id)) {
            span.extensions_mut().insert(MigrationName(name));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let record = record(*meta.level(), meta.target(), message_of(event));
        let migration = ctx.event_scope(event).and_then(|scope| {
            scope.from_root().find_map(|span| {
                span.extensions()
                    .get::<MigrationName>()
                    .map(|m| m.0.clone())
            })
        });
        match migration {
            Some(name) => routes().push(&name, record),
            None => self.0.push(record),
        }
    }
}

struct UdpLayer(UdpSink);

impl<S: Subscriber> Layer<S> for UdpLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let line = serde_json::json!({
            "at_us": now_micros(),
            "level": meta.level().as_str(),
            "target": meta.target(),
            "message": message_of(event),
            "pid": std::process::id(),
        });
        // Best effort by design: a log sink must never slow or stop a run.
        let _ = self
            .0
            .socket
            .send_to(line.to_string().as_bytes(), self.0.to);
    }
}

fn record(level: Level, target: &str, message: String) -> LogRecord {
    LogRecord::now(level.as_str(), target, message)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The event's message followed by its fields as `key=value`.
fn message_of(event: &Event<'_>) -> String {
    let mut visitor = Fields::default();
    event.record(&mut visitor);
    if visitor.fields.is_empty() {
        visitor.message
    } else if visitor.message.is_empty() {
        visitor.fields
    } else {
        format!("{} {}", visitor.message, visitor.fields)
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: String,
    /// The field `name`, as text (a migration span's).
    name: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "name" {
            self.name = Some(value.to_string());
        }
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.separate();
            let _ = write!(self.fields, "{}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "name" {
            self.name = Some(format!("{value:?}"));
        }
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.separate();
            let _ = write!(self.fields, "{}={value:?}", field.name());
        }
    }
}

impl Fields {
    fn separate(&mut self) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
    }
}
