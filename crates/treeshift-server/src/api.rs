//! The routes. Every handler checks the migration's name through the
//! registry, runs the lifecycle's (blocking) calls off the async threads,
//! and answers JSON.

use crate::error::{ApiError, ErrorBody};
use crate::jobs::{JobOptions, JobView, Op};
use crate::registry::Registry;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use treeshift_core::{FilterSpec, Keep, Owners, Phase, RelPath, Secret, Side, display_bytes};
use treeshift_lifecycle::{DiscoveryRequest, SecretSource, StatusReport};
use treeshift_store::{BelowStatus, LogEntry, PlanPreview, ReviewFilter, ReviewItem, ReviewSelect};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Request bodies are small JSON documents.
const BODY_LIMIT: usize = 64 * 1024;
/// Review rows per page, at most.
const MAX_PAGE: usize = 5_000;
/// How often progress events are sent.
const EVENT_EVERY: Duration = Duration::from_millis(500);

type Shared = Arc<Registry>;
type ApiResult<T> = Result<T, ApiError>;

pub fn router(registry: Shared, token: Option<String>) -> Router {
    let api = Router::new()
        .route("/api/migrations", get(list).post(create))
        .route("/api/migrations/{name}", get(status))
        .route("/api/migrations/{name}/jobs/{op}", post(start))
        .route("/api/migrations/{name}/stop", post(stop))
        .route("/api/migrations/{name}/history", get(history))
        .route("/api/migrations/{name}/plan", get(plan))
        .route("/api/migrations/{name}/approve", post(approve))
        .route("/api/migrations/{name}/review", get(review))
        .route("/api/migrations/{name}/logs", get(logs))
        .route("/api/migrations/{name}/browse", get(browse))
        .route("/api/migrations/{name}/events", get(events))
        .route("/api/migrations/{name}/logs/events", get(log_events))
        .route("/api/openapi.json", get(openapi))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(registry);
    let token: Arc<Option<String>> = Arc::new(token);
    let api = api.layer(middleware::from_fn(move |request: Request, next: Next| {
        let token = token.clone();
        async move { guard(token.as_ref().as_deref(), request, next).await }
    }));
    crate::ui::router().merge(api)
}

/// The API's OpenAPI description, derived from the handlers' annotations
/// and the types they take and answer.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "treeshift",
        description = "Migrations under one folder: create, discover, review, approve, copy, verify, retry. With --token-file, every request carries `Authorization: Bearer TOKEN`."
    ),
    paths(
        list, create, status, start, stop, history, plan, approve, review, browse, logs, events,
        log_events, openapi
    ),
    modifiers(&BearerToken),
    security(("token" = []))
)]
struct ApiDoc;

struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This description.
#[utoipa::path(get, path = "/api/openapi.json", tag = "api",
    responses((status = 200, description = "The OpenAPI description", content_type = "application/json")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// With a token, every request must carry it; compared in constant time.
async fn guard(token: Option<&str>, request: Request, next: Next) -> Response {
    if let Some(token) = token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let same: bool = given.as_bytes().ct_eq(token.as_bytes()).into();
        if !same {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a token is required: Authorization: Bearer TOKEN",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// A JSON body whose rejection (malformed, unknown field, too large) is
/// answered as every other error: JSON with a message.
struct JsonBody<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(r) => Err(ApiError::new(r.status(), r.body_text())),
        }
    }
}

/// A query string, its rejection answered as JSON.
struct QueryArgs<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(QueryArgs(value)),
            Err(r) => Err(ApiError::new(r.status(), r.body_text())),
        }
    }
}

/// Path parameters, their rejection answered as JSON.
struct PathArgs<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for PathArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathArgs(value)),
            Err(r) => Err(ApiError::new(r.status(), r.body_text())),
        }
    }
}

/// Runs a blocking call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    })?
}

#[derive(serde::Serialize, ToSchema)]
struct Listed {
    name: String,
    phase: Option<Phase>,
    job: Option<JobView>,
    interrupted: bool,
    error: Option<String>,
}

