//! Request extractors whose failures are [`ApiError`](crate::error::ApiError)s, so framework-level problems
//! (wrong content type, oversized or malformed body) get the same JSON envelope as
//! everything else.
//!
//! Handlers take these as `Result<JsonBody, ApiError>` and look at the error only after
//! authentication, so an unauthenticated request never learns what else was wrong.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use serde_json::Value;

use crate::config::Limits;
use crate::error::ApiError;
use crate::validation::Issue;

/// A request body that was `application/json`, within the size limit, and well-formed.
/// What it means is checked later, by [`validation`](crate::validation).
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json =
            matches!(req.mime_type(), Ok(Some(mime)) if mime.essence_str() == "application/json");
        // The same figure is registered as the `PayloadConfig` limit that `Bytes` enforces.
        let limits = req
            .app_data::<web::Data<Limits>>()
            .map_or_else(Limits::default, |limits| *limits.get_ref());
        let (limit, timeout) = (limits.max_body_bytes, limits.body_timeout);
        let bytes = Bytes::from_request(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::UnsupportedMediaType);
            }
            let bytes = actix_web::rt::time::timeout(timeout, bytes)
                .await
                .map_err(|_| ApiError::BodyTimeout)?
                .map_err(|err| match err.as_error::<PayloadError>() {
                    Some(PayloadError::Overflow) => ApiError::PayloadTooLarge { limit },
                    _ => ApiError::UnreadableBody,
                })?;
            serde_json::from_slice(&bytes)
                .map(JsonBody)
                .map_err(|err| ApiError::InvalidBody {
                    fields: None,
                    issues: vec![Issue::invalid_json(&err)],
                })
        })
    }
}
