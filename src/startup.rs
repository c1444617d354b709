//! [`Application`](crate::startup::Application): binds the listener, opens the database and builds the HTTP server.
//! Production and the tests take this same path; binding port 0 picks a free port,
//! which [`Application::port`](crate::startup::Application::port) reads back and the start-up log line names.
//!
//! # Signals
//! actix-server's own signal handling treats SIGINT (Ctrl-C) as a *forced* stop that
//! drops requests in flight, so it is turned off and this module listens itself: the
//! first SIGINT or SIGTERM stops gracefully (no new connections, requests in flight
//! finish within the grace period), a second one stops at once.
//!
//! # Errors actix-http answers itself
//! A request head that cannot be parsed (a malformed request line or header: 400), one
//! larger than the head buffer (431) or one that does not arrive in time (408) is
//! answered by actix-http's HTTP/1 dispatcher with a fixed, empty-bodied response
//! before any service runs: no middleware, `default_service` or error handler sees
//! it, and `HttpServer` offers no hook for it (actix-http 3: `h1::Dispatcher`, which
//! queues `Response::bad_request()` / `Response::with_body(431, ())`). Those answers
//! therefore carry no JSON envelope; a reverse proxy in front can rewrite them.

use std::net::TcpListener;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::middleware::{Compress, Condition, DefaultHeaders, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::Context;

use crate::config::Settings;
use crate::db::{self, Db, Location};
use crate::error::ApiError;
use crate::password::Hasher;
use crate::rate_limit::RateLimiter;
use crate::throttle::Throttle;
use crate::validation::Issue;
use crate::{routes, telemetry};

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    db: Db,
    hub: crate::events::Hub,
    grace: Duration,
}