/// Whether a migration was left in the middle of a run by a process that
/// is gone (a server killed or restarted): its phase says a walk or a
/// copy was going on, and no job of this server ran it.
fn interrupted(phase: Phase, job: &Option<JobView>) -> bool {
    matches!(phase, Phase::Discovering | Phase::Copying) && job.is_none()
}

/// Every migration under the folder, with its phase and its job.
#[utoipa::path(get, path = "/api/migrations", tag = "migrations",
    responses((status = 200, body = Vec<Listed>)))]
async fn list(State(reg): State<Shared>) -> ApiResult<Json<Vec<Listed>>> {
    blocking(move || {
        let mut out = Vec::new();
        for name in reg.names()? {
            let slot = reg.slot(&name)?;
            let job = slot.job().map(|j| j.view());
            let phase = reg
                .migration(&slot)
                .and_then(|m| m.handle().phase().map_err(ApiError::from));
            out.push(match phase {
                Ok(phase) => Listed {
                    name,
                    phase: Some(phase),
                    interrupted: interrupted(phase, &job),
                    job,
                    error: None,
                },
                Err(e) => Listed {
                    name,
                    phase: None,
                    job,
                    interrupted: false,
                    error: Some(e.message),
                },
            });
        }
        Ok(Json(out))
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Create {
    name: String,
    src: String,
    dst: String,
    #[serde(default)]
    filter: FilterSpec,
    #[serde(default)]
    dst_case_insensitive: bool,
    #[serde(default)]
    keep_owners: bool,
    #[serde(default)]
    keep_xattrs: bool,
    #[serde(default)]
    keep_acls: bool,
    #[serde(default)]
    keep_hard_links: bool,
    /// Each side's secrets by the names its service's tools use (e.g.
    /// `AWS_SECRET_ACCESS_KEY`), sealed into the state file and never
    /// shown again; the server needs a key for that. A side without
    /// any takes them from the server's environment.
    #[serde(default)]
    secrets: GivenSecrets,
}

/// Secrets given with a new migration, by side.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct GivenSecrets {
    #[serde(default)]
    src: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    dst: std::collections::BTreeMap<String, String>,
}

/// Where one side's secrets come from: those given, else the
/// environment. The values go straight into zeroed-on-drop secrets.
fn secret_source(given: std::collections::BTreeMap<String, String>) -> SecretSource {
    if given.is_empty() {
        return SecretSource::Environment;
    }
    SecretSource::Given(
        given
            .into_iter()
            .map(|(name, value)| (name, Secret::new(value)))
            .collect(),
    )
}

#[derive(serde::Serialize, ToSchema)]
struct Created {
    name: String,
}

/// Records a new migration (its state file); nothing is walked yet.
#[utoipa::path(post, path = "/api/migrations", tag = "migrations", request_body = Create,
    responses((status = 201, body = Created), (status = 400, body = ErrorBody),
        (status = 409, description = "A migration of that name exists", body = ErrorBody)))]
async fn create(State(reg): State<Shared>, JsonBody(c): JsonBody<Create>) -> ApiResult<Response> {
    blocking(move || {
        let slot = reg.slot(&c.name)?;
        let request = DiscoveryRequest {
            state: Default::default(),
            src: c.src,
            dst: c.dst,
            secrets: [secret_source(c.secrets.src), secret_source(c.secrets.dst)],
            filter: c.filter,
            dst_case_insensitive: c.dst_case_insensitive,
            keep: Keep {
                modes: true,
                owners: if c.keep_owners {
                    Owners::Keep
                } else {
                    Owners::Ignore
                },
                xattrs: c.keep_xattrs,
                acls: c.keep_acls,
                hard_links: c.keep_hard_links,
            },
        };
        reg.create(&slot, request)?;
        let name = slot.name.clone();
        Ok((StatusCode::CREATED, Json(Created { name })).into_response())
    })
    .await
}

#[derive(serde::Serialize, ToSchema)]
struct StatusView {
    #[serde(flatten)]
    status: StatusReport,
    job: Option<JobView>,
    interrupted: bool,
}

