//! The API's own description: the OpenAPI 3 document at `/openapi.json`, generated from
//! the `#[utoipa::path]` annotation on each handler, and a Swagger UI page at `/docs`
//! whose assets are compiled into the binary (no CDN, works offline).
//!
//! Request bodies are validated by hand (to report zod-style issues), so their schemas
//! are the documentation-only types below; the integration tests and the API tester in
//! CI check that what the server accepts and answers matches them.

use std::sync::OnceLock;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, ContentType};
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};

use super::{auth, chats, health, messages};
use crate::domain::Role;
use crate::error::ApiError;

/// The whole API, assembled from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "neptun-chat",
        description = "A self-hosted chat-message store. Authenticate with the `neptun-session` \
                       cookie set by sign-up or login (or made with `neptun-chat session create`). \
                       Every error is the JSON envelope `ErrorBody`."
    ),
    paths(
        health::healthz,
        health::readyz,
        auth::sign_up,
        auth::login,
        auth::logout,
        auth::current_session,
        auth::check,
        chats::list,
        chats::create,
        chats::rename,
        chats::delete_one,
        chats::delete_many,
        messages::list,
        messages::create,
        messages::delete_last,
    ),
    modifiers(&SessionCookie),
    tags(
        (name = "auth", description = "Sign-up, login, logout and the current session"),
        (name = "chats", description = "A user's chats"),
        (name = "messages", description = "The messages of a chat"),
        (name = "operations", description = "Health"),
    )
)]
pub struct ApiDoc;

/// Declares the `neptun-session` cookie as the API's security scheme.
struct SessionCookie;

impl Modify for SessionCookie {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::SESSION_COOKIE,
            ))),
        );
    }
}

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

/// The answer of a route under `/api/users/{user_id}` that writes, when the session's
/// write rate limit is used up.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum RateLimited {
    /// The session's write rate limit is used up.
    #[response(
        status = 429,
        description = "The session's write rate limit (`--write-rate-limit`) is used up",
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
        description = "Too many logins, sign-ups or writes are waiting; retry shortly",
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
    /// The text, stored exactly as sent; not empty or only whitespace; at most 256 KiB
    /// of UTF-8 by default (the schema's character limit is a quarter of that).
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
        /// 1 to 1000 messages.
        #[schema(min_items = 1, max_items = 1000)]
        messages: Vec<NewMessageBody>,
    },
}

/// The document, rendered once.
fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"))
    })
}

/// `GET /openapi.json`
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(openapi_json())
}

const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                        img-src 'self' data:; connect-src 'self'; font-src 'self' data:; \
                        frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const DOCS_HTML: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>neptun-chat API</title>
    <link rel="stylesheet" href="/docs/swagger-ui.css">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/swagger-ui-bundle.js"></script>
    <script src="/docs/init.js"></script>
  </body>
</html>
"#;

/// Kept out of the page so the CSP can forbid inline scripts. `validatorUrl: null` turns
/// off the badge that, on any host but localhost, would send the document's URL to
/// validator.swagger.io.
const DOCS_INIT_JS: &str = r##"window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    withCredentials: true,
    deepLinking: true,
    validatorUrl: null,
  });
};
"##;

const SWAGGER_UI_JS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_UI_CSS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");

/// `GET /docs`: the Swagger UI page.
pub async fn page() -> HttpResponse {
    serve("text/html; charset=utf-8", DOCS_HTML.as_bytes())
}

/// `GET /docs/{asset}`: the page's script and style sheet, all compiled in.
pub async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (content_type, body): (&str, &'static [u8]) = match name.as_str() {
        "init.js" => ("text/javascript; charset=utf-8", DOCS_INIT_JS.as_bytes()),
        "swagger-ui-bundle.js" => ("text/javascript; charset=utf-8", SWAGGER_UI_JS),
        "swagger-ui.css" => ("text/css; charset=utf-8", SWAGGER_UI_CSS),
        _ => return Err(ApiError::RouteNotFound),
    };
    Ok(serve(content_type, body))
}

fn serve(content_type: &str, body: &'static [u8]) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((CONTENT_SECURITY_POLICY, DOCS_CSP))
        .insert_header((CACHE_CONTROL, "public, max-age=3600"))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_route_with_its_methods() {
        let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
        let mut routes: Vec<String> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|key| *key != "parameters")
                    .map(move |method| format!("{} {path}", method.to_uppercase()))
            })
            .collect();
        routes.sort();
        assert_eq!(
            routes,
            [
                "DELETE /api/users/{user_id}/chats",
                "DELETE /api/users/{user_id}/chats/{chat_id}",
                "DELETE /api/users/{user_id}/chats/{chat_id}/messages/last",
                "GET /api/auth/session",
                "GET /api/users/{user_id}/chats",
                "GET /api/users/{user_id}/chats/{chat_id}/messages",
                "GET /healthz",
                "GET /readyz",
                "HEAD /api/auth/check",
                "PATCH /api/users/{user_id}/chats/{chat_id}",
                "POST /api/auth/login",
                "POST /api/auth/logout",
                "POST /api/auth/sign-up",
                "POST /api/users/{user_id}/chats",
                "POST /api/users/{user_id}/chats/{chat_id}/messages",
            ]
        );
    }
}
