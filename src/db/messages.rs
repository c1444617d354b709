//! The `chat_messages` table.

use rusqlite::types::Type;
use rusqlite::{Connection, params};

use super::{Entity, Error, Result, chats};
use crate::domain::{ChatMessage, MessagePage, MessageWindow, NewMessage, Role, Timestamp};

/// Messages of chat ?1 with ids above ?2, oldest first, at most ?3 (-1: all).
const FORWARD_PAGE: &str = "SELECT id, chat_conversation_id, neptun_user_id, message, actor, \
     created_at FROM chat_messages WHERE chat_conversation_id = ?1 AND id > ?2 \
     ORDER BY id ASC LIMIT ?3";

/// Messages of chat ?1 with ids below ?2, newest first, at most ?3.
const BACKWARD_PAGE: &str = "SELECT id, chat_conversation_id, neptun_user_id, message, actor, \
     created_at FROM chat_messages WHERE chat_conversation_id = ?1 AND id < ?2 \
     ORDER BY id DESC LIMIT ?3";

/// The messages of chat ?1 from the newest back, for deleting the last turn.
const LAST_TURN: &str =
    "SELECT id, actor FROM chat_messages WHERE chat_conversation_id = ?1 ORDER BY id DESC";

fn message_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ChatMessage> {
    let actor: String = row.get(4)?;
    Ok(ChatMessage {
        id: row.get(0)?,
        chat_conversation_id: row.get(1)?,
        neptun_user_id: row.get(2)?,
        message: row.get(3)?,
        actor: Role::parse(&actor).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(4, Type::Text, "unknown actor".into())
        })?,
        created_at: Timestamp::from_stored(row.get(5)?),
    })
}

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

/// Reads a window of `owner`'s chat `chat_id`, oldest first, walking the
/// `(chat_conversation_id, id)` index. Ids are never reused, so paging by id never
/// skips or repeats a message, even while messages are being added.
pub fn list_messages(
    conn: &Connection,
    owner: &str,
    chat_id: i64,
    window: MessageWindow,
) -> Result<MessagePage> {
    chats::require_owned_chat(conn, owner, chat_id)?;
    let (sql, bound, limit) = match window {
        MessageWindow::All => (FORWARD_PAGE, 0, None),
        MessageWindow::After { after, limit } => (FORWARD_PAGE, after, Some(limit)),
        MessageWindow::Before { before, limit } => {
            (BACKWARD_PAGE, before.unwrap_or(i64::MAX), Some(limit))
        }
    };
    // One row more than asked tells whether another page follows.
    let fetch = limit.map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1);
    let mut stmt = conn.prepare_cached(sql)?;
    let mut messages = stmt
        .query_map(params![chat_id, bound, fetch], message_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let more = limit.is_some_and(|limit| messages.len() > limit);
    if let Some(limit) = limit {
        messages.truncate(limit);
    }
    let backwards = matches!(window, MessageWindow::Before { .. });
    if backwards {
        messages.reverse();
    }
    let next = match (more, backwards) {
        (false, _) => None,
        (true, false) => messages.last().map(|m| m.id),
        (true, true) => messages.first().map(|m| m.id),
    };
    Ok(MessagePage { messages, next })
}

/// Deletes the last turn of `owner`'s chat so a client can regenerate an answer, and
/// returns the deleted ids, oldest first:
/// - the last message is the assistant's: it and the user messages directly before it;
/// - the last messages are the user's (unanswered): all of those trailing user messages;
/// - the last message is a system message: that message alone.
///
/// [`Error::NotFound`]`(Message)` when the chat has no messages.
pub fn delete_last_turn(
    conn: &Connection,
    owner: &str,
    chat_id: i64,
    now: &Timestamp,
) -> Result<Vec<i64>> {
    chats::require_owned_chat(conn, owner, chat_id)?;
    let mut stmt = conn.prepare_cached(LAST_TURN)?;
    let mut rows = stmt.query([chat_id])?;
    let mut doomed = Vec::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let actor: String = row.get(1)?;
        let take = match (doomed.is_empty(), actor.as_str()) {
            (true, _) => true,
            (false, "user") => true,
            (false, _) => false,
        };
        if !take {
            break;
        }
        doomed.push(id);
        if doomed.len() == 1 && actor == "system" {
            break;
        }
    }
    drop(rows);
    if doomed.is_empty() {
        return Err(Error::NotFound(Entity::Message));
    }
    let mut delete = conn.prepare_cached("DELETE FROM chat_messages WHERE id = ?1")?;
    for id in &doomed {
        delete.execute([id])?;
    }
    chats::touch_chat(conn, chat_id, now)?;
    doomed.reverse();
    Ok(doomed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query plan of `sql`, one step per line.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let values = [1_i64, 0, 10];
        let bound = rusqlite::params_from_iter(&values[..stmt.parameter_count()]);
        stmt.query_map(bound, |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap()
            .join("\n")
    }

    #[test]
    fn reading_a_chat_in_order_walks_the_chat_and_id_index_without_sorting() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::db::schema::migrate(&mut conn).unwrap();
        for sql in [FORWARD_PAGE, BACKWARD_PAGE, LAST_TURN] {
            let plan = plan(&conn, sql);
            assert!(plan.contains("chat_messages_by_chat"), "{sql}:\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql} sorts:\n{plan}");
        }
    }
}