/// The migration's status: counts, phase, approval, copy, verify,
/// errors, rounds; its job, and whether a run was interrupted.
#[utoipa::path(get, path = "/api/migrations/{name}", tag = "migrations", params(Name),
    responses((status = 200, body = StatusView), (status = 404, body = ErrorBody)))]
async fn status(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<Json<StatusView>> {
    blocking(move || {
        let slot = reg.slot(&name)?;
        let m = reg.migration(&slot)?;
        // The job first: a job seen ended has recorded all it did, so the
        // status read after it shows it.
        let job = slot.job().map(|j| j.view());
        let status = m.status()?;
        Ok(Json(StatusView {
            interrupted: interrupted(status.phase, &job),
            status,
            job,
        }))
    })
    .await
}

/// Starts a job: `discover`, `copy`, `verify` or `retry`. A stopped or
/// interrupted job goes on where it stood.
#[utoipa::path(post, path = "/api/migrations/{name}/jobs/{op}", tag = "jobs",
    params(Name, ("op" = String, Path, description = "discover, copy, verify or retry")),
    request_body = JobOptions,
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody),
        (status = 409, description = "A job runs, or the phase does not allow it", body = ErrorBody)))]
async fn start(
    State(reg): State<Shared>,
    PathArgs((name, op)): PathArgs<(String, String)>,
    JsonBody(options): JsonBody<JobOptions>,
) -> ApiResult<Response> {
    let op = Op::parse(&op).ok_or_else(|| {
        ApiError::not_found(format!("no job '{op}': discover, copy, verify or retry"))
    })?;
    blocking(move || {
        let slot = reg.slot(&name)?;
        let view = reg.start(&slot, op, options)?;
        Ok((StatusCode::ACCEPTED, Json(view)).into_response())
    })
    .await
}

/// Stops the running job where it stands; starting it again resumes.
#[utoipa::path(post, path = "/api/migrations/{name}/stop", tag = "jobs", params(Name),
    responses((status = 202, body = JobView), (status = 409, body = ErrorBody)))]
async fn stop(State(reg): State<Shared>, PathArgs(name): PathArgs<String>) -> ApiResult<Response> {
    blocking(move || {
        let slot = reg.slot(&name)?;
        let job = slot
            .job()
            .filter(|j| j.is_running())
            .ok_or_else(|| ApiError::conflict(format!("{name} runs no job")))?;
        job.cancel.cancel();
        Ok((StatusCode::ACCEPTED, Json(job.view())).into_response())
    })
    .await
}

/// The migration's name: one plain file name under the server's folder.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct Name {
    name: String,
}

/// The counts of the migration's last job over time (a sample a second
/// at first, thinned as it runs long), for a chart of its throughput.
#[utoipa::path(get, path = "/api/migrations/{name}/history", tag = "jobs", params(Name),
    responses((status = 200, body = crate::jobs::JobHistory), (status = 404, body = ErrorBody)))]
async fn history(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<Json<crate::jobs::JobHistory>> {
    let slot = reg.slot(&name)?;
    let job = slot
        .job()
        .ok_or_else(|| ApiError::not_found(format!("{name} has run no job in this server")))?;
    Ok(Json(job.history()))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PlanQuery {
    /// skip, overwrite, newer or rename (skip if not given).
    #[serde(default = "default_policy")]
    policy: String,
    /// leave or quarantine (leave if not given).
    #[serde(default = "default_extras")]
    extras: String,
}

fn default_policy() -> String {
    "skip".into()
}

fn default_extras() -> String {
    "leave".into()
}

/// What an approval with this policy would cover, and its hash.
#[utoipa::path(get, path = "/api/migrations/{name}/plan", tag = "review", params(Name, PlanQuery),
    responses((status = 200, body = PlanPreview), (status = 400, body = ErrorBody)))]
