//! The integration tests of tests/api/ against PostgreSQL: the same modules, built a
//! second time with [`BACKEND`] set to PostgreSQL, so every fresh database is one of its
//! own in a throwaway cluster (tests/api/postgres_cluster.rs). Left out are the modules
//! about SQLite's own files, which only tests/api/main.rs includes.
//!
//! Without PostgreSQL installed (or if the cluster does not start) these tests end at
//! once with a banner saying so, and pass; with `NEPTUN_TEST_POSTGRES=required` (as CI
//! sets it) they fail instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The shared helpers also serve the SQLite-only modules; the SQLite binary, which
// includes everything, still catches helpers that nothing uses.
#![allow(dead_code)]

/// The backend of every fresh database of this binary (see [`database::Database`]).
const BACKEND: database::Backend = database::Backend::Postgres;

#[path = "../api/account.rs"]
mod account;
#[path = "../api/auth.rs"]
mod auth;
#[path = "../api/chats.rs"]
mod chats;
#[path = "../api/cli.rs"]
mod cli;
#[path = "../api/concurrency.rs"]
mod concurrency;
#[path = "../api/cors.rs"]
mod cors;
#[path = "../api/create_messages.rs"]
mod create_messages;
#[path = "../api/database.rs"]
mod database;
#[path = "../api/docs.rs"]
mod docs;
#[path = "../api/durability.rs"]
mod durability;
#[path = "../api/errors.rs"]
mod errors;
#[path = "../api/events.rs"]
mod events;
#[path = "../api/failures.rs"]
mod failures;
#[path = "../api/flows.rs"]
mod flows;
mod harness;
#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../api/hostile.rs"]
mod hostile;
#[path = "../api/idempotency.rs"]
mod idempotency;
#[path = "../api/large_chats.rs"]
mod large_chats;
#[path = "../api/login_flood.rs"]
mod login_flood;
#[path = "../api/operations.rs"]
mod operations;
#[path = "../api/postgres_cluster.rs"]
mod postgres_cluster;
#[path = "../api/process.rs"]
mod process;
#[path = "../api/query_validation.rs"]
mod query_validation;
#[path = "../api/quota.rs"]
mod quota;
#[path = "../api/read_messages.rs"]
mod read_messages;
#[path = "../api/retention.rs"]
mod retention;
#[path = "../api/search.rs"]
mod search;
#[path = "../api/sessions.rs"]
mod sessions;
#[path = "../api/throttle.rs"]
mod throttle;
