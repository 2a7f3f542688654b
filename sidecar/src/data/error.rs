//! The data API's errors and their wire form: the Arsenal error name and HTTP code, with a JSON
//! body `{"errorType", "errorMessage"}` and a newline. CloudServer derives the error from the
//! name, so only real Arsenal names are used.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::blob::BlobError;
use crate::items::ItemError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidUri(String),
    #[error("{0}")]
    InvalidAction(String),
    #[error("a blob key is required")]
    MissingParameter,
    #[error("bad Content-Length")]
    InvalidInput,
    /// The announced body is over `--max-object-size`.
    #[error(
        "Your proposed upload exceeds the maximum allowed object size ({declared} > {max} bytes)."
    )]
    EntityTooLarge { declared: u64, max: u64 },
    #[error("You must provide the Content-Length HTTP header.")]
    MissingContentLength,
    #[error("This object does not exist")]
    ObjNotFound,
    #[error("The requested range cannot be satisfied.")]
    InvalidRange,
    #[error("The specified method is not allowed against this resource.")]
    MethodNotAllowed,
    #[error("{0}")]
    InternalError(String),
    #[error("{0}")]
    ServiceUnavailable(String),
}

impl ApiError {
    /// The Arsenal error name and its HTTP code.
    pub fn kind(&self) -> (&'static str, StatusCode) {
        match self {
            ApiError::InvalidUri(_) => ("InvalidURI", StatusCode::BAD_REQUEST),
            ApiError::InvalidAction(_) => ("InvalidAction", StatusCode::BAD_REQUEST),
            ApiError::MissingParameter => ("MissingParameter", StatusCode::BAD_REQUEST),
            ApiError::InvalidInput => ("InvalidInput", StatusCode::BAD_REQUEST),
            ApiError::EntityTooLarge { .. } => ("EntityTooLarge", StatusCode::BAD_REQUEST),
            ApiError::MissingContentLength => ("MissingContentLength", StatusCode::LENGTH_REQUIRED),
            ApiError::ObjNotFound => ("ObjNotFound", StatusCode::NOT_FOUND),
            ApiError::InvalidRange => ("InvalidRange", StatusCode::RANGE_NOT_SATISFIABLE),
            ApiError::MethodNotAllowed => ("MethodNotAllowed", StatusCode::METHOD_NOT_ALLOWED),
            ApiError::InternalError(_) => ("InternalError", StatusCode::INTERNAL_SERVER_ERROR),
            ApiError::ServiceUnavailable(_) => {
                ("ServiceUnavailable", StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(error: BlobError) -> ApiError {
        match error {
            BlobError::NotFound => ApiError::ObjNotFound,
            BlobError::Items(ItemError::Unavailable(_)) => {
                ApiError::ServiceUnavailable(error.to_string())
            }
            other => ApiError::InternalError(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (name, status) = self.kind();
        // Field order as the reference writes it.
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            error_type: &'a str,
            error_message: String,
        }
        let wire = Wire {
            error_type: name,
            error_message: self.to_string(),
        };
        let body = serde_json::to_string(&wire).unwrap_or_default();
        let mut response = Response::new(Body::from(format!("{body}\n")));
        *response.status_mut() = status;
        response.headers_mut().remove(header::CONTENT_TYPE);
        response
    }
}
