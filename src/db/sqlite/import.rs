//! Storing imported chats (see [`crate::archive`]): each chat with its own times, each
//! message with its own, indexed for search, counted for the quota and recorded in the
//! change feed, as if they had been written through the API.

use rusqlite::{Connection, params};

use super::{Error, Result, changes, search, users};
use crate::archive::ImportChat;
use crate::db::{Entity, Imported};
use crate::domain::{ChangeKind, Timestamp};

/// Stores `chats` for `owner` inside the caller's transaction; what it stored.
/// [`Error::NotFound`] if there is no such user.
pub(super) fn store(
    conn: &Connection,
    owner: &str,
    chats: Vec<ImportChat>,
    now: &Timestamp,
) -> Result<Imported> {
    if !users::user_exists(conn, owner)? {
        return Err(Error::NotFound(Entity::User));
    }
    let mut insert_chat = conn.prepare_cached(
        "INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut insert_message = conn.prepare_cached(
        "INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut imported = Imported::default();
    let mut bytes = 0_usize;
    for chat in chats {
        let chat_id = insert_chat.insert(params![
            owner,
            chat.name,
            chat.model,
            chat.created_at.as_str(),
            chat.updated_at.as_str()
        ])?;
        changes::record(
            conn,
            owner,
            ChangeKind::ChatCreated,
            Some(chat_id),
            None,
            None,
            now,
        )?;
        imported.chats += 1;
        let mut ids = None;
        for message in chat.messages {
            let id = insert_message.insert(params![
                chat_id,
                owner,
                message.content,
                message.actor.as_str(),
                message.created_at.as_str()
            ])?;
            search::index(conn, id, &message.content)?;
            bytes += message.content.len();
            imported.messages += 1;
            ids = Some(ids.map_or((id, id), |(first, _)| (first, id)));
        }
        if ids.is_some() {
            let kind = ChangeKind::MessagesAdded;
            changes::record(conn, owner, kind, Some(chat_id), ids, None, now)?;
        }
    }
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    users::add_stored(conn, owner, count(imported.messages), count(bytes))?;
    Ok(imported)
}
