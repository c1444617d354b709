//! How SQLite's and r2d2's errors become [`Error`]'s kinds: the busy timeout running out
//! is [`Unavailable::Busy`], no pooled connection [`Unavailable::NoConnection`], anything
//! else a failure of the step. Which unique value a failed insert found taken is read
//! from SQLite's message by the repository that knows the table (`users.rs`).

use std::sync::Arc;

use super::{Error, Step, Unavailable};

impl Error {
    /// The kind of error `err` is, with `err` kept as the source: the busy timeout
    /// running out is [`Unavailable::Busy`]; anything else failed `step`.
    pub(super) fn backend(step: Step, err: rusqlite::Error) -> Error {
        if err.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) {
            Error::Unavailable {
                reason: Unavailable::Busy,
                source: Some(Arc::new(err)),
            }
        } else {
            Error::Failed {
                step,
                source: Arc::new(err),
            }
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        Error::backend(Step::Statement, err)
    }
}

impl From<r2d2::Error> for Error {
    fn from(err: r2d2::Error) -> Self {
        Error::Unavailable {
            reason: Unavailable::NoConnection,
            source: Some(Arc::new(err)),
        }
    }
}
