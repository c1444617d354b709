//! The `chat_messages` table.

use rusqlite::{Connection, params};

use super::{Result, chats};
use crate::domain::{ChatMessage, NewMessage, Timestamp};

/// Appends `messages` to `owner`'s chat `chat_id`, in order, and returns them as stored.
///
/// Run it inside a transaction: the ids then increase strictly in array order, and a
/// failure part-way leaves nothing behind once the caller rolls back.
pub fn insert_messages(
    conn: &Connection,
    owner: &str,
    chat_id: i64,
    messages: Vec<NewMessage>,
    now: &Timestamp,
) -> Result<Vec<ChatMessage>> {
    chats::require_owned_chat(conn, owner, chat_id)?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut stored = Vec::with_capacity(messages.len());
    for message in messages {
        let id = insert.insert(params![
            chat_id,
            owner,
            message.content,
            message.role.as_str(),
            now.as_str()
        ])?;
        stored.push(ChatMessage {
            id,
            chat_conversation_id: chat_id,
            neptun_user_id: owner.to_owned(),
            message: message.content,
            actor: message.role,
            created_at: now.clone(),
        });
    }
    chats::touch_chat(conn, chat_id, now)?;
    Ok(stored)
}
