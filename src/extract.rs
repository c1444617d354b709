//! Request extractors whose failures are [`ApiError`](crate::error::ApiError)s, so framework-level problems
//! (wrong content type, oversized or malformed body) get the same JSON envelope as
//! everything else.
//!
//! Handlers take these as `Result<JsonBody, ApiError>`, or read the body with
//! [`read_body`](crate::extract::read_body) once [`Claim::run`](crate::auth::Claim::run)
//! asks for their inputs, and look at the error only after authentication, so an
//! unauthenticated request never learns what else was wrong.

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

/// Bodies larger than this are parsed on a blocking thread: a few KB parse in
/// microseconds, but megabytes of JSON take the async worker away from every other
/// connection it serves for as long as they take.
pub const PARSE_OFF_WORKER_OVER: usize = 16 * 1024;

/// A request body that was `application/json`, within the size limit, and well-formed.
/// What it means is checked later, by [`validation`](crate::validation).
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl JsonBody {
    /// Parses `bytes` as JSON, on the calling thread: callers with a large body call
    /// this inside `web::block`.
    pub fn parse(bytes: &[u8]) -> Result<JsonBody, ApiError> {
        serde_json::from_slice(bytes)
            .map(JsonBody)
            .map_err(|err| ApiError::InvalidBody {
                fields: None,
                issues: vec![Issue::invalid_json(&err)],
            })
    }
}

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = read_body(req, payload);
        Box::pin(async move {
            let bytes = bytes.await?;
            if bytes.len() > PARSE_OFF_WORKER_OVER {
                web::block(move || JsonBody::parse(&bytes))
                    .await
                    .map_err(ApiError::internal)?
            } else {
                JsonBody::parse(&bytes)
            }
        })
    }
}

/// The bytes of a JSON request body: 415 if it is not `application/json`, 413 over the
/// size limit, 408 if it does not arrive in time.
pub fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
) -> impl Future<Output = Result<Bytes, ApiError>> + 'static {
    let is_json =
        matches!(req.mime_type(), Ok(Some(mime)) if mime.essence_str() == "application/json");
    // The same figure is registered as the `PayloadConfig` limit that `Bytes` enforces.
    let limits = req
        .app_data::<web::Data<Limits>>()
        .map_or_else(Limits::default, |limits| *limits.get_ref());
    let (limit, timeout) = (limits.max_body_bytes, limits.body_timeout);
    let bytes = Bytes::from_request(req, payload);
    async move {
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        actix_web::rt::time::timeout(timeout, bytes)
            .await
            .map_err(|_| ApiError::BodyTimeout)?
            .map_err(|err| match err.as_error::<PayloadError>() {
                Some(PayloadError::Overflow) => ApiError::PayloadTooLarge { limit },
                _ => ApiError::UnreadableBody,
            })
    }
}
