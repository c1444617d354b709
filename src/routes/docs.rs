//! The API's own description: the OpenAPI 3 document at `/openapi.json`, generated from
//! the `#[utoipa::path]` annotation on each handler, and a Swagger UI page at `/docs`
//! whose assets are compiled into the binary (no CDN, works offline).
//!
//! Request bodies are validated by hand (to report zod-style issues), so their schemas
//! are documentation-only types, kept in the leaf module [`schema`](crate::routes::schema)
//! that the handlers import; the integration tests and the API tester in CI check that
//! what the server accepts and answers matches them.

use std::sync::OnceLock;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, ContentType};
use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{auth, chats, health, messages};
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
        chats::get_one,
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
                "GET /api/users/{user_id}/chats/{chat_id}",
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
