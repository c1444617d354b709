//! The `chat_conversations` table.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Entity, Error, Result};
use crate::domain::Timestamp;

/// Inserts a chat owned by `owner` and returns its id.
pub fn insert_chat(
    conn: &Connection,
    owner: &str,
    name: &str,
    model: &str,
    now: &Timestamp,
) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?4)",
    )?
    .execute(params![owner, name, model, now.as_str()])?;
    Ok(conn.last_insert_rowid())
}

/// Fails with [`Error::NotFound`] unless chat `chat_id` exists and belongs to `owner`.
/// Both cases give the same error, so a caller cannot learn that another user's chat exists.
pub fn require_owned_chat(conn: &Connection, owner: &str, chat_id: i64) -> Result<()> {
    conn.prepare_cached("SELECT 1 FROM chat_conversations WHERE id = ?1 AND neptun_user_id = ?2")?
        .query_row(params![chat_id, owner], |_| Ok(()))
        .optional()?
        .ok_or(Error::NotFound(Entity::Chat))
}

/// Moves the chat's `updated_at` to `now`.
pub fn touch_chat(conn: &Connection, chat_id: i64, now: &Timestamp) -> Result<()> {
    conn.prepare_cached("UPDATE chat_conversations SET updated_at = ?2 WHERE id = ?1")?
        .execute(params![chat_id, now.as_str()])?;
    Ok(())
}
