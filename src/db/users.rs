//! The `users` table.

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::{Entity, Error, Result};
use crate::domain::{Timestamp, User};

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

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        primary_email: row.get(1)?,
        created_at: Timestamp::from_stored(row.get(2)?),
    })
}

/// The user with this id.
pub fn find_user(conn: &Connection, id: &str) -> Result<Option<User>> {
    Ok(conn
        .prepare_cached("SELECT id, primary_email, created_at FROM users WHERE id = ?1")?
        .query_row([id], user_from_row)
        .optional()?)
}

/// The user with this (already lower-cased) email, and their password hash if they have one.
pub fn find_user_by_email(
    conn: &Connection,
    email: &str,
) -> Result<Option<(User, Option<String>)>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, primary_email, created_at, password_hash FROM users WHERE primary_email = ?1",
        )?
        .query_row([email], |row| Ok((user_from_row(row)?, row.get(3)?)))
        .optional()?)
}
