//! [`Settings`](crate::config::Settings): the checked runtime configuration the server is built from. Built from
//! the command line by [`cli`](crate::cli); does no I/O, so tests build it directly.

use std::num::NonZeroU32;
use std::time::Duration;

pub use crate::client_ip::TrustedProxies;
pub use crate::db::{Durability, Location, Quota};
pub use crate::password::HashSettings;
pub use crate::throttle::{Backoff, ThrottleSettings};

use crate::validation::MessageLimits;

/// Size limits on requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes in one request body; above it the answer is 413.
    pub max_body_bytes: usize,
    /// Most messages in one batch.
    pub max_batch: usize,
    /// Most UTF-8 bytes in one message text.
    pub max_text_bytes: usize,
    /// How long a request body may take to arrive, once the headers are in (408 after).
    pub body_timeout: Duration,
}

impl Limits {
    /// The limits the validation of a create-messages body needs.
    pub fn messages(&self) -> MessageLimits {
        MessageLimits {
            max_batch: self.max_batch,
            max_text_bytes: self.max_text_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_batch: 1000,
            max_text_bytes: 256 * 1024,
            body_timeout: Duration::from_secs(20),
        }
    }
}

/// How sessions made by sign-up and login behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// Days a new session lives; also the cookie's `Max-Age`.
    pub ttl_days: u32,
    /// Whether the cookie carries `Secure` (sent over HTTPS only, and to localhost).
    pub cookie_secure: bool,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            ttl_days: 30,
            cookie_secure: true,
        }
    }
}

/// Everything [`Application::build`](crate::startup::Application::build) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The database: an SQLite file (its folder is created if missing) or PostgreSQL.
    pub database: Location,
    /// Pooled database connections; `None`: the backend's default (SQLite: 2 read
    /// connections per worker; PostgreSQL: [`DEFAULT_POOL_SIZE`](crate::db::DEFAULT_POOL_SIZE)).
    pub database_pool_size: Option<u32>,
    /// The address to listen on, e.g. `127.0.0.1:8080` (port 0 picks a free port).
    pub bind: String,
    /// Request size limits.
    pub limits: Limits,
    /// Session lifetime and cookie attributes.
    pub sessions: SessionSettings,
    /// What an acknowledged write survives.
    pub durability: Durability,
    /// How long SIGTERM / SIGINT wait for requests in flight before stopping anyway.
    pub shutdown_grace: Duration,
    /// Most open connections; more wait in the listen backlog.
    pub max_connections: usize,
    /// Most writes waiting for the writer; beyond it writes get 503 with `Retry-After`.
    pub write_queue: usize,
    /// Writes (non-GET requests under `/api/users`) allowed per user per minute;
    /// `None`: no limit (`--write-rate-limit 0`). There is no limit of zero writes.
    pub write_rate_limit: Option<NonZeroU32>,
    /// How long a database statement waits for a lock held by another connection (an
    /// admin command, a backup) before the request gets 503 with `Retry-After`.
    pub busy_timeout: Duration,
    /// Per-user storage limits; off by default.
    pub quota: Quota,
    /// Backoff on failed logins and on sign-ups.
    pub throttle: ThrottleSettings,
    /// How many password hashes may wait, in all and per client.
    pub hashing: HashSettings,
    /// Reverse proxies whose `X-Forwarded-For` names the client; none by default.
    pub trusted_proxies: TrustedProxies,
    /// Web origins (`scheme://host[:port]`, lower-case) whose pages may call the API
    /// with the user's session cookie; empty: no cross-origin access (the default).
    pub cors_origins: Vec<String>,
    /// The events stream's heartbeat, replay window and limits.
    pub events: EventSettings,
    /// Chats with no activity for this many days are deleted; `None`: kept forever
    /// (the default).
    pub retention_days: Option<u32>,
}

/// The events stream (`GET /api/users/{user_id}/events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSettings {
    /// Time between heartbeats on an idle stream.
    pub heartbeat: Duration,
    /// How long changes are kept for a stream to replay after a reconnect.
    pub replay_window: Duration,
    /// Most open streams in all; beyond it, 503 with `Retry-After`.
    pub max_streams: usize,
    /// Most open streams per user; beyond it, 429 with `Retry-After`.
    pub max_per_user: usize,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            heartbeat: Duration::from_secs(15),
            replay_window: crate::db::DEFAULT_CHANGE_WINDOW,
            max_streams: 2048,
            max_per_user: 16,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database: Location::default(),
            database_pool_size: None,
            bind: "127.0.0.1:8080".to_owned(),
            limits: Limits::default(),
            sessions: SessionSettings::default(),
            durability: Durability::default(),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 4096,
            write_queue: crate::db::DEFAULT_WRITE_QUEUE,
            write_rate_limit: None,
            busy_timeout: crate::db::Options::default().busy_timeout,
            quota: Quota::default(),
            retention_days: None,
            throttle: ThrottleSettings::default(),
            hashing: HashSettings::default(),
            trusted_proxies: TrustedProxies::default(),
            cors_origins: Vec::new(),
            events: EventSettings::default(),
        }
    }
}
