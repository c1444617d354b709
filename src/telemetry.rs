//! Observability: `env_logger` set up from `RUST_LOG` (default `info`, without
//! actix-server's own start-up and shutdown lines); one log line per request with its
//! method, route template, status, latency and request id; and the Prometheus metrics
//! served at `/metrics` (requests, latency, messages and batches stored, write-queue
//! depth, busy database, open connections, process memory). Every series without
//! labels is exported from start-up, at 0.
//!
//! Never log tokens, cookies, passwords or message texts: this module logs route
//! templates (not raw paths) and error chains, which are built to leave those out.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::metric_names::{
    BATCHES_STORED, DB_BUSY, EVENTS_LAG, EVENTS_SENT, LATENCY, MESSAGES_STORED, OPEN_CONNECTIONS,
    OPEN_STREAMS, REQUESTS, RESIDENT_MEMORY, STREAMS_RESET, WRITE_QUEUE_DEPTH,
};
use crate::random::random_url_safe;

/// The header that carries the request id, in and out.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// What is logged when `RUST_LOG` is not set: `info`, except that actix-server's own
/// start-up and shutdown lines ("starting N workers", "SIGTERM received", ...) are left
/// out, since the server logs one line of its own for each of those events.
const DEFAULT_LOG_FILTER: &str = "info,actix_server=warn";

/// Starts logging to stderr; the filter comes from `RUST_LOG`, or is `info` without
/// actix-server's own lines (`info,actix_server=warn`) when it is not set. The PostgreSQL
/// client never logs below `info`, whatever `RUST_LOG` says: at `debug` it logs every
/// statement's parameters, which hold message texts, emails and password hashes.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_LOG_FILTER))
        // Added after RUST_LOG's directives, so it replaces any of theirs for the module.
        .filter_module("tokio_postgres", log::LevelFilter::Info)
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

    /// A random prefix drawn once per process, then a counter: unique without a system
    /// call per request.
    fn generate() -> RequestId {
        static PREFIX: OnceLock<String> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = PREFIX.get_or_init(|| {
            random_url_safe::<6>().unwrap_or_else(|_| format!("{:x}", std::process::id()))
        });
        RequestId(format!(
            "{prefix}-{:x}",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
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
    let elapsed = started.elapsed().as_secs_f64();
    let elapsed_ms = elapsed * 1000.0;
    counter!(REQUESTS, "method" => method_label(&method), "route" => route.clone(), "status" => status.as_str().to_owned())
        .increment(1);
    histogram!(LATENCY, "route" => route.clone()).record(elapsed);
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

/// The method as a metric label: the standard ones by name, anything a client made up
/// as `OTHER`, so clients cannot create metric series at will.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The Prometheus recorder, installed once per process: the `metrics` macros anywhere
/// in the program write to it. `None` if another recorder was installed first.
pub fn metrics() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LATENCY.to_owned()), &buckets)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Full(EVENTS_LAG.to_owned()), &buckets)
                })
                .and_then(PrometheusBuilder::install_recorder);
            match handle {
                Ok(handle) => {
                    describe_metrics();
                    register_unlabelled_series();
                    Some(handle)
                }
                Err(err) => {
                    log::warn!("metrics are disabled: {err}");
                    None
                }
            }
        })
        .as_ref()
}

fn describe_metrics() {
    describe_counter!(
        REQUESTS,
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        LATENCY,
        metrics::Unit::Seconds,
        "Time to answer a request, by route template"
    );
    describe_counter!(MESSAGES_STORED, "Chat messages stored");
    describe_counter!(BATCHES_STORED, "Batches of chat messages stored");
    describe_gauge!(
        WRITE_QUEUE_DEPTH,
        "Database writes queued for or running on the writer"
    );
    describe_counter!(
        DB_BUSY,
        "Database calls that failed because SQLite stayed busy"
    );
    describe_gauge!(OPEN_CONNECTIONS, "Open HTTP connections");
    describe_gauge!(OPEN_STREAMS, "Open events streams");
    describe_counter!(EVENTS_SENT, "Events sent on events streams");
    describe_counter!(
        STREAMS_RESET,
        "Events streams that began with a reset: their Last-Event-ID was no longer kept"
    );
    describe_histogram!(
        EVENTS_LAG,
        metrics::Unit::Seconds,
        "Time from a change's commit to its event being sent on a stream"
    );
    describe_gauge!(
        RESIDENT_MEMORY,
        metrics::Unit::Bytes,
        "Resident memory of the process"
    );
}

/// Creates every series without labels at 0, so that a scrape of a fresh server shows
/// each of them (a counter that first appears at 1 hides its first increase from
/// `rate()`, and an alert on a missing series cannot tell "0" from "not exported").
/// The labelled request series appear with the first request, labelled by it.
fn register_unlabelled_series() {
    for name in [
        MESSAGES_STORED,
        BATCHES_STORED,
        DB_BUSY,
        EVENTS_SENT,
        STREAMS_RESET,
    ] {
        counter!(name).increment(0);
    }
    for name in [WRITE_QUEUE_DEPTH, OPEN_CONNECTIONS, OPEN_STREAMS] {
        gauge!(name).increment(0.0);
    }
    // Registered, so that it is exported (with a count of 0) before the first event.
    let _ = histogram!(EVENTS_LAG);
    if let Some(rss) = resident_memory_bytes() {
        gauge!(RESIDENT_MEMORY).set(rss as f64);
    }
}

/// `GET /metrics`: the Prometheus text format.
pub async fn serve_metrics() -> HttpResponse {
    let Some(handle) = metrics() else {
        return HttpResponse::NotFound().finish();
    };
    if let Some(rss) = resident_memory_bytes() {
        gauge!(RESIDENT_MEMORY).set(rss as f64);
    }
    handle.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}

/// The process's resident memory: the pages `/proc/self/statm` counts (Linux only),
/// times the page size the system reports, which is 16 KiB or 64 KiB on some arm64
/// and POWER kernels rather than 4 KiB.
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(u64::try_from(rustix::param::page_size()).ok()?)
}

/// Lives in a connection's extensions: counts the connection open until it is dropped.
pub struct ConnectionGuard;

impl ConnectionGuard {
    /// Counts one more open connection.
    pub fn open() -> ConnectionGuard {
        gauge!(OPEN_CONNECTIONS).increment(1.0);
        ConnectionGuard
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        gauge!(OPEN_CONNECTIONS).decrement(1.0);
    }
}
