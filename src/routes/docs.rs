//! The API's own description: the OpenAPI 3 document at `/openapi.json`, generated from
//! the `#[utoipa::path]` annotation on each handler, and a Swagger UI page at `/docs`
//! whose assets are compiled into the binary (no CDN, works offline).
//!
//! What a reader of `/docs` sees as each operation's summary and description is the
//! [`OPERATIONS`] table here, not the handlers' doc comments, which are written for
//! people reading the code. The limits in the document (batch size, text length) are
//! the running server's: [`ApiDocument::new`] renders it from the settings at start-up.
//!
//! Request bodies are validated by hand (to report zod-style issues), so their schemas
//! are documentation-only types, kept in the leaf module [`schema`](crate::routes::schema)
//! that the handlers import; the integration tests and the API tester in CI check that
//! what the server accepts and answers matches them.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, ContentType};
use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{account, auth, chats, events, health, messages, search};
use crate::config::Limits;
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
        metrics,
        auth::sign_up,
        auth::login,
        auth::logout,
        auth::current_session,
        auth::check,
        chats::list,
        chats::create,
        chats::get_one,
        chats::rename,
        chats::delete_one,
        chats::delete_many,
        messages::list,
        messages::create,
        messages::delete_last,
        events::stream,
        search::search,
        account::export,
        account::delete,
    ),
    modifiers(&SessionCookie, &Summaries),
    tags(
        (name = "auth", description = "Sign-up, login, logout and the current session"),
        (name = "chats", description = "A user's chats"),
        (name = "messages", description = "The messages of a chat"),
        (name = "events", description = "The user's changes, live, as Server-Sent Events"),
        (name = "search", description = "Full-text search across the user's chats"),
        (name = "account", description = "The user's data as a file, and deleting the account"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// `GET /metrics`, served by [`crate::telemetry::serve_metrics`]; described here so
/// that the telemetry module needs no documentation types.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4", body = String),
    )
)]
#[allow(dead_code)]
fn metrics() {}

/// Each operation's summary and description for readers of `/docs`, by operation id:
/// short sentences about what the operation does for the caller.
pub const OPERATIONS: &[(&str, &str, &str)] = &[
    (
        "export",
        "Download everything of the user.",
        "The user, every chat and every message in order, as NDJSON (export format version 1), streamed from one snapshot; neptun-chat import reads it back.",
    ),
    (
        "delete_account",
        "Delete the account and all of its data.",
        "Deletes the user with every session, chat, message, idempotency answer, search index entry and recorded change, after checking the password again (or, for an account made without one, confirm set to the user id).",
    ),
    (
        "search",
        "Search the user's messages.",
        "Full-text search across all of the user's chats: words (all must match), quoted phrases, prefixes with *, and -word to leave out; case and accents do not matter. Best matches first, each with its chat and a snippet whose matched words are marked with <mark>. Paged with next_cursor.",
    ),
    (
        "events",
        "Follow the user's changes live.",
        "A Server-Sent Events stream of every change to the user's chats and messages, in commit order. Reconnecting with Last-Event-ID (EventSource does it by itself) or ?after= replays what was missed; an id older than the replay window gets a reset event.",
    ),
    (
        "healthz",
        "Check that the service is up.",
        "Answers 200 while the database answers.",
    ),
    (
        "readyz",
        "Check that the service takes writes.",
        "Answers 200 when the database can be written to, 503 when it cannot.",
    ),
    (
        "metrics",
        "Read the service's metrics.",
        "Counters, gauges and histograms in the Prometheus text format.",
    ),
    (
        "sign_up",
        "Create an account and sign in.",
        "Creates a user with a generated id and sets the session cookie.",
    ),
    (
        "login",
        "Sign in with an email and a password.",
        "Sets the session cookie. A wrong email and a wrong password get the same answer.",
    ),
    (
        "logout",
        "Sign out.",
        "Ends the presented session, if there is one, and clears the cookie. Signing out twice is not an error.",
    ),
    (
        "get_session",
        "Get the signed-in user.",
        "Answers 401 without a valid session.",
    ),
    (
        "check_session",
        "Check whether the session is valid.",
        "Answers 200 with a valid session and 401 without one, with no body either way.",
    ),
    (
        "list_chats",
        "List the user's chats.",
        "Newest activity first unless another order is asked for.",
    ),
    (
        "get_chat",
        "Get one of the user's chats.",
        "Answers 404 when the user has no chat with this id.",
    ),
    (
        "create_chat",
        "Create a chat.",
        "Names and models are trimmed and must not be blank.",
    ),
    (
        "rename_chat",
        "Rename a chat.",
        "The name is trimmed and must not be blank.",
    ),
    (
        "delete_chat",
        "Delete a chat and its messages.",
        "The chat and all of its messages are gone at once.",
    ),
    (
        "delete_chats",
        "Delete several chats at once.",
        "Deletes the listed chats that belong to the user and names the others as not found.",
    ),
    (
        "list_messages",
        "Read a chat's messages.",
        "Oldest first: the whole chat, or one page of it with a cursor for the next.",
    ),
    (
        "create_messages",
        "Add a message or a batch of messages to a chat.",
        "A batch is stored all or nothing, in order. With an Idempotency-Key a retry gets the first answer instead of storing the messages twice.",
    ),
    (
        "delete_last_turn",
        "Delete the chat's last turn.",
        "Removes the last answer and the user messages just before it, so that the answer can be asked for again.",
    ),
];

