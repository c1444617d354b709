//! [`Application`]: binds the listener, opens the database and builds the HTTP server.
//! Production and the tests take this same path; binding port 0 picks a free port,
//! which [`Application::port`] reads back.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context;

use crate::config::Settings;
use crate::db::Db;
use crate::error::ApiError;
use crate::validation::Issue;
use crate::{routes, telemetry};

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Binds `settings.bind`, opens the database and builds the server. Every start-up
    /// problem (address in use, unusable database) comes back as an error with context.
    pub fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("cannot listen on {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let db = Db::open(&settings.database)
            .with_context(|| format!("cannot use the database {}", settings.database.display()))?;
        let db = web::Data::new(db);
        let limits = web::Data::new(settings.limits);
        let sessions = web::Data::new(settings.sessions);
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(telemetry::log_request))
                .app_data(db.clone())
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
                .configure(routes::configure)
                .default_service(web::to(routes::route_not_found))
        })
        .listen(listener)?
        .run();
        log::info!(
            "neptun-chat listening on {} (database {})",
            settings.bind,
            settings.database.display()
        );
        Ok(Application { port, server })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the process is told to stop (SIGINT/SIGTERM).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
