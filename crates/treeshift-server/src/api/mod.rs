//! The routes. Every handler checks the migration's name through the
//! registry, runs the lifecycle's (blocking) calls off the async threads,
//! and answers JSON. Here: the router, the token guard, the extractors
//! that answer their rejections as JSON, and the OpenAPI description; the
//! handlers by what they serve: `migrations`, `jobs`, `review`, `logs`.

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

mod jobs;
mod logs;
mod migrations;
mod review;

use jobs::{events, history, start, stop};
use logs::{log_events, logs};
use migrations::{create, list, status};
use review::{approve, browse, plan, review};

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
        migrations::list,
        migrations::create,
        migrations::status,
        jobs::start,
        jobs::stop,
        jobs::history,
        jobs::events,
        review::plan,
        review::approve,
        review::review,
        review::browse,
        logs::logs,
        logs::log_events,
        openapi
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

/// The migration's name: one plain file name under the server's folder.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct Name {
    name: String,
}

/// Rows a page holds: as asked (1,000 if not), within 1 and [`MAX_PAGE`].
fn page_limit(asked: Option<usize>) -> usize {
    asked.unwrap_or(1000).clamp(1, MAX_PAGE)
}
