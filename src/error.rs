//! Which error type belongs where: storage returns [`db::Error`](crate::db::Error), request
//! parsing returns [`validation::Issue`](crate::validation::Issue)s, and everything a
//! client can see is an [`ApiError`](crate::error::ApiError). Exactly one `ResponseError` impl, here, turns an
//! `ApiError` into a status and the JSON envelope
//! `{"statusCode", "statusMessage", "message", "data"?}`.
//!
//! A 500 says only that something went wrong: its cause chain goes to the log (with the
//! request id, see [`telemetry`](crate::telemetry)), never to the client.

use std::borrow::Cow;
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
    /// The body failed validation; every problem found is listed (400). `fields` names
    /// what the body should hold, e.g. `"message | messages"`, once the handler knows it.
    #[error("invalid request body")]
    InvalidBody {
        /// What the body should hold, for the status message.
        fields: Option<&'static str>,
        /// Every problem found.
        issues: Vec<Issue>,
    },
    /// The query string failed validation (400).
    #[error("invalid query string")]
    InvalidQuery {
        /// The parameters the route takes, for the status message.
        fields: &'static str,
        /// Every problem found.
        issues: Vec<Issue>,
    },
    /// A request header is malformed (400).
    #[error("invalid header {name}")]
    InvalidHeader {
        /// The header.
        name: &'static str,
        /// What is wrong with it.
        message: &'static str,
    },
    /// An `Idempotency-Key` was used before for a different request (422).
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
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
    /// Wrong email or password at login (401). The same body for both.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Deleting an account: the password (or, for an account without one, the
    /// confirmation) does not match (403). The session stays valid.
    #[error("the confirmation does not match")]
    WrongConfirmation,
    /// The thing asked for does not exist, or is not the caller's: the same body either
    /// way, so a 404 never reveals another user's data (404).
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// A unique value is taken, or the request conflicts with what is stored (409).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// Storing this would take the user past the operator's storage quota (403): the
    /// request is understood and well-formed, and the same request will keep being
    /// refused until the user deletes messages, so it is a client error, not a 5xx.
    #[error("storage quota exceeded")]
    QuotaExceeded(db::QuotaExceeded),
    /// No route matches the path (404).
    #[error("route not found")]
    RouteNotFound,
    /// The route exists but not for this method (405).
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The value of the `Allow` header.
        allow: &'static str,
    },
    /// The session's write rate limit is used up (429, with `Retry-After`).
    #[error("too many requests")]
    TooManyRequests {
        /// Seconds until a write will be accepted again.
        retry_after_secs: u64,
    },
    /// Too many failed logins, or sign-ups, from this client (429, with `Retry-After`).
    #[error("too many attempts")]
    TooManyAttempts {
        /// Seconds until an attempt will be let through again.
        retry_after_secs: u64,
    },
    /// The user has the most events streams allowed open (429, with `Retry-After`).
    #[error("too many events streams")]
    TooManyStreams,
    /// The server has the most events streams allowed open (503, with `Retry-After`).
    #[error("events streams full")]
    StreamsFull,
    /// The request body did not arrive in time (408).
    #[error("request body timeout")]
    BodyTimeout,
    /// Too many writes are waiting; the client should retry shortly (503, `Retry-After`).
    #[error("overloaded")]
    Overloaded,
    /// Too many password hashes are waiting, or this client has its share of them
    /// already (503, `Retry-After`).
    #[error("password hashing busy")]
    HashingBusy,
    /// The database cannot serve requests right now: busy beyond the busy timeout, no
    /// connection to be had, or the writer stopped (503, `Retry-After`).
    #[error("service unavailable")]
    Unavailable(#[source] db::Error),
    /// Anything unexpected (500). The source is logged, never shown.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A body validation failure for a body that should hold `fields`.
    pub fn invalid_body(fields: &'static str) -> impl FnOnce(Vec<Issue>) -> ApiError {
        move |issues| ApiError::InvalidBody {
            fields: Some(fields),
            issues,
        }
    }

    /// Names the fields of a body error raised before the handler knew them (malformed
    /// JSON from the extractor); other errors pass through.
    pub fn in_body(self, fields: &'static str) -> ApiError {
        match self {
            ApiError::InvalidBody {
                fields: None,
                issues,
            } => ApiError::InvalidBody {
                fields: Some(fields),
                issues,
            },
            other => other,
        }
    }

    /// Wraps an unexpected error as a 500.
    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ApiError::Internal(err.into())
    }

    /// The envelope's `statusMessage` and `message`.
    fn texts(&self) -> (Cow<'static, str>, String) {
        match self {
            ApiError::InvalidRouteParams => (
                "Bad Request. Invalid routeParams(user_id, chat_id).".into(),
                "chat_id must be a positive integer".to_owned(),
            ),
            ApiError::InvalidBody { fields, issues } => (
                match fields {
                    Some(fields) => format!("Bad Request. Invalid body({fields}).").into(),
                    None => "Bad Request. Invalid body.".into(),
                },
                summarize(issues),
            ),
            ApiError::InvalidQuery { fields, issues } => (
                format!("Bad Request. Invalid query({fields}).").into(),
                summarize(issues),
            ),
            ApiError::InvalidHeader { name, message } => (
                format!("Bad Request. Invalid header({name}).").into(),
                (*message).to_owned(),
            ),
            ApiError::IdempotencyKeyReused => (
                "Unprocessable Entity".into(),
                "This Idempotency-Key was already used with a different request".to_owned(),
            ),
            ApiError::UnreadableBody => (
                "Bad Request".into(),
                "The request body could not be read".to_owned(),
            ),
            ApiError::UnsupportedMediaType => (
                "Unsupported Media Type".into(),
                "Content-Type must be application/json".to_owned(),
            ),
            ApiError::PayloadTooLarge { limit } => (
                "Payload Too Large".into(),
                format!("The request body is larger than {limit} bytes"),
            ),
            ApiError::Unauthorized => (
                "Unauthorized".into(),
                "A valid neptun-session cookie is required".to_owned(),
            ),
            ApiError::Forbidden => (
                "Forbidden".into(),
                "The session does not belong to this user".to_owned(),
            ),
            ApiError::InvalidCredentials => (
                "Unauthorized".into(),
                "Invalid email or password".to_owned(),
            ),
            ApiError::WrongConfirmation => (
                "Forbidden".into(),
                "The password (or confirm, for an account without one) does not match".to_owned(),
            ),
            ApiError::NotFound(what) => ("Not Found".into(), (*what).to_owned()),
            ApiError::Conflict(what) => ("Conflict".into(), (*what).to_owned()),
            ApiError::QuotaExceeded(which) => (
                "Forbidden. Storage quota exceeded.".into(),
                format!("Not stored: {which}; delete messages to make room"),
            ),
            ApiError::RouteNotFound => {
                ("Not Found".into(), "No route matches this path".to_owned())
            }
            ApiError::MethodNotAllowed { allow } => (
                "Method Not Allowed".into(),
                format!("This route accepts {allow}"),
            ),
            ApiError::TooManyRequests { retry_after_secs } => (
                "Too Many Requests".into(),
                format!("Write rate limit reached; retry in {retry_after_secs} s"),
            ),
            ApiError::TooManyAttempts { retry_after_secs } => (
                "Too Many Requests".into(),
                format!("Too many attempts; retry in {retry_after_secs} s"),
            ),
            ApiError::TooManyStreams => (
                "Too Many Requests".into(),
                "Too many events streams are open for this user; close one or retry later"
                    .to_owned(),
            ),
            ApiError::StreamsFull => (
                "Service Unavailable".into(),
                "Too many events streams are open; retry shortly".to_owned(),
            ),
            ApiError::HashingBusy => (
                "Service Unavailable".into(),
                "Too many logins and sign-ups are waiting; retry shortly".to_owned(),
            ),
            ApiError::BodyTimeout => (
                "Request Timeout".into(),
                "The request body did not arrive in time".to_owned(),
            ),
            ApiError::Overloaded => (
                "Service Unavailable".into(),
                "Too many writes are waiting; retry shortly".to_owned(),
            ),
            ApiError::Unavailable(_) => (
                "Service Unavailable".into(),
                "The database is not available".to_owned(),
            ),
            ApiError::Internal(_) => (
                "Internal Server Error".into(),
                "Something went wrong on our side".to_owned(),
            ),
        }
    }
}