impl Application {
    /// Binds `settings.bind`, opens the database and builds the server. Every start-up
    /// problem (address in use, unusable database) comes back as an error with context.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("cannot listen on {}", settings.bind))?;
        let address = listener.local_addr()?;
        let port = address.port();
        let workers = std::thread::available_parallelism().map_or(2, usize::from);
        let pool_size = settings
            .database_pool_size
            .unwrap_or(match settings.database {
                // One read connection per blocking thread, so a read never waits for one.
                Location::Sqlite(_) => {
                    u32::try_from(workers * BLOCKING_THREADS_PER_WORKER).unwrap_or(64)
                }
                Location::Postgres(_) => db::DEFAULT_POOL_SIZE,
            });
        let options = db::Options {
            durability: settings.durability,
            write_queue: settings.write_queue,
            pool_size,
            busy_timeout: settings.busy_timeout,
            quota: settings.quota,
            change_window: settings.events.replay_window,
        };
        let db = Db::open_with(&settings.database, options)
            .await
            .map_err(|err| database_error(err, &settings.database))?;
        telemetry::metrics();
        let app_db = web::Data::new(db.clone());
        let poll = match settings.database {
            // Another process's writes to the file (the CLI) are seen by polling.
            Location::Sqlite(_) => Duration::from_secs(1),
            // Other instances' writes wake the feeds through LISTEN / NOTIFY.
            Location::Postgres(_) => Duration::from_secs(30),
        };
        let hub = crate::events::Hub::new(db.clone(), settings.events, poll);
        let app_hub = web::Data::new(hub.clone());
        let limits = web::Data::new(settings.limits);
        let api_document = web::Data::new(routes::docs::ApiDocument::new(&settings.limits));
        let sessions = web::Data::new(settings.sessions);
        let hasher = web::Data::new(Hasher::new(settings.hashing));
        let throttle = web::Data::new(Throttle::new(settings.throttle));
        let trusted_proxies = web::Data::new(settings.trusted_proxies.clone());
        let cors_origins = settings.cors_origins.clone();
        let rate_limiter = settings
            .write_rate_limit
            .map(|per_minute| web::Data::new(RateLimiter::new(per_minute)));
        let server = HttpServer::new(move || {
            let rate_limiter = rate_limiter.clone();
            App::new()
                // Innermost of the app's middleware, but outside every route: preflights
                // are answered here, before any session check.
                .wrap(Condition::new(
                    !cors_origins.is_empty(),
                    cors(&cors_origins),
                ))
                // gzip for clients that accept it: a whole chat's JSON shrinks several
                // times over. Streamed bodies go through the encoder as they come.
                .wrap(Compress::default())
                .wrap(from_fn(telemetry::log_request))
                .wrap(security_headers())
                .app_data(app_db.clone())
                .app_data(app_hub.clone())
                .app_data(limits.clone())
                .app_data(api_document.clone())
                .app_data(sessions.clone())
                .app_data(hasher.clone())
                .app_data(throttle.clone())
                .app_data(trusted_proxies.clone())
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
        .disable_signals()
        .listen(listener)?
        .run();
        tokio::spawn(purge_periodically(db.clone()));
        tokio::spawn(index_backlog(db.clone()));
        if let Some(days) = settings.retention_days {
            tokio::spawn(expire_chats(db.clone(), days));
        }
        // The one start-up line: tests and operators read the bound port from it.
        log::info!(
            "neptun-chat listening on {address} with the database {} (durability {}, {workers} workers)",
            settings.database,
            settings.durability.name(),
        );
        Ok(Application {
            port,
            server,
            db,
            hub,
            grace: settings.shutdown_grace,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the process is told to stop by SIGINT or SIGTERM: then stops
    /// accepting connections, lets requests in flight finish (up to the grace period),
    /// checkpoints the WAL and closes the database. A second signal during the grace
    /// period stops at once, dropping the requests still in flight (their writes are
    /// whole or absent, as after a crash).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let signals = StopSignals::listen().context("cannot listen for SIGINT and SIGTERM")?;
        self.run(Some(signals)).await
    }

    /// Serves, leaving the process's signals alone, until the runtime that drives it
    /// ends: for servers inside another program, such as the tests, whose Ctrl-C must
    /// keep working (a signal handler, once installed, stays for the process's life).
    pub async fn run_ignoring_signals(self) -> anyhow::Result<()> {
        self.run(None).await
    }

    async fn run(self, signals: Option<StopSignals>) -> anyhow::Result<()> {
        let Application {
            server,
            db,
            hub,
            grace,
            ..
        } = self;
        let served = match signals {
            None => server.await,
            Some(signals) => serve_until_signalled(server, signals, grace, &hub).await,
        };
        let served = served.context("the server failed");
        db.close().await.context("closing the database failed")?;
        log::info!("stopped; the database is checkpointed and closed");
        served
    }
}

/// Drives `server` until it ends, stopping it gracefully on the first signal and at
/// once on a second.
async fn serve_until_signalled(
    mut server: Server,
    mut signals: StopSignals,
    grace: Duration,
    hub: &crate::events::Hub,
) -> std::io::Result<()> {
    let handle = server.handle();
    tokio::select! {
        served = &mut server => return served,
        signal = signals.next() => {
            // Events streams never end by themselves: end them now, so that their
            // clients reconnect elsewhere and they do not hold the stop for the grace.
            hub.stop();
            // The stop command is sent by this call; the server future ends once the
            // workers have finished their requests or the grace period is over.
            drop(handle.stop(true));
            log::info!(
                "{signal} received: finishing the requests in flight (at most {} s); \
                 send it again to stop at once",
                grace.as_secs()
            );
        }
    }
    let forced = tokio::select! {
        served = &mut server => return served,
        signal = signals.next() => signal,
    };
    log::warn!("{forced} received again: stopping now, requests still in flight get no answer");
    // Dropping a running server stops its workers at once, even during a graceful
    // stop (actix-server's documented drop behaviour).
    drop(server);
    Ok(())
}

/// The two signals that stop the server.
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT and names it.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// A database error on opening `location` (for the server or an admin command), naming
/// the database once: an [`Unusable`](crate::db::Error::Unusable) error already names it
/// and says why; any other gets "cannot use the database LOCATION" as its context. A
/// PostgreSQL URL is shown without its password.
pub fn database_error(err: crate::db::Error, location: &Location) -> anyhow::Error {
    if matches!(err, crate::db::Error::Unusable { .. }) {
        return err.into();
    }
    anyhow::Error::new(err).context(format!("cannot use the database {location}"))
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

/// CORS for pages on the `origins` (`--cors-origin`): they may call every route with
/// the session cookie and read the answers, including `Retry-After` and the request
/// id. Requests from other origins are served as before but get no CORS headers, so
/// a browser keeps their pages from reading the answers; requests without `Origin`
/// (curl, other servers, same-origin GETs) are not affected.
fn cors(origins: &[String]) -> Cors {
    let cors = Cors::default()
        .allowed_methods(["GET", "HEAD", "POST", "PATCH", "DELETE"])
        .allowed_headers([
            header::CONTENT_TYPE,
            header::HeaderName::from_static("idempotency-key"),
            // EventSource sends it when it reconnects to resume.
            header::HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([header::RETRY_AFTER, telemetry::REQUEST_ID_HEADER])
        .supports_credentials()
        .max_age(600);
    origins
        .iter()
        .fold(cors, |cors, origin| cors.allowed_origin(origin))
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

/// How often chats past the retention period are looked for.
const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Chats deleted per transaction by the retention: a short write, so that the writes
/// of requests go on between them (the messages of large chats are purged afterwards,
/// a slice at a time, on SQLite).
const RETENTION_BATCH: usize = 100;

/// Deletes the chats with no activity for `days` days, now and every
/// [`RETENTION_INTERVAL`], a batch per transaction, until the database closes.
async fn expire_chats(db: Db, days: u32) {
    let mut ticks = tokio::time::interval(RETENTION_INTERVAL);
    loop {
        ticks.tick().await;
        let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
        let before = crate::domain::Timestamp::from_datetime(before);
        let mut expired = 0;
        loop {
            match db.expire_chats(before.clone(), RETENTION_BATCH).await {
                Ok(done) => {
                    expired += done;
                    if done < RETENTION_BATCH {
                        break;
                    }
                    // Let the requests' writes in before the next batch.
                    tokio::task::yield_now().await;
                }
                Err(err) if err.is_writer_gone() => return,
                Err(err) => {
                    log::warn!(
                        "retention: deleting inactive chats failed, trying again later: {err}"
                    );
                    break;
                }
            }
        }
        if expired > 0 {
            log::info!("retention: deleted {expired} chats with no activity for {days} days");
        }
    }
}

/// Messages indexed for search per transaction while the backlog is worked off.
const BACKLOG_BATCH: usize = 500;

/// Indexes the messages stored before the database had search (after the migration
/// that added it), a batch per transaction, so that writes go on between them; logs
/// its progress every few seconds, and ends when none are left.
async fn index_backlog(db: Db) {
    let mut indexed = 0;
    let mut said = std::time::Instant::now();
    loop {
        match db.index_backlog(BACKLOG_BATCH).await {
            Ok(Some((done, below))) => {
                indexed += done;
                if below == 0 {
                    log::info!("search: all {indexed} older messages are indexed");
                    return;
                }
                if said.elapsed() >= std::time::Duration::from_secs(2) {
                    log::info!(
                        "search: {indexed} older messages indexed, those below id {below} to go"
                    );
                    said = std::time::Instant::now();
                }
            }
            Ok(None) => return,
            Err(err) if err.is_writer_gone() => return,
            Err(err) => {
                log::warn!("search: indexing older messages failed, trying again soon: {err}");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        }
    }
}
