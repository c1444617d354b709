//! Logging: `env_logger` set up from `RUST_LOG` (default `info`), and one log line per
//! request with its method, route template, status, latency and request id.
//!
//! Never log tokens, cookies, passwords or message texts: this module logs route
//! templates (not raw paths) and error chains, which are built to leave those out.

use std::time::Instant;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;

use crate::auth::random_url_safe;

/// The header that carries the request id, in and out.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Starts logging to stderr; the level comes from `RUST_LOG`, `info` by default.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
}

/// The id of the request being served: the client's `X-Request-Id` if it is sane,
/// otherwise a new random one. Available to handlers through request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    fn from_request(req: &ServiceRequest) -> RequestId {
        let given = req
            .headers()
            .get(&REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| {
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
            });
        match given {
            Some(id) => RequestId(id.to_owned()),
            None => RequestId::generate(),
        }
    }

    fn generate() -> RequestId {
        // Request ids only need to be unique enough to grep for; fall back to the clock.
        let id = random_url_safe::<12>().unwrap_or_else(|_| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!("{nanos:x}")
        });
        RequestId(id)
    }
}

/// Middleware around the whole app: assigns the request id, returns it in
/// `X-Request-Id`, and logs the request once it is answered. A 5xx also logs the
/// error's full cause chain, which the client never sees.
pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = RequestId::from_request(&req);
    req.extensions_mut().insert(request_id.clone());
    let method = req.method().clone();
    // Holding a clone of the HttpRequest across `next.call` would break routing (it needs
    // unique access), so an error that escapes as `Err` is logged here and rendered by
    // actix; every error of ours is already a response by this point.
    let mut res = match next.call(req).await {
        Ok(res) => res,
        Err(err) => {
            log::error!("{method} request_id={} error: {err:?}", request_id.0);
            return Err(err);
        }
    };

    let status = res.status();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "<unmatched>".to_owned());
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if status.is_server_error() {
        let cause = res
            .response()
            .error()
            .map(|err| format!("{err:?}"))
            .unwrap_or_default();
        log::error!(
            "{method} {route} {} {elapsed_ms:.1}ms request_id={} error: {cause}",
            status.as_u16(),
            request_id.0
        );
    } else {
        log::info!(
            "{method} {route} {} {elapsed_ms:.1}ms request_id={}",
            status.as_u16(),
            request_id.0
        );
    }
    if let Ok(value) = HeaderValue::from_str(&request_id.0) {
        res.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    Ok(res)
}
