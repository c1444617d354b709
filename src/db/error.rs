//! [`Error`], the storage layer's one error type, and the kinds it is made of. The kinds
//! say what happened in terms either backend can keep, so that the API maps them to
//! statuses without knowing the backend; the backend's own error stays the `source`, for
//! the log. Each backend sorts its own errors into the kinds (`sqlite/error.rs`,
//! `postgres/error.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use super::{BoxError, Entity};

/// The database layer's error. It knows nothing about HTTP: `ApiError` decides what a
/// client sees. Each variant says what happened in terms either backend can keep; the backend's own error, where there is one, is the
/// `source`, so the logged cause chain shows it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing asked for does not exist (or is not visible to the asking user).
    #[error("{0} not found")]
    NotFound(Entity),
    /// A unique value is already taken; which one.
    #[error("{0}")]
    Conflict(Taken),
    /// The caller's rendering of a response failed.
    #[error("rendering the response failed")]
    Render(#[source] BoxError),
    /// The session of a [`SessionClaim`](crate::domain::SessionClaim) belongs to another
    /// user than the one claimed.
    #[error("the session belongs to another user")]
    WrongUser,
    /// An idempotency key was used before with a different request.
    #[error("the idempotency key was used for a different request")]
    KeyReused,
    /// An idempotency key's request was stored, but some of the messages it stored have
    /// been deleted since, so its answer cannot be given again.
    #[error("the messages stored with this idempotency key were deleted since")]
    KeyAnswerGone,
    /// Storing this would take the user past their storage quota.
    #[error("{0}")]
    QuotaExceeded(QuotaExceeded),
    /// The file is not a database this program may use (see the message).
    #[error("{0}")]
    Incompatible(String),
    /// The write queue is full: the service is overloaded; try again shortly.
    #[error("the write queue is full")]
    Overloaded,
    /// The database cannot serve right now, though nothing is wrong with the request or
    /// the data: a retry later may succeed.
    #[error("the database is unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: Unavailable,
        /// The backend's error, if it gave one.
        #[source]
        source: Option<Source>,
    },
    /// The database failed at `step`; nothing of the failed step was stored.
    #[error("{step} failed")]
    Failed {
        /// What was being done.
        step: Step,
        /// The backend's error.
        #[source]
        source: Source,
    },
    /// A backup could not be written.
    #[error("cannot write the backup {path}")]
    Backup {
        /// The destination.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database file or its folder cannot be used, for the reason given in words
    /// (start-up only): "cannot create the database /x/neptun.db: the folder is not
    /// writable".
    #[error("cannot {what}: {reason}")]
    Unusable {
        /// What could not be done, naming the database ("create the database /x/neptun.db").
        what: String,
        /// Why, in words.
        reason: String,
    },
}

/// A backend's own error. Shared, because one failed commit fails every write that was
/// to be in it, and each of them reports the same cause.
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

/// Why the database is [`Error::Unavailable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Another connection (an admin command, a backup) held the database locked for
    /// longer than the busy timeout.
    Busy,
    /// No connection could be had (the pool timed out, or opening one failed).
    NoConnection,
    /// The writer has stopped (the server is shutting down), so no write can be made.
    WriterGone,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unavailable::Busy => "it stayed locked by another connection beyond the busy timeout",
            Unavailable::NoConnection => "no connection to it could be had",
            Unavailable::WriterGone => "the database writer is not running",
        })
    }
}

/// What the database was doing when it [`Error::Failed`], for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A statement of a read or a write.
    Statement,
    /// A read on its blocking thread (the task panicked or was cancelled).
    Read,
    /// Beginning the write transaction of a group of writes.
    Begin,
    /// Setting up or ending the savepoint that keeps one write apart from its group.
    Savepoint,
    /// The commit of the group of writes this write was in.
    Commit,
    /// Another write of the same group, which made the whole transaction roll back.
    Group,
    /// The write itself (it panicked).
    Write,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Statement => "a database statement",
            Step::Read => "a database read",
            Step::Begin => "beginning the write transaction",
            Step::Savepoint => "the savepoint of a write",
            Step::Commit => "the commit",
            Step::Group => "the transaction (another write of its commit)",
            Step::Write => "a database write",
        })
    }
}

/// Which unique value a [`Error::Conflict`] found taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// A user's id.
    UserId,
    /// A user's email.
    UserEmail,
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Taken::UserId => "a user with this id already exists",
            Taken::UserEmail => "a user with this email already exists",
        })
    }
}

/// Which of a user's storage limits a write would pass, and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaExceeded {
    /// The most messages a user may keep.
    Messages(u64),
    /// The most bytes of message text (UTF-8) a user may keep.
    Bytes(u64),
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaExceeded::Messages(limit) => {
                write!(f, "a user may keep at most {limit} messages")
            }
            QuotaExceeded::Bytes(limit) => {
                write!(f, "a user may keep at most {limit} bytes of message text")
            }
        }
    }
}

impl Error {
    /// The writer has stopped.
    pub fn writer_gone() -> Error {
        Error::Unavailable {
            reason: Unavailable::WriterGone,
            source: None,
        }
    }

    /// Whether this says the writer has stopped.
    pub fn is_writer_gone(&self) -> bool {
        matches!(
            self,
            Error::Unavailable {
                reason: Unavailable::WriterGone,
                ..
            }
        )
    }

    /// The same error, for one more caller: the writer tells every write of a failed
    /// group why it failed. Errors that carry a backend source share it; the others
    /// are only ever one write's own, and are passed on as their description.
    pub(super) fn shared(&self) -> Error {
        match self {
            Error::Unavailable { reason, source } => Error::Unavailable {
                reason: *reason,
                source: source.clone(),
            },
            Error::Failed { step, source } => Error::Failed {
                step: *step,
                source: Arc::clone(source),
            },
            other => Error::described(Step::Group, other.to_string()),
        }
    }

    /// A failure at `step` that only a description tells about (no backend error).
    pub(super) fn described(step: Step, text: String) -> Error {
        Error::Failed {
            step,
            source: Arc::new(Described(text)),
        }
    }
}

/// An error known only by its description (see [`Error::shared`]).
#[derive(Debug)]
struct Described(String);

impl std::fmt::Display for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Described {}

impl From<tokio::task::JoinError> for Error {
    fn from(err: tokio::task::JoinError) -> Self {
        Error::Failed {
            step: Step::Read,
            source: Arc::new(err),
        }
    }
}
