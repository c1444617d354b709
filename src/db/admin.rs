//! [`Admin`]: a direct, synchronous handle for the admin commands (and test seeding), on
//! either backend. It writes to the same database as running servers; each change is
//! one transaction, and the backends' locks make the two take turns.

use std::path::Path;

use super::{Location, Result, postgres, sqlite};
use crate::domain::{Timestamp, User};

/// One session as `session list` shows it: never the token, only the start of its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The first 12 hex digits of the token's SHA-256, enough to tell sessions apart.
    pub hash_prefix: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// What `session revoke --prefix` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixMatch {
    /// Exactly one session matched, and it is revoked.
    Revoked,
    /// No session's hash starts with the prefix.
    None,
    /// This many sessions' hashes start with it; none was revoked.
    Ambiguous(usize),
}

/// What deleting a user deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeletedUser {
    /// Sessions (live or expired).
    pub sessions: usize,
    /// Chats.
    pub chats: usize,
    /// Messages, in all of the user's chats.
    pub messages: usize,
    /// Stored idempotency answers.
    pub idempotency_keys: usize,
}

/// What `compact` did: the database's size before and after, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// The database's size in bytes when `compact` began.
    pub before: u64,
    /// Its size once `compact` was done.
    pub after: u64,
}

/// A connection for one-off administrative changes.
pub struct Admin(Backend);

enum Backend {
    Sqlite(sqlite::Admin),
    Postgres(postgres::Admin),
}

/// Calls the same method on whichever backend `$admin` is.
macro_rules! dispatch {
    ($self:expr, $admin:ident => $call:expr) => {
        match &mut $self.0 {
            Backend::Sqlite($admin) => $call,
            Backend::Postgres($admin) => $call,
        }
    };
}

impl Admin {
    /// Opens the database at `location` (creating it and applying the schema if
    /// needed). Admin writes are rare, so they are always fully durable.
    pub fn open(location: &Location) -> Result<Admin> {
        Ok(Admin(match location {
            Location::Sqlite(path) => Backend::Sqlite(sqlite::Admin::open(path)?),
            Location::Postgres(url) => Backend::Postgres(postgres::Admin::open(url)?),
        }))
    }

    /// Creates a user. [`Error::Conflict`](super::Error::Conflict) if the id or email is taken.
    pub fn create_user(
        &mut self,
        id: &str,
        email: Option<&str>,
        password_hash: Option<&str>,
    ) -> Result<()> {
        dispatch!(self, admin => admin.create_user(id, email, password_hash))
    }

    /// Stores a session (by its token hash) for an existing user. `NotFound(User)` otherwise.
    pub fn create_session(
        &mut self,
        user_id: &str,
        token_hash: &[u8; 32],
        expires_at: &Timestamp,
    ) -> Result<()> {
        dispatch!(self, admin => admin.create_session(user_id, token_hash, expires_at))
    }

    /// Creates a chat for an existing user and returns its id. `NotFound(User)` otherwise.
    pub fn create_chat(&mut self, owner: &str, name: &str, model: &str) -> Result<i64> {
        dispatch!(self, admin => admin.create_chat(owner, name, model))
    }

    /// The sessions of a user, newest first. `NotFound(User)` for an unknown user.
    pub fn list_sessions(&mut self, user_id: &str) -> Result<Vec<SessionInfo>> {
        dispatch!(self, admin => admin.list_sessions(user_id))
    }

    /// Deletes the session with this token hash; whether there was one.
    pub fn revoke_session(&mut self, token_hash: &[u8; 32]) -> Result<bool> {
        dispatch!(self, admin => admin.revoke_session(token_hash))
    }

    /// Deletes every session of a user; how many there were.
    pub fn revoke_all_sessions(&mut self, user_id: &str) -> Result<usize> {
        dispatch!(self, admin => admin.revoke_all_sessions(user_id))
    }

    /// Revokes the one session whose token hash starts with `hex_prefix` (hex digits,
    /// either case, as `session list` shows them). Revokes nothing unless exactly one
    /// session matches: a prefix that fits two sessions says which to revoke no better
    /// than a typo.
    pub fn revoke_session_by_prefix(&mut self, hex_prefix: &str) -> Result<PrefixMatch> {
        let hex_prefix = hex_prefix.to_ascii_lowercase();
        dispatch!(self, admin => admin.revoke_session_by_prefix(&hex_prefix))
    }

    /// The user with this id, if any.
    pub fn find_user(&mut self, user_id: &str) -> Result<Option<User>> {
        dispatch!(self, admin => admin.find_user(user_id))
    }

    /// Every user, oldest first.
    pub fn list_users(&mut self) -> Result<Vec<User>> {
        dispatch!(self, admin => admin.list_users())
    }

    /// Deletes a user with all their sessions, chats, messages, idempotency answers and
    /// recorded changes; what was deleted. The user is gone when this returns (SQLite
    /// purges a large account's messages a slice per transaction on the way).
    /// `NotFound(User)` for an unknown user.
    pub fn delete_user(&mut self, user_id: &str) -> Result<DeletedUser> {
        dispatch!(self, admin => admin.delete_user(user_id))
    }

    /// Sets a user's password hash and revokes all of the user's sessions, in one
    /// transaction; how many sessions were revoked. `NotFound(User)` for an unknown user.
    pub fn set_password(&mut self, user_id: &str, password_hash: &str) -> Result<usize> {
        dispatch!(self, admin => admin.set_password(user_id, password_hash))
    }

    /// Checks the database; returns every problem found (none: the database is sound).
    /// SQLite: the full `integrity_check` and `foreign_key_check`. PostgreSQL: the
    /// schema version, that every table, constraint and index of the schema is there
    /// and valid, and that no row breaks a rule the schema states (see the `postgres`
    /// module).
    pub fn check(&mut self) -> Result<Vec<String>> {
        dispatch!(self, admin => admin.check())
    }

    /// Reclaims the space deleted data left behind. SQLite: merges the search index
    /// (which drops deleted messages' words for good), rewrites the file without its
    /// free pages (`VACUUM`) and switches it to incremental auto-vacuum, after which
    /// servers give freed pages back by themselves; it holds the write lock while it
    /// runs and needs free disk space the size of the file. PostgreSQL: `VACUUM
    /// (ANALYZE)` of the tables, which blocks nothing.
    pub fn compact(&mut self) -> Result<Compacted> {
        dispatch!(self, admin => admin.compact())
    }

    /// Writes a consistent copy of an SQLite database to `dest` while servers keep
    /// writing. On PostgreSQL it refuses, naming `pg_dump` as the tool.
    pub fn backup(&mut self, dest: &Path) -> Result<()> {
        dispatch!(self, admin => admin.backup(dest))
    }
}
