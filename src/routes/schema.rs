//! The documentation-only types of the API document: path parameters, request bodies
//! (validated by hand, to report zod-style issues, so these only describe them), the
//! error envelope and the error answers many routes share.
//!
//! A leaf: the handlers name these in their `#[utoipa::path]` annotations and
//! [`docs`](crate::routes::docs) assembles the document from the handlers, so the
//! arrows run one way, handlers and docs to here, and nothing here imports a handler.

use serde::Serialize;
use utoipa::{IntoParams, IntoResponses, ToSchema};

use crate::domain::Role;

/// The path of a route under `/api/users/{user_id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct UserPathParams {
    /// The id of the user whose session is presented.
    user_id: String,
}

/// The path of a route about one chat.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct ChatPathParams {
    /// The id of the user whose session is presented.
    user_id: String,
    /// The chat's id.
    #[param(minimum = 1)]
    chat_id: i64,
}

/// The answers every route under `/api/users/{user_id}` may give before its own work.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum SessionErrors {
    /// No valid session.
    #[response(status = 401, description = "No valid session")]
    Unauthorized(ErrorBody),
    /// The session belongs to another user than the path's.
    #[response(status = 403, description = "The session is another user's")]
    Forbidden(ErrorBody),
}

/// The answers of a route that reads a JSON body, about the body as bytes.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum JsonBodyErrors {
    /// The body did not arrive within the body timeout.
    #[response(status = 408, description = "The body did not arrive in time")]
    Timeout(ErrorBody),
    /// The body is larger than `--max-body-bytes`.
    #[response(status = 413, description = "Body too large")]
    TooLarge(ErrorBody),
    /// The body is not `application/json`.
    #[response(status = 415, description = "Not application/json")]
    NotJson(ErrorBody),
}

/// The answer of a route under `/api/users/{user_id}` that writes, when the user's
/// write rate limit is used up.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum RateLimited {
    /// The user's write rate limit is used up.
    #[response(
        status = 429,
        description = "The user's write rate limit (`--write-rate-limit`) is used up",
        headers(("Retry-After" = u64, description = "Seconds until a write is accepted again"))
    )]
    RateLimited(ErrorBody),
}

/// The answer of a route that writes, when too many writes are waiting or the database
/// cannot serve right now.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Overloaded {
    /// Too many writes are waiting, or the database is busy or unavailable.
    #[response(
        status = 503,
        description = "Too many writes are waiting, or the database is busy; retry shortly",
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))
    )]
    Overloaded(ErrorBody),
}

/// The answer of a route that hashes a password and writes, when too many hashes or
/// writes are waiting (instead of [`Overloaded`]: one answer per status).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum HashingBusy {
    /// Too many password hashes or writes are waiting.
    #[response(
        status = 503,
        description = "Too many logins, sign-ups or writes are waiting, or the database is busy; retry shortly",
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))
    )]
    HashingBusy(ErrorBody),
}

/// The error envelope every failing response carries.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// The HTTP status code.
    #[schema(rename = "statusCode", example = 400)]
    status_code: u16,
    /// A short text, e.g. `Bad Request. Invalid body(message | messages).`
    #[schema(rename = "statusMessage")]
    status_message: String,
    /// A human explanation.
    message: String,
    /// For invalid bodies and queries: `{"issues": [...]}`.
    data: Option<ErrorData>,
}

/// Details of a validation failure.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorData {
    /// Every problem found.
    issues: Vec<IssueBody>,
}

/// One problem, shaped like a zod issue (other properties allowed). Codes add their own fields: `expected` and
/// `received` (`invalid_type`), `minimum` / `maximum` and `type` (`too_small`,
/// `too_big`), `options` and `received` (`invalid_enum_value`), `validation`
/// (`invalid_string`), `line` and `column` (`invalid_json`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct IssueBody {
    /// What kind of problem.
    #[schema(example = "invalid_type")]
    code: String,
    /// Where: object keys and array indexes, e.g. `["messages", 2, "role"]`.
    path: Vec<IssuePathSegment>,
    /// A sentence for people.
    message: String,
}

/// One element of an issue's `path`.
#[derive(ToSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum IssuePathSegment {
    /// An object key.
    Key(String),
    /// An array index.
    Index(u64),
}

/// `{"email", "password"}`
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CredentialsBody {
    /// An email address; stored lower-cased.
    #[schema(format = Email, max_length = 254, example = "ada@example.org")]
    email: String,
    /// 8 to 1024 characters.
    #[schema(min_length = 8, max_length = 1024, example = "correct horse battery")]
    password: String,
}

/// `{"name", "model"}`
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NewChatBody {
    /// 1 to 200 characters after trimming.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "Trip planning"
    )]
    name: String,
    /// The model the chat talks to; 1 to 200 characters after trimming.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "llama-3-8b"
    )]
    model: String,
}

/// `{"name"}`
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RenameChatBody {
    /// 1 to 200 characters after trimming.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "Renamed chat"
    )]
    name: String,
}

/// `{"chat_ids": [...]}`
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChatIdsBody {
    /// 1 to 1000 chat ids, each a positive integer.
    #[schema(min_items = 1, max_items = 1000, minimum = 1)]
    chat_ids: Vec<i64>,
}

/// One message of a batch.
#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
pub struct NewMessageBody {
    /// The text, stored exactly as sent; not empty or only whitespace. The server's limit
    /// is in UTF-8 bytes; the schema's character limit is a quarter of it (the running
    /// server's document says its own).
    #[schema(min_length = 1, max_length = 65536, pattern = r"\S")]
    content: String,
    /// Who wrote it.
    role: Role,
}

/// A create-messages body: one message, or an ordered batch. A body with both
/// `messages` and `message`/`actor` is ambiguous and rejected. Unknown fields are ignored.
#[derive(ToSchema, Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum CreateMessagesBody {
    /// `{"message", "actor"}`
    Single {
        /// The text, stored exactly as sent; not empty or only whitespace.
        #[schema(
            min_length = 1,
            max_length = 65536,
            pattern = r"\S",
            example = "Hello!"
        )]
        message: String,
        /// Who wrote it.
        actor: Role,
    },
    /// `{"messages": [{"content", "role"}, ...]}`: stored in one transaction, in order.
    Batch {
        /// 1 to the server's batch limit of messages (the running server's document
        /// says its own).
        #[schema(min_items = 1, max_items = 1000)]
        messages: Vec<NewMessageBody>,
    },
}

#[cfg(test)]
mod tests {
    /// The handlers, as compiled: none of them may import `docs`, which imports them.
    const HANDLERS: [(&str, &str); 4] = [
        ("auth.rs", include_str!("auth.rs")),
        ("chats.rs", include_str!("chats.rs")),
        ("health.rs", include_str!("health.rs")),
        ("messages.rs", include_str!("messages.rs")),
    ];

    #[test]
    fn no_handler_imports_the_module_that_assembles_the_document() {
        for (file, source) in HANDLERS {
            let imports_docs = source
                .lines()
                .filter(|line| line.trim_start().starts_with("use "))
                .any(|line| line.contains("docs"));
            assert!(!imports_docs, "{file} imports routes::docs");
        }
    }
}
