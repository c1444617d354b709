//! [`Application`](crate::startup::Application): binds the listener, opens the database and builds the HTTP server.
//! Production and the tests take this same path; binding port 0 picks a free port,
//! which [`Application::port`](crate::startup::Application::port) reads back.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::Context;

use crate::config::Settings;
use crate::db::{self, Db};
use crate::error::ApiError;
use crate::rate_limit::RateLimiter;
use crate::validation::Issue;
use crate::{routes, telemetry};

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    db: Db,
}

impl Application {
    /// Binds `settings.bind`, opens the database and builds the server. Every start-up
    /// problem (address in use, unusable database) comes back as an error with context.
    pub fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("cannot listen on {}", settings.bind))?;
        let address = listener.local_addr()?;
        let port = address.port();
        let workers = std::thread::available_parallelism().map_or(2, usize::from);
        // One read connection per blocking thread, so a read never waits for one.
        let read_connections = u32::try_from(workers * BLOCKING_THREADS_PER_WORKER).unwrap_or(64);
        let options = db::Options {
            durability: settings.durability,
            write_queue: settings.write_queue,
            read_connections,
            busy_timeout: settings.busy_timeout,
            quota: settings.quota,
        };
        let db = Db::open_with(&settings.database, options)
            .with_context(|| format!("cannot use the database {}", settings.database.display()))?;
        telemetry::metrics();
        let app_db = web::Data::new(db.clone());
        let limits = web::Data::new(settings.limits);
        let sessions = web::Data::new(settings.sessions);
        let rate_limiter = settings
            .write_rate_limit
            .map(|per_minute| web::Data::new(RateLimiter::new(per_minute)));
        let server = HttpServer::new(move || {
            let rate_limiter = rate_limiter.clone();
            App::new()
                .wrap(from_fn(telemetry::log_request))
                .wrap(security_headers())
                .app_data(app_db.clone())
                .app_data(limits.clone())
                .app_data(sessions.clone())
                .app_data(web::PayloadConfig::new(limits.max_body_bytes))
                .app_data(
                    web::PathConfig::default()
                        .error_handler(|_, _| ApiError::InvalidRouteParams.into()),
                )
                .app_data(web::QueryConfig::default().error_handler(|err, _| {
                    ApiError::InvalidQuery {
                        fields: "query string",
                        issues: vec![Issue::unparsable_query(&err)],
                    }
                    .into()
                }))
                .configure(move |cfg| {
                    if let Some(limiter) = rate_limiter {
                        cfg.app_data(limiter);
                    }
                })
                .configure(routes::configure)
                .default_service(web::to(routes::route_not_found))
        })
        .workers(workers)
        .worker_max_blocking_threads(BLOCKING_THREADS_PER_WORKER)
        // Each worker takes its share; connections beyond wait in the backlog.
        .max_connections(settings.max_connections.div_ceil(workers))
        // A client gets 5 s to send its request head, and an idle keep-alive connection
        // is closed after 15 s, so slow or idle clients cannot hold connections forever.
        .client_request_timeout(Duration::from_secs(5))
        .keep_alive(Duration::from_secs(15))
        .on_connect(|_, extensions| {
            extensions.insert(telemetry::ConnectionGuard::open());
        })
        .shutdown_timeout(settings.shutdown_grace.as_secs())
        .listen(listener)?
        .run();
        tokio::spawn(purge_periodically(db.clone()));
        log::info!(
            "neptun-chat listening on {address} (database {})",
            settings.database.display()
        );
        Ok(Application { port, server, db })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the process is told to stop (SIGINT/SIGTERM): then stops accepting
    /// connections, lets requests in flight finish (up to the grace period), checkpoints
    /// the WAL and closes the database.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await.context("the server failed");
        self.db
            .close()
            .await
            .context("closing the database failed")?;
        log::info!("stopped; the database is checkpointed and closed");
        served
    }
}

/// Threads each worker has for blocking work, which is reading (password hashing has
/// threads of its own). Two per worker keep both cores busy: with more, reads take
/// turns on the same cores, each waking its own thread, and the slowest wait longer
/// (BENCHMARKS.md: W4 44% -> 53% of the echo, W5 p99 22 -> 17 ms from 8 to 2).
const BLOCKING_THREADS_PER_WORKER: usize = 2;

/// Headers every response carries unless it sets its own (the `/docs` assets set a
/// cache lifetime and a content security policy).
fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::CACHE_CONTROL, "no-store"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
}

/// How often expired sessions are deleted.
const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Deletes expired sessions now and then, until the database closes. (They are refused
/// as soon as they expire either way; this only keeps the table small.)
async fn purge_periodically(db: Db) {
    let mut ticks = tokio::time::interval(PURGE_INTERVAL);
    loop {
        ticks.tick().await;
        match db.purge_expired().await {
            Ok(0) => {}
            Ok(purged) => log::info!("purged {purged} expired sessions and idempotency answers"),
            Err(err) if err.is_writer_gone() => return,
            Err(err) => log::warn!("purging expired sessions failed: {err}"),
        }
    }
}
