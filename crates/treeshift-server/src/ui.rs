//! The web UI: a few static files compiled into the binary (nothing is
//! fetched from elsewhere at run time) that drive the API from the
//! browser. They hold no data, so they are served without the token; the
//! page asks for the token and sends it in a header with every API call.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Only what the UI's own files do: scripts, styles and API calls to this
/// server; no inline script, no frames, no forms posted elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The files, by the name they are served under.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../ui/index.html"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../ui/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/dom.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/charts.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/views.js"),
    ),
    (
        "explore.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/explore.js"),
    ),
    (
        "actions.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/actions.js"),
    ),
    (
        "logs.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/logs.js"),
    ),
];

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { file("index.html") }))
        .route(
            "/ui/{file}",
            get(
                |axum::extract::Path(name): axum::extract::Path<String>| async move { file(&name) },
            ),
        )
}

fn file(name: &str) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return crate::error::ApiError::not_found("no such file").into_response();
    };
    let mut response = (StatusCode::OK, *body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change with the binary: a browser asks again each time.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