async fn plan(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
    QueryArgs(q): QueryArgs<PlanQuery>,
) -> ApiResult<Response> {
    let (policy, extras) =
        crate::jobs::policy(&q.policy, &q.extras).map_err(ApiError::bad_request)?;
    blocking(move || {
        let m = reg.open(&name)?;
        let preview = m.handle().preview_plan(policy, extras)?;
        Ok(Json(preview).into_response())
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Approve {
    #[serde(default = "default_policy")]
    policy: String,
    #[serde(default = "default_extras")]
    extras: String,
    /// The hash of the plan the approver was shown (from `plan`).
    plan_hash: String,
    #[serde(default)]
    approved_by: Option<String>,
}

/// Approves exactly the plan shown: refused (409) when the plan has
/// changed since, or a job runs.
#[utoipa::path(post, path = "/api/migrations/{name}/approve", tag = "review", params(Name),
    request_body = Approve,
    responses((status = 200, body = treeshift_lifecycle::ApprovalReport),
        (status = 409, description = "The plan changed since it was shown, or a job runs", body = ErrorBody)))]
async fn approve(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
    JsonBody(a): JsonBody<Approve>,
) -> ApiResult<Response> {
    let (policy, extras) =
        crate::jobs::policy(&a.policy, &a.extras).map_err(ApiError::bad_request)?;
    blocking(move || {
        let slot = reg.slot(&name)?;
        reg.idle(&slot)?;
        let m = reg.migration(&slot)?;
        let by = a.approved_by.unwrap_or_else(|| "api".to_string());
        // The lifecycle logs the approval, in the migration's span.
        let report = crate::migration_span(&slot.name)
            .in_scope(|| m.approve_seen(policy, extras, &by, &a.plan_hash))?;
        Ok(Json(report).into_response())
    })
    .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ReviewQuery {
    /// A comparison or copy status, `all` (what needs a look), `changes`,
    /// `failed`, `copy-failed` or `mismatch`.
    #[serde(default = "default_status")]
    status: String,
    /// The previous page's `next`.
    after: Option<String>,
    /// Only at or under this path.
    prefix: Option<String>,
    min_size: Option<u64>,
    max_size: Option<u64>,
    /// Only names holding this text.
    search: Option<String>,
    /// Rows a page (1,000 if not given; 5,000 at most).
    limit: Option<usize>,
}

/// A page of review rows.
#[derive(serde::Serialize, ToSchema)]
struct ReviewPage {
    items: Vec<ReviewRow>,
    /// The cursor of the next page, if there may be one.
    next: Option<String>,
}

#[derive(serde::Serialize, ToSchema)]
struct ReviewRow {
    #[schema(value_type = String)]
    side: Side,
    /// The path, escaped for display where it is not UTF-8.
    path: String,
    kind: &'static str,
    size: u64,
    mtime_ns: Option<i64>,
    status: String,
    reason: Option<String>,
}

fn default_status() -> String {
    "all".into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An opaque cursor: the side and the raw path of the last item, in hex
/// (a path need not be UTF-8).
fn cursor(item: &ReviewItem) -> String {
    let side = if item.side == Side::Src { "s" } else { "d" };
    format!("{side}{}", hex(item.path.as_bytes()))
}

fn parse_cursor(text: &str) -> Option<(Side, RelPath)> {
    let side = match text.as_bytes().first()? {
        b's' => Side::Src,
        b'd' => Side::Dst,
        _ => return None,
    };
    Some((side, RelPath::from_bytes(unhex(&text[1..])?)))
}

/// The review's status; `changes` is what changed since the last pass.
fn select(status: &str) -> Result<ReviewSelect, ApiError> {
    match status {
        "changes" => Ok(ReviewSelect::Changes),
        other => other.parse().map_err(ApiError::bad_request),
    }
}

/// Review rows by status and filters, a page at a time (keyset paging by
/// an opaque cursor).
#[utoipa::path(get, path = "/api/migrations/{name}/review", tag = "review", params(Name, ReviewQuery),
    responses((status = 200, body = ReviewPage), (status = 400, body = ErrorBody)))]
async fn review(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
    QueryArgs(q): QueryArgs<ReviewQuery>,
) -> ApiResult<Response> {
    let select = select(&q.status)?;
    let after = match q.after.as_deref() {
        Some(c) => {
            Some(parse_cursor(c).ok_or_else(|| ApiError::bad_request("a malformed cursor"))?)
        }
        None => None,
    };
    let filter = ReviewFilter {
        prefix: q.prefix.as_deref().map(RelPath::from_typed),
        min_size: q.min_size,
        max_size: q.max_size,
        search: q.search,
    };
    let limit = page_limit(q.limit);
    blocking(move || {
        let m = reg.open(&name)?;
        let items = m.handle().review_page(select, after, filter, limit)?;
        let next = (items.len() == limit)
            .then(|| items.last().map(cursor))
            .flatten();
        let items = items
            .into_iter()
            .map(|i| ReviewRow {
                side: i.side,
                path: display_bytes(i.path.as_bytes()),
                kind: i.kind.as_str(),
                size: i.size,
                mtime_ns: i.mtime_ns,
                status: i.status,
                reason: i.reason,
            })
            .collect();
        Ok(Json(ReviewPage { items, next }).into_response())
    })
    .await
}

/// Rows a page holds: as asked (1,000 if not), within 1 and [`MAX_PAGE`].
fn page_limit(asked: Option<usize>) -> usize {
    asked.unwrap_or(1000).clamp(1, MAX_PAGE)
}

/// The least severe level of log records asked for (`INFO` if not).
fn log_level(asked: Option<String>) -> ApiResult<String> {
    let level = asked.unwrap_or_else(|| "INFO".into()).to_uppercase();
    match ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level.as_str()) {
        true => Ok(level),
        false => Err(ApiError::bad_request(format!("unknown level '{level}'"))),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct BrowseQuery {
    /// The folder (the root if not given).
    #[serde(default)]
    path: String,
    /// The previous page's `next`.
    after: Option<String>,
    /// Children a page (1,000 if not given; 5,000 at most).
    limit: Option<usize>,
}

/// A page of one folder's children.
#[derive(serde::Serialize, ToSchema)]
struct BrowsePage {
    path: String,
    children: Vec<BrowseRow>,
    /// The cursor of the next page, if there may be one.
    next: Option<String>,
}

#[derive(serde::Serialize, ToSchema)]
struct BrowseRow {
    #[schema(value_type = String)]
    side: Side,
    path: String,
    kind: &'static str,
    size: u64,
    status: Option<String>,
    /// Items and bytes below a folder, by status.
    below: Vec<BelowStatus>,
}

/// One folder's children (the source's, and the destination's extras),
/// each with its status and, for a folder, the items and bytes below it
/// by status: what a treemap of the bytes to copy is drawn from.
#[utoipa::path(get, path = "/api/migrations/{name}/browse", tag = "review", params(Name, BrowseQuery),
    responses((status = 200, body = BrowsePage), (status = 400, body = ErrorBody)))]
