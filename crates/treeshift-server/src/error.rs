//! Errors: of the server as a whole, and of one request (always JSON with
//! a message, never a trace).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use treeshift_engine::EngineError;
use treeshift_lifecycle::{ErrorClass, LifecycleError};
use treeshift_store::StoreError;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Its configuration, or the address it was to listen on.
    #[error("{0}")]
    Config(String),
}

/// A request's error: its status and a message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> ApiError {
        let status = match &e {
            LifecycleError::Store(StoreError::Missing(_)) => StatusCode::NOT_FOUND,
            LifecycleError::Store(StoreError::InUse { .. })
            | LifecycleError::Store(StoreError::PlanChanged { .. })
            | LifecycleError::Store(StoreError::CopyStarted { .. })
            | LifecycleError::Store(StoreError::NotDiscovered)
            | LifecycleError::Engine(EngineError::Cancelled) => StatusCode::CONFLICT,
            _ => match e.class() {
                ErrorClass::Input => StatusCode::BAD_REQUEST,
                ErrorClass::Approval => StatusCode::CONFLICT,
                ErrorClass::Failure => StatusCode::INTERNAL_SERVER_ERROR,
            },
        };
        ApiError::new(status, error_text(&e))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        LifecycleError::Store(e).into()
    }
}

/// An error with its causes, on one line.
pub fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = c.source();
    }
    text
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(ErrorBody {
            error: self.message,
        });
        (self.status, body).into_response()
    }
}

/// Every error's body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}
