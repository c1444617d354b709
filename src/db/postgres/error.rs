//! How PostgreSQL's and the pool's errors become [`Error`]'s kinds:
//! - no connection (the server is down, restarting or unreachable; the pool waited too
//!   long; a connection broke): [`Unavailable::NoConnection`];
//! - a lock not granted within the lock timeout, a deadlock or a serialization failure
//!   PostgreSQL broke up: [`Unavailable::Busy`] (a retry succeeds);
//! - the pool closed (the server is stopping): [`Unavailable::WriterGone`];
//! - a unique violation on a user's id or email: [`Error::Conflict`], naming it;
//! - anything else: a failed statement.

use std::sync::Arc;

use tokio_postgres::error::SqlState;

use super::{Error, Step, Taken, Unavailable};

impl From<tokio_postgres::Error> for Error {
    fn from(err: tokio_postgres::Error) -> Self {
        let Some(code) = err.code().cloned() else {
            // No SQLSTATE: the connection failed or closed, or a value did not convert.
            if err.is_closed() || connection_failure(&err) {
                return unavailable(Unavailable::NoConnection, err);
            }
            return failed(err);
        };
        if code == SqlState::UNIQUE_VIOLATION {
            let taken = match err.as_db_error().and_then(|db| db.constraint()) {
                Some("users_pkey") => Some(Taken::UserId),
                Some("users_primary_email_key") => Some(Taken::UserEmail),
                _ => None,
            };
            if let Some(taken) = taken {
                return Error::Conflict(taken);
            }
        }
        if [
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::QUERY_CANCELED,
        ]
        .contains(&code)
        {
            // Counted where it is sorted, as SQLite's busy timeouts are where they happen.
            metrics::counter!(crate::metric_names::DB_BUSY).increment(1);
            return unavailable(Unavailable::Busy, err);
        }
        // Class 08 (connection exception), 57P01..57P03 (the server shutting down,
        // crashed, or not yet accepting connections), 53300 (too many connections).
        if code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
            ]
            .contains(&code)
        {
            return unavailable(Unavailable::NoConnection, err);
        }
        failed(err)
    }
}

/// Whether `err` says the connection could not be made or used (an I/O error, a
/// timeout), rather than that a statement failed.
fn connection_failure(err: &tokio_postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    // "timeout waiting for server" and "error connecting to server" may carry no I/O
    // source; their text says what they are.
    let text = err.to_string();
    text.contains("connecting") || text.contains("timeout")
}

fn unavailable(reason: Unavailable, err: tokio_postgres::Error) -> Error {
    Error::Unavailable {
        reason,
        source: Some(Arc::new(err)),
    }
}

fn failed(err: tokio_postgres::Error) -> Error {
    Error::Failed {
        step: Step::Statement,
        source: Arc::new(err),
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match err {
            PoolError::Backend(err) => Error::from(err),
            PoolError::Closed => Error::writer_gone(),
            other => Error::Unavailable {
                reason: Unavailable::NoConnection,
                source: Some(Arc::new(other)),
            },
        }
    }
}
