//! The HTTP routes. [`configure`] registers all of them; the server and the tests both
//! use it, so they serve exactly the same thing.

mod health;
mod messages;

use actix_web::middleware::from_fn;
use actix_web::{Resource, web};

use crate::auth;
use crate::error::ApiError;

/// Registers every route of the service.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz", "GET").route(web::get().to(health::healthz)))
        .service(
            web::scope("/api/users/{user_id}")
                .wrap(from_fn(auth::require_session))
                .service(
                    resource("/chats/{chat_id}/messages", "POST")
                        .route(web::post().to(messages::create)),
                )
                .default_service(web::to(route_not_found)),
        );
}

/// A resource whose other methods get a JSON 405 naming the `allow`ed ones.
fn resource(path: &str, allow: &'static str) -> Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<&str, _>(ApiError::MethodNotAllowed { allow })
    }))
}

/// The JSON 404 for paths no route matches.
pub async fn route_not_found() -> Result<&'static str, ApiError> {
    Err(ApiError::RouteNotFound)
}
