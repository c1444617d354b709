//! The HTTP routes. [`configure`](crate::routes::configure) registers all of them; the server and the tests both
//! use it, so they serve exactly the same thing.

mod account;
mod auth;
mod chats;
mod console;
pub mod docs;
mod events;
mod favicon;
mod health;
mod messages;
pub mod schema;
mod search;

use actix_web::{Resource, Route, guard, web};

use crate::auth::Claim;
use crate::error::ApiError;

/// Registers every route of the service.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz", GET).route(get().to(health::healthz)))
        .service(resource("/readyz", GET).route(get().to(health::readyz)))
        .service(resource("/metrics", GET).route(get().to(crate::telemetry::serve_metrics)))
        .service(resource("/openapi.json", GET).route(get().to(docs::openapi)))
        .service(resource("/docs", GET).route(get().to(docs::page)))
        .service(resource("/docs/{asset}", GET).route(get().to(docs::asset)))
        .service(resource("/favicon.ico", GET).route(get().to(favicon::favicon)))
        .service(resource("/", GET).route(get().to(console::page)))
        .service(resource("/console/{file}", GET).route(get().to(console::asset)))
        .service(
            web::scope("/api/auth")
                .service(resource("/sign-up", "POST").route(web::post().to(auth::sign_up)))
                .service(resource("/login", "POST").route(web::post().to(auth::login)))
                .service(resource("/logout", "POST").route(web::post().to(auth::logout)))
                .service(resource("/session", GET).route(get().to(auth::current_session)))
                .service(resource("/check", "HEAD").route(web::head().to(auth::check))),
        )
        // No middleware: every handler in this scope, and its 404 and 405s, goes
        // through `auth::Claim`, which puts 401 and 403 before everything else.
        .service(
            web::scope("/api/users/{user_id}")
                .service(
                    user_resource("/chats", "GET, HEAD, POST, DELETE")
                        .route(get().to(chats::list))
                        .route(web::post().to(chats::create))
                        .route(web::delete().to(chats::delete_many)),
                )
                .service(
                    user_resource("/chats/{chat_id}", "GET, HEAD, PATCH, DELETE")
                        .route(get().to(chats::get_one))
                        .route(web::patch().to(chats::rename))
                        .route(web::delete().to(chats::delete_one)),
                )
                .service(
                    user_resource("/chats/{chat_id}/messages", "GET, HEAD, POST")
                        .route(get().to(messages::list))
                        .route(web::post().to(messages::create)),
                )
                .service(user_resource("/events", "GET, HEAD").route(get().to(events::stream)))
                .service(user_resource("/search", "GET, HEAD").route(get().to(search::search)))
                .service(user_resource("/export", "GET, HEAD").route(get().to(account::export)))
                .service(user_resource("", "DELETE").route(web::delete().to(account::delete)))
                .service(
                    user_resource("/chats/{chat_id}/messages/last", "DELETE")
                        .route(web::delete().to(messages::delete_last)),
                )
                .default_service(web::to(|claim: Claim| async move {
                    Err::<&str, _>(claim.refuse(ApiError::RouteNotFound).await)
                })),
        );
}

/// The `Allow` list of read-only resources.
const GET: &str = "GET, HEAD";

/// A GET route that also answers HEAD (same status and headers, no body).
fn get() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// A resource whose other methods get a JSON 405 naming the `allow`ed ones.
fn resource(path: &str, allow: &'static str) -> Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<&str, _>(ApiError::MethodNotAllowed { allow })
    }))
}

/// A resource under `/api/users/{user_id}` whose other methods get a JSON 405 naming
/// the `allow`ed ones, once the claim is settled (401 and 403 first).
fn user_resource(path: &str, allow: &'static str) -> Resource {
    web::resource(path).default_service(web::to(move |claim: Claim| async move {
        Err::<&str, _>(claim.refuse(ApiError::MethodNotAllowed { allow }).await)
    }))
}

/// The JSON 404 for paths no route matches.
pub async fn route_not_found() -> Result<&'static str, ApiError> {
    Err(ApiError::RouteNotFound)
}
