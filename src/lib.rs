//! neptun-chat: a self-hosted chat-message store.
//!
//! One binary serves a JSON HTTP API over an embedded SQLite database. A chat front end
//! uses it to keep users' conversations and append messages to them, one at a time or as
//! an ordered batch in one transaction. `main.rs` only parses the command line and hands
//! over to [`cli::run`].

/// A user's data as a file: the export format, and the readers `import` takes.
pub mod archive;
/// Session tokens and cookies, the middleware in front of `/api/users/{user_id}`, and the session extractor.
pub mod auth;
/// Command line: global options, subcommands, and the admin commands behind them.
pub mod cli;
/// The client address of a request: the TCP peer, or `X-Forwarded-For` from a trusted proxy.
pub mod client_ip;
/// Checked runtime settings built from the command line; no I/O.
pub mod config;
/// SQLite storage: the only module that speaks SQL.
pub mod db;
/// Types shared by the HTTP layer and storage: users, chats, messages, timestamps.
pub mod domain;
/// `ApiError` and the JSON error envelope every failing response uses.
pub mod error;
/// Live events: the change feed pushed over Server-Sent Events.
pub mod events;
/// Request extractors that turn framework failures into `ApiError`s.
pub mod extract;
/// The names of the exported Prometheus series (a leaf module).
pub mod metric_names;
/// Argon2id password hashing on a fixed set of threads that reuse their memory.
pub mod password;
/// Random values from the OS: tokens, ids, request-id prefixes (a leaf module).
pub mod random;
/// The optional per-session limit on write requests.
pub mod rate_limit;
/// HTTP routes, one file per resource.
pub mod routes;
/// Full-text search: the words of a text, a typed query read, and the snippet of a hit.
pub mod search;
/// Building and running the HTTP server.
pub mod startup;
/// Logging, the per-request log line with its request id, and the Prometheus metrics.
pub mod telemetry;
/// Backoff on failed logins and on sign-ups, per account and client address.
pub mod throttle;
/// Request bodies to domain types, collecting zod-style issues.
pub mod validation;
