//! Which error type belongs where: storage returns [`db::Error`](crate::db::Error), request
//! parsing returns [`validation::Issue`](crate::validation::Issue)s, and everything a
//! client can see is an [`ApiError`]. Exactly one `ResponseError` impl, here, turns an
//! `ApiError` into a status and the JSON envelope
//! `{"statusCode", "statusMessage", "message", "data"?}`.
//!
//! A 500 says only that something went wrong: its cause chain goes to the log (with the
//! request id, see [`telemetry`](crate::telemetry)), never to the client.

use std::fmt;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::db;
use crate::validation::Issue;

/// Everything a request can fail with, as the client sees it.
#[derive(thiserror::Error)]
pub enum ApiError {
    /// A route parameter is malformed (400).
    #[error("invalid route parameters")]
    InvalidRouteParams,
    /// The body failed validation; every problem found is listed (400).
    #[error("invalid request body")]
    InvalidBody(Vec<Issue>),
    /// The body could not be read to its end, e.g. a broken transfer encoding (400).
    #[error("unreadable request body")]
    UnreadableBody,
    /// The body is not `application/json` (415).
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The body is larger than the configured limit (413).
    #[error("payload too large")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// No valid session (401). Always the same body, whatever the reason.
    #[error("unauthorized")]
    Unauthorized,
    /// The session's user is not the user in the path (403).
    #[error("forbidden")]
    Forbidden,
    /// The chat does not exist or is not the caller's (404, same body either way).
    #[error("chat not found")]
    ChatNotFound,
    /// No route matches the path (404).
    #[error("route not found")]
    RouteNotFound,
    /// The route exists but not for this method (405).
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The value of the `Allow` header.
        allow: &'static str,
    },
    /// The database cannot serve requests right now (503).
    #[error("service unavailable")]
    Unavailable(#[source] db::Error),
    /// Anything unexpected (500). The source is logged, never shown.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// Wraps an unexpected error as a 500.
    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ApiError::Internal(err.into())
    }

    /// The envelope's `statusMessage` and `message`.
    fn texts(&self) -> (&'static str, String) {
        match self {
            ApiError::InvalidRouteParams => (
                "Bad Request. Invalid routeParams(user_id, chat_id).",
                "chat_id must be a positive integer".to_owned(),
            ),
            ApiError::InvalidBody(issues) => (
                "Bad Request. Invalid body(message | messages).",
                issues
                    .iter()
                    .map(|issue| issue.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            ApiError::UnreadableBody => (
                "Bad Request",
                "The request body could not be read".to_owned(),
            ),
            ApiError::UnsupportedMediaType => (
                "Unsupported Media Type",
                "Content-Type must be application/json".to_owned(),
            ),
            ApiError::PayloadTooLarge { limit } => (
                "Payload Too Large",
                format!("The request body is larger than {limit} bytes"),
            ),
            ApiError::Unauthorized => (
                "Unauthorized",
                "A valid neptun-session cookie is required".to_owned(),
            ),
            ApiError::Forbidden => (
                "Forbidden",
                "The session does not belong to this user".to_owned(),
            ),
            ApiError::ChatNotFound => ("Not Found", "Chat not found".to_owned()),
            ApiError::RouteNotFound => ("Not Found", "No route matches this path".to_owned()),
            ApiError::MethodNotAllowed { allow } => (
                "Method Not Allowed",
                format!("This route accepts {allow}"),
            ),
            ApiError::Unavailable(_) => (
                "Service Unavailable",
                "The database is not available".to_owned(),
            ),
            ApiError::Internal(_) => (
                "Internal Server Error",
                "Something went wrong on our side".to_owned(),
            ),
        }
    }
}

impl From<db::Error> for ApiError {
    fn from(err: db::Error) -> Self {
        match err {
            db::Error::NotFound(db::Entity::Chat) => ApiError::ChatNotFound,
            other => ApiError::internal(other),
        }
    }
}

// Debug prints the whole cause chain, so a logged 500 says why it happened.
impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            write!(f, "\n  caused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    status_code: u16,
    status_message: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
}

#[derive(Serialize)]
struct Data<'a> {
    issues: &'a [Issue],
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRouteParams
            | ApiError::InvalidBody(_)
            | ApiError::UnreadableBody => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::ChatNotFound | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (status_message, message) = self.texts();
        let data = match self {
            ApiError::InvalidBody(issues) => Some(Data { issues }),
            _ => None,
        };
        let mut response = HttpResponse::build(status);
        if let ApiError::MethodNotAllowed { allow } = self {
            response.insert_header((header::ALLOW, *allow));
        }
        response.json(Envelope {
            status_code: status.as_u16(),
            status_message,
            message,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;
    use serde_json::json;

    async fn body_of(err: ApiError) -> serde_json::Value {
        let bytes = to_bytes(err.error_response().into_body()).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[actix_web::test]
    async fn a_500_hides_its_cause() {
        let err = ApiError::internal("disk I/O error at /secret/path.db");
        assert!(format!("{err:?}").contains("/secret/path.db"));
        let body = body_of(err).await;
        assert_eq!(body["statusCode"], 500);
        assert!(!body.to_string().contains("secret"), "{body}");
    }

    #[actix_web::test]
    async fn a_missing_chat_reads_chat_not_found() {
        let body = body_of(db::Error::NotFound(db::Entity::Chat).into()).await;
        assert_eq!(
            body,
            json!({"statusCode": 404, "statusMessage": "Not Found", "message": "Chat not found"})
        );
    }
}
