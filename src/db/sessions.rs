//! The `sessions` table. Rows hold the SHA-256 of a token, never the token.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;
use crate::domain::Timestamp;

/// Stores a session for `user_id`, valid until `expires_at`.
pub fn insert_session(
    conn: &Connection,
    token_hash: &[u8; 32],
    user_id: &str,
    created_at: &Timestamp,
    expires_at: &Timestamp,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        &token_hash[..],
        user_id,
        created_at.as_str(),
        expires_at.as_str()
    ])?;
    Ok(())
}

/// The user of the session with this token hash, if it exists and has not expired at `now`.
pub fn find_session_user(
    conn: &Connection,
    token_hash: &[u8; 32],
    now: &Timestamp,
) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT user_id FROM sessions WHERE token_hash = ?1 AND expires_at > ?2")?
        .query_row(params![&token_hash[..], now.as_str()], |row| row.get(0))
        .optional()?)
}

/// Deletes the session with this token hash, if any.
pub fn delete_session(conn: &Connection, token_hash: &[u8; 32]) -> Result<()> {
    conn.prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?
        .execute([&token_hash[..]])?;
    Ok(())
}
