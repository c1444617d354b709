//! `GET /favicon.ico`: browsers ask for it on every `/docs` view. The service has no
//! icon; an empty 204 (cached for a day) keeps those requests out of the 404s, where
//! they would hide the 404s worth looking at.

use actix_web::HttpResponse;
use actix_web::http::header;

/// 204 No Content, cacheable for a day.
pub(super) async fn favicon() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::CACHE_CONTROL, "public, max-age=86400"))
        .finish()
}
