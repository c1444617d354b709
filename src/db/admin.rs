//! [`Admin`]: a direct, synchronous handle for the admin commands (and test seeding).
//! It writes to the same file as a running server; IMMEDIATE transactions and the busy
//! timeout make the two take turns.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::{Result, chats, open_for_writing, sessions, users};
use crate::domain::Timestamp;

/// A read-write connection for one-off administrative changes.
pub struct Admin {
    conn: Connection,
}

impl Admin {
    /// Opens the database at `path` (creating it and applying the schema if needed).
    pub fn open(path: &Path) -> Result<Admin> {
        Ok(Admin {
            conn: open_for_writing(path)?,
        })
    }

    fn transaction<T>(&mut self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Creates a user. `Conflict(User)` if the id or email is taken.
    pub fn create_user(
        &mut self,
        id: &str,
        email: Option<&str>,
        password_hash: Option<&str>,
    ) -> Result<()> {
        self.transaction(|tx| users::insert_user(tx, id, email, password_hash, &Timestamp::now()))
    }

    /// Stores a session (by its token hash) for an existing user. `NotFound(User)` otherwise.
    pub fn create_session(
        &mut self,
        user_id: &str,
        token_hash: &[u8; 32],
        expires_at: &Timestamp,
    ) -> Result<()> {
        self.transaction(|tx| {
            users::require_user(tx, user_id)?;
            sessions::insert_session(tx, token_hash, user_id, &Timestamp::now(), expires_at)
        })
    }

    /// Creates a chat for an existing user and returns its id. `NotFound(User)` otherwise.
    pub fn create_chat(&mut self, owner: &str, name: &str, model: &str) -> Result<i64> {
        self.transaction(|tx| {
            users::require_user(tx, owner)?;
            Ok(chats::insert_chat(tx, owner, name, model, &Timestamp::now())?.id)
        })
    }
}