/// A `Retry-After` in whole seconds for a wait of `wait`: rounded up, so that a client
/// that waits that long is let through, and at least 1.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// One line listing every issue, for the envelope's `message`.
fn summarize(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|issue| issue.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Seconds a client is asked to wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "1";

/// The one place storage errors become client errors.
impl From<db::Error> for ApiError {
    fn from(err: db::Error) -> Self {
        match err {
            db::Error::NotFound(db::Entity::Chat) => ApiError::NotFound("Chat not found"),
            db::Error::NotFound(db::Entity::Message) => ApiError::NotFound("No messages in chat"),
            db::Error::NotFound(db::Entity::User) => ApiError::NotFound("User not found"),
            db::Error::NotFound(db::Entity::Session) => {
                log::debug!("401: unknown or expired session");
                ApiError::Unauthorized
            }
            db::Error::WrongUser => {
                log::debug!("403: session of another user");
                ApiError::Forbidden
            }
            db::Error::KeyReused => ApiError::IdempotencyKeyReused,
            db::Error::KeyAnswerGone => ApiError::Conflict(
                "The messages stored with this Idempotency-Key have been deleted since",
            ),
            db::Error::QuotaExceeded(which) => ApiError::QuotaExceeded(which),
            db::Error::Overloaded => ApiError::Overloaded,
            db::Error::Conflict(db::Taken::UserId) => {
                ApiError::Conflict("A user with this id already exists")
            }
            db::Error::Conflict(db::Taken::UserEmail) => {
                ApiError::Conflict("A user with this email already exists")
            }
            err @ db::Error::Unavailable { .. } => ApiError::Unavailable(err),
            err @ (db::Error::Failed { .. }
            | db::Error::Render(_)
            | db::Error::Incompatible(_)
            | db::Error::Backup { .. }
            | db::Error::Unusable { .. }) => ApiError::internal(err),
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
    status_message: Cow<'static, str>,
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
            | ApiError::InvalidBody { .. }
            | ApiError::InvalidQuery { .. }
            | ApiError::InvalidHeader { .. }
            | ApiError::UnreadableBody => StatusCode::BAD_REQUEST,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::QuotaExceeded(_) | ApiError::WrongConfirmation => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound(_) | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooManyRequests { .. }
            | ApiError::TooManyAttempts { .. }
            | ApiError::TooManyStreams => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Overloaded
            | ApiError::HashingBusy
            | ApiError::Unavailable(_)
            | ApiError::StreamsFull => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (status_message, message) = self.texts();
        let data = match self {
            ApiError::InvalidBody { issues, .. } | ApiError::InvalidQuery { issues, .. } => {
                Some(Data { issues })
            }
            _ => None,
        };
        let mut response = HttpResponse::build(status);
        match self {
            ApiError::MethodNotAllowed { allow } => {
                response.insert_header((header::ALLOW, *allow));
            }
            ApiError::TooManyRequests { retry_after_secs }
            | ApiError::TooManyAttempts { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            ApiError::Overloaded
            | ApiError::HashingBusy
            | ApiError::Unavailable(_)
            | ApiError::StreamsFull
            | ApiError::TooManyStreams => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
            }
            _ => {}
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

    /// The variant's name. Exhaustive on purpose: a new variant does not compile until
    /// it is named here, and then the table below fails until it has a case.
    fn variant(err: &ApiError) -> &'static str {
        match err {
            ApiError::InvalidRouteParams => "InvalidRouteParams",
            ApiError::InvalidBody { .. } => "InvalidBody",
            ApiError::InvalidQuery { .. } => "InvalidQuery",
            ApiError::InvalidHeader { .. } => "InvalidHeader",
            ApiError::IdempotencyKeyReused => "IdempotencyKeyReused",
            ApiError::UnreadableBody => "UnreadableBody",
            ApiError::UnsupportedMediaType => "UnsupportedMediaType",
            ApiError::PayloadTooLarge { .. } => "PayloadTooLarge",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden => "Forbidden",
            ApiError::InvalidCredentials => "InvalidCredentials",
            ApiError::WrongConfirmation => "WrongConfirmation",
            ApiError::NotFound(_) => "NotFound",
            ApiError::Conflict(_) => "Conflict",
            ApiError::QuotaExceeded(_) => "QuotaExceeded",
            ApiError::RouteNotFound => "RouteNotFound",
            ApiError::MethodNotAllowed { .. } => "MethodNotAllowed",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::TooManyAttempts { .. } => "TooManyAttempts",
            ApiError::BodyTimeout => "BodyTimeout",
            ApiError::Overloaded => "Overloaded",
            ApiError::HashingBusy => "HashingBusy",
            ApiError::TooManyStreams => "TooManyStreams",
            ApiError::StreamsFull => "StreamsFull",
            ApiError::Unavailable(_) => "Unavailable",
            ApiError::Internal(_) => "Internal",
        }
    }

    const VARIANTS: usize = 26;

    fn sqlite_error(code: std::ffi::c_int, message: &str) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(message.to_owned()))
    }

    fn busy() -> db::Error {
        db::Error::from(sqlite_error(
            rusqlite::ffi::SQLITE_BUSY,
            "database is locked",
        ))
    }

    /// Everything a response says: status, the headers that matter, the envelope.
    async fn rendered(err: ApiError) -> (u16, Option<String>, Option<String>, serde_json::Value) {
        let response = err.error_response();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let status = response.status().as_u16();
        let (retry_after, allow) = (header(header::RETRY_AFTER), header(header::ALLOW));
        assert_eq!(
            header(header::CONTENT_TYPE).as_deref(),
            Some("application/json")
        );
        let bytes = to_bytes(response.into_body()).await.unwrap();
        (
            status,
            retry_after,
            allow,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[actix_web::test]
    async fn every_api_error_has_its_status_headers_and_envelope() {
        let issue = Issue::unparsable_query(&"bad");
        let issue_json = serde_json::to_value(&issue).unwrap();
        let envelope = |code: u16, status_message: &str, message: &str| json!({"statusCode": code, "statusMessage": status_message, "message": message});
        let with_issues = |mut value: serde_json::Value| {
            value["data"] = json!({"issues": [issue_json.clone()]});
            value
        };
        // (error, status, Retry-After, Allow, envelope)
        type Case = (
            ApiError,
            u16,
            Option<&'static str>,
            Option<&'static str>,
            serde_json::Value,
        );
        let cases: Vec<Case> = vec![
            (
                ApiError::InvalidRouteParams,
                400,
                None,
                None,
                envelope(
                    400,
                    "Bad Request. Invalid routeParams(user_id, chat_id).",
                    "chat_id must be a positive integer",
                ),
            ),
            (
                ApiError::InvalidBody {
                    fields: Some("message | messages"),
                    issues: vec![issue.clone()],
                },
                400,
                None,
                None,
                with_issues(envelope(
                    400,
                    "Bad Request. Invalid body(message | messages).",
                    "Invalid query string: bad",
                )),
            ),
            (
                ApiError::InvalidQuery {
                    fields: "limit, after",
                    issues: vec![issue.clone()],
                },
                400,
                None,
                None,
                with_issues(envelope(
                    400,
                    "Bad Request. Invalid query(limit, after).",
                    "Invalid query string: bad",
                )),
            ),
            (
                ApiError::InvalidHeader {
                    name: "Idempotency-Key",
                    message: "too long",
                },
                400,
                None,
                None,
                envelope(
                    400,
                    "Bad Request. Invalid header(Idempotency-Key).",
                    "too long",
                ),
            ),
            (
                ApiError::IdempotencyKeyReused,
                422,
                None,
                None,
                envelope(
                    422,
                    "Unprocessable Entity",
                    "This Idempotency-Key was already used with a different request",
                ),
            ),
            (
                ApiError::UnreadableBody,
                400,
                None,
                None,
                envelope(400, "Bad Request", "The request body could not be read"),
            ),
            (
                ApiError::UnsupportedMediaType,
                415,
                None,
                None,
                envelope(
                    415,
                    "Unsupported Media Type",
                    "Content-Type must be application/json",
                ),
            ),
            (
                ApiError::PayloadTooLarge { limit: 10 },
                413,
                None,
                None,
                envelope(
                    413,
                    "Payload Too Large",
                    "The request body is larger than 10 bytes",
                ),
            ),
            (
                ApiError::Unauthorized,
                401,
                None,
                None,
                envelope(
                    401,
                    "Unauthorized",
                    "A valid neptun-session cookie is required",
                ),
            ),
            (
                ApiError::Forbidden,
                403,
                None,
                None,
                envelope(403, "Forbidden", "The session does not belong to this user"),
            ),
            (
                ApiError::InvalidCredentials,
                401,
                None,
                None,
                envelope(401, "Unauthorized", "Invalid email or password"),
            ),
            (
                ApiError::WrongConfirmation,
                403,
                None,
                None,
                envelope(
                    403,
                    "Forbidden",
                    "The password (or confirm, for an account without one) does not match",
                ),
            ),
            (
                ApiError::NotFound("Chat not found"),
                404,
                None,
                None,
                envelope(404, "Not Found", "Chat not found"),
            ),
            (
                ApiError::Conflict("A user with this id already exists"),
                409,
                None,
                None,
                envelope(409, "Conflict", "A user with this id already exists"),
            ),
            (
                ApiError::QuotaExceeded(db::QuotaExceeded::Messages(5)),
                403,
                None,
                None,
                envelope(
                    403,
                    "Forbidden. Storage quota exceeded.",
                    "Not stored: a user may keep at most 5 messages; delete messages to make room",
                ),
            ),
            (
                ApiError::RouteNotFound,
                404,
                None,
                None,
                envelope(404, "Not Found", "No route matches this path"),
            ),
            (
                ApiError::MethodNotAllowed { allow: "GET" },
                405,
                None,
                Some("GET"),
                envelope(405, "Method Not Allowed", "This route accepts GET"),
            ),
            (
                ApiError::TooManyRequests {
                    retry_after_secs: 7,
                },
                429,
                Some("7"),
                None,
                envelope(
                    429,
                    "Too Many Requests",
                    "Write rate limit reached; retry in 7 s",
                ),
            ),
            (
                ApiError::TooManyAttempts {
                    retry_after_secs: 4,
                },
                429,
                Some("4"),
                None,
                envelope(429, "Too Many Requests", "Too many attempts; retry in 4 s"),
            ),
            (
                ApiError::BodyTimeout,
                408,
                None,
                None,
                envelope(
                    408,
                    "Request Timeout",
                    "The request body did not arrive in time",
                ),
            ),
            (
                ApiError::Overloaded,
                503,
                Some("1"),
                None,
                envelope(
                    503,
                    "Service Unavailable",
                    "Too many writes are waiting; retry shortly",
                ),
            ),
            (
                ApiError::TooManyStreams,
                429,
                Some("1"),
                None,
                envelope(
                    429,
                    "Too Many Requests",
                    "Too many events streams are open for this user; close one or retry later",
                ),
            ),
            (
                ApiError::StreamsFull,
                503,
                Some("1"),
                None,
                envelope(
                    503,
                    "Service Unavailable",
                    "Too many events streams are open; retry shortly",
                ),
            ),
            (
                ApiError::HashingBusy,
                503,
                Some("1"),
                None,
                envelope(
                    503,
                    "Service Unavailable",
                    "Too many logins and sign-ups are waiting; retry shortly",
                ),
            ),
            (
                ApiError::Unavailable(busy()),
                503,
                Some("1"),
                None,
                envelope(503, "Service Unavailable", "The database is not available"),
            ),
            (
                ApiError::internal("disk I/O error"),
                500,
                None,
                None,
                envelope(
                    500,
                    "Internal Server Error",
                    "Something went wrong on our side",
                ),
            ),
        ];
        let named: std::collections::BTreeSet<_> =
            cases.iter().map(|(err, ..)| variant(err)).collect();
        assert_eq!(named.len(), VARIANTS, "a variant has no case: {named:?}");

        for (err, status, retry_after, allow, body) in cases {
            let name = variant(&err);
            assert_eq!(err.status_code().as_u16(), status, "{name}");
            let rendered = rendered(err).await;
            assert_eq!(
                rendered,
                (
                    status,
                    retry_after.map(str::to_owned),
                    allow.map(str::to_owned),
                    body
                ),
                "{name}"
            );
        }
    }

    #[actix_web::test]
    async fn every_kind_of_storage_error_becomes_its_api_error() {
        let io = || std::io::Error::other("no space");
        let failed = db::Error::from(sqlite_error(
            rusqlite::ffi::SQLITE_CONSTRAINT_CHECK,
            "CHECK constraint failed: actor",
        ));
        let pool = {
            // A pool whose connections cannot open: its `get` fails as a real one does.
            let manager = r2d2_sqlite::SqliteConnectionManager::file("/nonexistent/dir/x.db");
            let pool = r2d2::Pool::builder()
                .connection_timeout(std::time::Duration::from_millis(50))
                .build_unchecked(manager);
            db::Error::from(pool.get().map(drop).unwrap_err())
        };
        let cases: Vec<(db::Error, u16, &str)> = vec![
            (db::Error::NotFound(db::Entity::Chat), 404, "Chat not found"),
            (
                db::Error::NotFound(db::Entity::Message),
                404,
                "No messages in chat",
            ),
            (db::Error::NotFound(db::Entity::User), 404, "User not found"),
            (
                db::Error::NotFound(db::Entity::Session),
                401,
                "A valid neptun-session cookie is required",
            ),
            (
                db::Error::WrongUser,
                403,
                "The session does not belong to this user",
            ),
            (
                db::Error::Conflict(db::Taken::UserId),
                409,
                "A user with this id already exists",
            ),
            (
                db::Error::Conflict(db::Taken::UserEmail),
                409,
                "A user with this email already exists",
            ),
            (
                db::Error::KeyReused,
                422,
                "This Idempotency-Key was already used with a different request",
            ),
            (
                db::Error::KeyAnswerGone,
                409,
                "The messages stored with this Idempotency-Key have been deleted since",
            ),
            (
                db::Error::QuotaExceeded(db::QuotaExceeded::Bytes(100)),
                403,
                "Not stored: a user may keep at most 100 bytes of message text; delete messages to make room",
            ),
            (
                db::Error::Overloaded,
                503,
                "Too many writes are waiting; retry shortly",
            ),
            (busy(), 503, "The database is not available"),
            (pool, 503, "The database is not available"),
            (
                db::Error::writer_gone(),
                503,
                "The database is not available",
            ),
            (failed, 500, "Something went wrong on our side"),
            (
                db::Error::Render("bad".into()),
                500,
                "Something went wrong on our side",
            ),
            (
                db::Error::Incompatible("newer".to_owned()),
                500,
                "Something went wrong on our side",
            ),
            (
                db::Error::Backup {
                    path: "/b".into(),
                    source: io(),
                },
                500,
                "Something went wrong on our side",
            ),
            (
                db::Error::Unusable {
                    what: "create the database /d/neptun.db".into(),
                    reason: "the folder is not writable".into(),
                },
                500,
                "Something went wrong on our side",
            ),
        ];
        for (err, status, message) in cases {
            let described = format!("{err:?}");
            let api = ApiError::from(err);
            assert_eq!(api.status_code().as_u16(), status, "{described}");
            let body = body_of(api).await;
            assert_eq!(body["message"], message, "{described}");
        }
    }

    #[test]
    fn only_the_busy_timeout_running_out_is_busy_and_the_sqlite_error_stays_the_source() {
        let cases = [
            (rusqlite::ffi::SQLITE_BUSY, true),
            (rusqlite::ffi::SQLITE_BUSY_SNAPSHOT, true),
            (rusqlite::ffi::SQLITE_FULL, false),
            (rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE, false),
            (rusqlite::ffi::SQLITE_READONLY, false),
        ];
        for (code, is_busy) in cases {
            let err = db::Error::from(sqlite_error(code, "the message"));
            let unavailable = matches!(
                err,
                db::Error::Unavailable {
                    reason: db::Unavailable::Busy,
                    ..
                }
            );
            assert_eq!(unavailable, is_busy, "{code}: {err:?}");
            let api = ApiError::from(err);
            assert!(format!("{api:?}").contains("the message"), "{api:?}");
        }
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
