//! One integration-test binary: each module covers one endpoint or concern, against the
//! real application on a random port and a fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod chats;
mod cli;
mod concurrency;
mod cors;
mod create_messages;
mod docs;
mod durability;
mod errors;
mod failures;
mod flows;
mod helpers;
mod hostile;
mod idempotency;
mod instances;
mod large_chats;
mod login_flood;
mod operations;
mod process;
mod query_validation;
mod quota;
mod read_messages;
mod readme_check;
mod sessions;
mod throttle;
