//! One integration-test binary per storage backend; this one runs every test against
//! SQLite. Each module covers one endpoint or concern, against the real application on
//! a random port and a fresh database. tests/api_postgres/main.rs runs the same modules
//! against PostgreSQL, all but those about SQLite's own files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The backend of every fresh database of this binary (see [`database::Database`]).
const BACKEND: database::Backend = database::Backend::Sqlite;

mod account;
mod auth;
mod chats;
mod cli;
mod concurrency;
mod copy;
mod cors;
mod create_messages;
mod database;
mod docs;
mod durability;
mod errors;
mod events;
mod failures;
mod flows;
mod helpers;
mod hostile;
mod idempotency;
mod instances;
mod large_chats;
mod login_flood;
mod operations;
mod postgres_cluster;
mod process;
mod query_validation;
mod quota;
mod read_messages;
mod readme_check;
mod retention;
mod search;
mod sessions;
mod sqlite_engine;
mod sqlite_files;
mod throttle;
mod tls;