/// Puts the [`OPERATIONS`] texts on the operations.
struct Summaries;

impl Modify for Summaries {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                let texts = OPERATIONS
                    .iter()
                    .find(|(id, _, _)| operation.operation_id.as_deref() == Some(id));
                // An operation missing from the table keeps no text written for the
                // code; a unit test names it.
                operation.summary = texts.map(|(_, summary, _)| (*summary).to_owned());
                operation.description = texts.map(|(_, _, description)| (*description).to_owned());
            }
        }
    }
}

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

/// The OpenAPI document of a running server, rendered once at start-up.
#[derive(Debug, Clone)]
pub struct ApiDocument {
    json: String,
}

impl ApiDocument {
    /// The document with the server's own limits where the annotations hold the
    /// defaults: most messages per batch, and the longest message text.
    pub fn new(limits: &Limits) -> ApiDocument {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        apply_limits(&mut doc, limits);
        let json = serde_json::to_string_pretty(&doc)
            .unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"));
        ApiDocument { json }
    }

    /// The document as JSON.
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// Writes `limits` into the message schemas. A text limit is in UTF-8 bytes, a JSON
/// Schema `maxLength` in characters: a character takes up to four bytes, so a quarter
/// of the bytes is the most characters every text can have.
fn apply_limits(doc: &mut serde_json::Value, limits: &Limits) {
    let max_chars = (limits.max_text_bytes / 4).max(1);
    let schemas = &mut doc["components"]["schemas"];
    schemas["NewMessageBody"]["properties"]["content"]["maxLength"] = max_chars.into();
    if let Some(forms) = schemas["CreateMessagesBody"]["oneOf"].as_array_mut() {
        for form in forms {
            let properties = &mut form["properties"];
            if properties.get("message").is_some() {
                properties["message"]["maxLength"] = max_chars.into();
            }
            if properties.get("messages").is_some() {
                properties["messages"]["maxItems"] = limits.max_batch.into();
                properties["messages"]["description"] =
                    format!("1 to {} messages.", limits.max_batch).into();
            }
        }
    }
}

/// `GET /openapi.json`
pub async fn openapi(doc: web::Data<ApiDocument>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(doc.json().to_owned())
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

    fn document(limits: &Limits) -> serde_json::Value {
        serde_json::from_str(ApiDocument::new(limits).json()).unwrap()
    }

    /// Every operation of the document, as (method, path, operation).
    fn operations(doc: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
        doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .iter()
                    .filter(|(key, _)| *key != "parameters")
                    .map(|(method, operation)| {
                        (method.to_uppercase(), path.clone(), operation.clone())
                    })
            })
            .collect()
    }

    #[test]
    fn every_operation_has_a_short_plain_summary_and_description_from_the_table() {
        let doc = document(&Limits::default());

        for (method, path, operation) in operations(&doc) {
            let case = format!("{method} {path}");
            let summary = operation["summary"].as_str().unwrap_or_else(|| {
                panic!(
                    "{case} ({}) has no entry in OPERATIONS",
                    operation["operationId"]
                )
            });
            let description = operation["description"].as_str().unwrap();
            for text in [summary, description] {
                assert!(!text.contains('`'), "{case}: no backticks: {text}");
                assert!(!text.contains(&path), "{case}: no path: {text}");
                assert!(
                    !text.contains(&format!("{method} ")),
                    "{case}: no method: {text}"
                );
                assert!(
                    !text.contains(".rs") && !text.contains("::"),
                    "{case}: no code: {text}"
                );
                assert!(text.ends_with('.'), "{case}: a sentence: {text}");
            }
            assert!(summary.len() <= 60, "{case}: a short summary: {summary}");
        }
    }

    #[test]
    fn every_entry_of_the_table_is_an_operation_of_the_document() {
        let doc = document(&Limits::default());
        let ids: Vec<String> = operations(&doc)
            .iter()
            .map(|(_, _, operation)| operation["operationId"].as_str().unwrap().to_owned())
            .collect();

        for (id, _, _) in OPERATIONS {
            assert!(
                ids.iter().any(|known| known == id),
                "{id} is not in the document"
            );
        }
        assert!(
            ids.contains(&"metrics".to_owned()),
            "/metrics is documented"
        );
    }

    #[test]
    fn the_documents_limits_are_the_servers() {
        for limits in [
            Limits::default(),
            Limits {
                max_batch: 7,
                max_text_bytes: 400,
                ..Limits::default()
            },
        ] {
            let doc = document(&limits);
            let schemas = &doc["components"]["schemas"];
            let forms = schemas["CreateMessagesBody"]["oneOf"].as_array().unwrap();
            let single = forms
                .iter()
                .find(|f| f["properties"]["message"].is_object())
                .unwrap();
            let batch = forms
                .iter()
                .find(|f| f["properties"]["messages"].is_object())
                .unwrap();

            let chars = limits.max_text_bytes / 4;
            assert_eq!(
                single["properties"]["message"]["maxLength"], chars,
                "{limits:?}"
            );
            assert_eq!(
                schemas["NewMessageBody"]["properties"]["content"]["maxLength"], chars,
                "{limits:?}"
            );
            assert_eq!(
                batch["properties"]["messages"]["maxItems"], limits.max_batch,
                "{limits:?}"
            );
            assert_eq!(
                batch["properties"]["messages"]["description"],
                format!("1 to {} messages.", limits.max_batch)
            );
        }
    }
}
