//! The `chat_conversations` table.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Entity, Error, Result, sessions};
use crate::domain::{Chat, ChatOrder, ChatSortField, SessionClaim, Timestamp};

const CHAT_COLUMNS: &str = "id, name, model, neptun_user_id, created_at, updated_at";

fn chat_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Chat> {
    Ok(Chat {
        id: row.get(0)?,
        name: row.get(1)?,
        model: row.get(2)?,
        neptun_user_id: row.get(3)?,
        created_at: Timestamp::from_stored(row.get(4)?),
        updated_at: Timestamp::from_stored(row.get(5)?),
    })
}

/// Inserts a chat owned by `owner` and returns it.
pub fn insert_chat(
    conn: &Connection,
    owner: &str,
    name: &str,
    model: &str,
    now: &Timestamp,
) -> Result<Chat> {
    conn.prepare_cached(
        "INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?4)",
    )?
    .execute(params![owner, name, model, now.as_str()])?;
    Ok(Chat {
        id: conn.last_insert_rowid(),
        name: name.to_owned(),
        model: model.to_owned(),
        neptun_user_id: owner.to_owned(),
        created_at: now.clone(),
        updated_at: now.clone(),
    })
}

/// `owner`'s chat `chat_id`; [`Error::NotFound`] if it does not exist or is someone
/// else's (the same error, so a caller cannot learn that another user's chat exists).
pub fn find_owned_chat(conn: &Connection, owner: &str, chat_id: i64) -> Result<Chat> {
    conn.prepare_cached(&format!(
        "SELECT {CHAT_COLUMNS} FROM chat_conversations WHERE id = ?1 AND neptun_user_id = ?2"
    ))?
    .query_row(params![chat_id, owner], chat_from_row)
    .optional()?
    .ok_or(Error::NotFound(Entity::Chat))
}

/// Checks `claim` and that chat `chat_id` is the claimed user's, in one statement (a
/// read runs it for every page): [`Error::NotFound`]`(Session)` if the session is unknown
/// or expired at `now`, [`Error::WrongUser`] if it is another user's, then
/// [`Error::NotFound`]`(Chat)` if the chat is not the user's.
pub fn require_claimed_chat(
    conn: &Connection,
    claim: &SessionClaim,
    chat_id: i64,
    now: &Timestamp,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.user_id, EXISTS (SELECT 1 FROM chat_conversations c \
         WHERE c.id = ?3 AND c.neptun_user_id = s.user_id) \
         FROM sessions s WHERE s.token_hash = ?1 AND s.expires_at > ?2",
    )?;
    let mut rows = stmt.query(params![&claim.token_hash[..], now.as_str(), chat_id])?;
    let Some(row) = rows.next()? else {
        return Err(Error::NotFound(Entity::Session));
    };
    sessions::check_claimed_user(row.get_ref(0)?, claim)?;
    if row.get::<_, bool>(1)? {
        Ok(())
    } else {
        Err(Error::NotFound(Entity::Chat))
    }
}

/// Like [`find_owned_chat`], without reading the row.
pub fn require_owned_chat(conn: &Connection, owner: &str, chat_id: i64) -> Result<()> {
    conn.prepare_cached("SELECT 1 FROM chat_conversations WHERE id = ?1 AND neptun_user_id = ?2")?
        .query_row(params![chat_id, owner], |_| Ok(()))
        .optional()?
        .ok_or(Error::NotFound(Entity::Chat))
}

/// All of `owner`'s chats in the given order (ties broken by id in the same direction).
pub fn list_chats(conn: &Connection, owner: &str, order: ChatOrder) -> Result<Vec<Chat>> {
    let column = match order.field {
        ChatSortField::CreatedAt => "created_at",
        ChatSortField::UpdatedAt => "updated_at",
        ChatSortField::Name => "name COLLATE NOCASE",
    };
    let direction = if order.descending { "DESC" } else { "ASC" };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CHAT_COLUMNS} FROM chat_conversations WHERE neptun_user_id = ?1 \
         ORDER BY {column} {direction}, id {direction}"
    ))?;
    let chats = stmt
        .query_map([owner], chat_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(chats)
}

/// Renames `owner`'s chat and moves its `updated_at`; returns it as stored.
pub fn rename_chat(
    conn: &Connection,
    owner: &str,
    chat_id: i64,
    name: &str,
    now: &Timestamp,
) -> Result<Chat> {
    let changed = conn
        .prepare_cached(
            "UPDATE chat_conversations SET name = ?3, updated_at = ?4 \
             WHERE id = ?1 AND neptun_user_id = ?2",
        )?
        .execute(params![chat_id, owner, name, now.as_str()])?;
    if changed == 0 {
        return Err(Error::NotFound(Entity::Chat));
    }
    find_owned_chat(conn, owner, chat_id)
}

/// Deletes those of `chat_ids` that are `owner`'s (their messages go with them) and
/// returns the ids that were deleted, in the order given, each once.
pub fn delete_chats(conn: &Connection, owner: &str, chat_ids: &[i64]) -> Result<Vec<i64>> {
    let mut delete = conn
        .prepare_cached("DELETE FROM chat_conversations WHERE id = ?1 AND neptun_user_id = ?2")?;
    let mut deleted = Vec::new();
    for &chat_id in chat_ids {
        if delete.execute(params![chat_id, owner])? > 0 {
            deleted.push(chat_id);
        }
    }
    Ok(deleted)
}

/// Moves the chat's `updated_at` to `now`.
pub fn touch_chat(conn: &Connection, chat_id: i64, now: &Timestamp) -> Result<()> {
    conn.prepare_cached("UPDATE chat_conversations SET updated_at = ?2 WHERE id = ?1")?
        .execute(params![chat_id, now.as_str()])?;
    Ok(())
}