async fn browse(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
    QueryArgs(q): QueryArgs<BrowseQuery>,
) -> ApiResult<Response> {
    let folder = RelPath::from_typed(&q.path);
    let after = match q.after.as_deref() {
        Some(c) => {
            Some(RelPath::from_bytes(unhex(c).ok_or_else(|| {
                ApiError::bad_request("a malformed cursor")
            })?))
        }
        None => None,
    };
    let limit = page_limit(q.limit);
    blocking(move || {
        let m = reg.open(&name)?;
        let children = m.handle().browse(folder.clone(), after, limit)?;
        let next = (children.len() == limit)
            .then(|| children.last().map(|c| hex(c.path.as_bytes())))
            .flatten();
        let children = children
            .into_iter()
            .map(|c| BrowseRow {
                side: c.side,
                path: display_bytes(c.path.as_bytes()),
                kind: c.kind.as_str(),
                size: c.size,
                status: c.status,
                below: c.below,
            })
            .collect();
        Ok(Json(BrowsePage {
            path: display_bytes(folder.as_bytes()),
            children,
            next,
        })
        .into_response())
    })
    .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    /// Records after this `seq` (the previous page's `next`).
    after: Option<i64>,
    /// Records a page (1,000 if not given; 5,000 at most).
    limit: Option<usize>,
    /// The least severe level: ERROR, WARN, INFO (if not given), DEBUG, TRACE.
    level: Option<String>,
}

