//! The `users` table.

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::{Entity, Error, Result};
use crate::domain::Timestamp;

/// Inserts a user. [`Error::Conflict`] if the id or the email is taken.
pub fn insert_user(
    conn: &Connection,
    id: &str,
    email: Option<&str>,
    password_hash: Option<&str>,
    now: &Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO users (id, primary_email, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![id, email, password_hash, now.as_str()])
    .map_err(|err| match err.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => Error::Conflict(Entity::User),
        _ => Error::Sqlite(err),
    })?;
    Ok(())
}

/// Whether a user with this id exists.
pub fn user_exists(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Fails with [`Error::NotFound`] unless the user exists.
pub fn require_user(conn: &Connection, id: &str) -> Result<()> {
    if user_exists(conn, id)? {
        Ok(())
    } else {
        Err(Error::NotFound(Entity::User))
    }
}