/// A page of log records.
#[derive(serde::Serialize, ToSchema)]
struct LogsPage {
    entries: Vec<LogEntry>,
    next: Option<i64>,
}

/// The migration's log records, a page at a time.
#[utoipa::path(get, path = "/api/migrations/{name}/logs", tag = "logs", params(Name, LogsQuery),
    responses((status = 200, body = LogsPage), (status = 400, body = ErrorBody)))]
async fn logs(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
    QueryArgs(q): QueryArgs<LogsQuery>,
) -> ApiResult<Response> {
    let level = log_level(q.level)?;
    let limit = page_limit(q.limit);
    blocking(move || {
        let m = reg.open(&name)?;
        let entries = m.handle().logs(q.after.unwrap_or(0), &level, limit)?;
        let next = (entries.len() == limit)
            .then(|| entries.last().map(|e| e.seq))
            .flatten();
        Ok(Json(LogsPage { entries, next }).into_response())
    })
    .await
}

/// The migration's log records as server-sent events (`log`, one record
/// each, JSON), from after `after` (its `seq`) and then as they are
/// written, checked every half second, until the client goes away.
#[utoipa::path(get, path = "/api/migrations/{name}/logs/events", tag = "logs", params(Name, LogsQuery),
    responses((status = 200, description = "Server-sent events `log`, each one record (LogEntry) as JSON", content_type = "text/event-stream")))]
async fn log_events(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
    QueryArgs(q): QueryArgs<LogsQuery>,
) -> ApiResult<Response> {
    let level = log_level(q.level)?;
    let m = {
        let reg = reg.clone();
        blocking(move || reg.open(&name)).await?
    };
    let start = (q.after.unwrap_or(0), Vec::new());
    let stream = futures::stream::unfold(start, move |(mut after, mut queued)| {
        let (m, level) = (m.clone(), level.clone());
        async move {
            loop {
                if let Some(entry) = queued.pop() {
                    let entry: treeshift_store::LogEntry = entry;
                    let data = serde_json::to_string(&entry).unwrap_or_default();
                    let event = Event::default()
                        .event("log")
                        .id(entry.seq.to_string())
                        .data(data);
                    return Some((Ok::<_, std::convert::Infallible>(event), (after, queued)));
                }
                let (m2, level2) = (m.clone(), level.clone());
                let read =
                    tokio::task::spawn_blocking(move || m2.handle().logs(after, &level2, MAX_PAGE))
                        .await;
                match read {
                    Ok(Ok(batch)) if !batch.is_empty() => {
                        after = batch.last().map_or(after, |e| e.seq);
                        queued = batch;
                        queued.reverse();
                    }
                    Ok(Ok(_)) => tokio::time::sleep(EVENT_EVERY).await,
                    // The store stopped (the server is closing): end.
                    _ => return None,
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Progress of the migration's job as server-sent events: `progress`
/// every half second while it runs, then `done` with its outcome (or one
/// `idle` when no job ever ran).
#[utoipa::path(get, path = "/api/migrations/{name}/events", tag = "jobs", params(Name),
    responses((status = 200, description = "Server-sent events: `progress` (a JobView as JSON) every half second while the job runs, then `done` (a JobView with its outcome); or one `idle`", content_type = "text/event-stream")))]
async fn events(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<Response> {
    let slot = reg.slot(&name)?;
    let job = slot.job();
    let stream = futures::stream::unfold((job, false), |(job, ended)| async move {
        if ended {
            return None;
        }
        let Some(job) = job else {
            let event = Event::default().event("idle").data("{}");
            return Some((Ok::<_, std::convert::Infallible>(event), (None, true)));
        };
        let view = job.view();
        let data = serde_json::to_string(&view).unwrap_or_default();
        if view.running {
            tokio::time::sleep(EVENT_EVERY).await;
            let event = Event::default().event("progress").data(data);
            Some((Ok(event), (Some(job), false)))
        } else {
            let event = Event::default().event("done").data(data);
            Some((Ok(event), (Some(job), true)))
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
