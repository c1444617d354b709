//! The `chat_messages` table.

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, params};

use super::{BoxError, Entity, Error, Result, changes, chats, search, users};
use crate::domain::{
    ChangeKind, ChatMessage, MessageRef, MessageWindow, NewMessage, Role, Timestamp,
};

/// Messages of chat ?1 with ids between ?2 and ?3 (both excluded), oldest first, at
/// most ?4 (-1: all).
const PAGE: &str = "SELECT id, neptun_user_id, message, actor, created_at FROM chat_messages \
     WHERE chat_conversation_id = ?1 AND id > ?2 AND id < ?3 ORDER BY id ASC LIMIT ?4";

/// The id of the message that comes right before the newest ?3 messages of chat ?1 with
/// ids below ?2: the exclusive lower bound of a backward page. No row when the page
/// reaches the chat's first message.
const PAGE_START: &str = "SELECT id FROM chat_messages \
     WHERE chat_conversation_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT 1 OFFSET ?3";

/// The messages of chat ?1 from the newest back, for deleting the last turn.
const LAST_TURN: &str =
    "SELECT id, actor FROM chat_messages WHERE chat_conversation_id = ?1 ORDER BY id DESC";

/// Messages of chat ?1 with ids above ?2 and up to ?3, oldest first, at most ?4: one
/// slice of a whole chat.
const SLICE: &str = "SELECT id, neptun_user_id, message, actor, created_at FROM chat_messages \
     WHERE chat_conversation_id = ?1 AND id > ?2 AND id <= ?3 ORDER BY id ASC LIMIT ?4";

/// The newest message id of chat ?1 (NULL when it has none).
const LAST_ID: &str = "SELECT max(id) FROM chat_messages WHERE chat_conversation_id = ?1";

/// Deletes up to ?2 messages of chat ?1, walking the `(chat_conversation_id, id)` index.
const DELETE_SLICE: &str = "DELETE FROM chat_messages WHERE id IN \
     (SELECT id FROM chat_messages WHERE chat_conversation_id = ?1 LIMIT ?2)";

/// Appends `messages` to `owner`'s chat `chat_id`, in order, and returns them as stored;
/// adds them to the owner's storage counts (see [`users::add_stored`]).
///
/// Run it inside a transaction: the ids then increase strictly in array order (one
/// after the other: nothing else inserts meanwhile), and a failure part-way leaves
/// nothing behind once the caller rolls back.
pub(super) fn insert_messages(
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
        search::index(conn, id, &message.content)?;
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
    let bytes: usize = stored.iter().map(|m| m.message.len()).sum();
    users::add_stored(conn, owner, to_sql_count(stored.len()), to_sql_count(bytes))?;
    if let (Some(first), Some(last)) = (stored.first(), stored.last()) {
        let ids = Some((first.id, last.id));
        changes::record(
            conn,
            owner,
            ChangeKind::MessagesAdded,
            Some(chat_id),
            ids,
            None,
            now,
        )?;
    }
    Ok(stored)
}

/// The messages of chat `chat_id` with ids `first_id` to `last_id`, oldest first: the
/// batch an idempotency key stored, read again to answer its retry. None once the chat
/// is deleted, even while its messages wait to be purged.
pub(super) fn find_message_range(
    conn: &Connection,
    chat_id: i64,
    first_id: i64,
    last_id: i64,
) -> Result<Vec<ChatMessage>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, neptun_user_id, message, actor, created_at FROM chat_messages \
         WHERE id BETWEEN ?1 AND ?2 AND chat_conversation_id = ?3 AND EXISTS \
         (SELECT 1 FROM chat_conversations WHERE id = ?3 AND deleted_at IS NULL) ORDER BY id",
    )?;
    let rows = stmt.query_map(params![first_id, last_id, chat_id], |row| {
        Ok(ChatMessage {
            id: row.get(0)?,
            chat_conversation_id: chat_id,
            neptun_user_id: row.get(1)?,
            message: row.get(2)?,
            actor: actor(row, 3)?,
            created_at: Timestamp::from_stored(row.get(4)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Reads a window of chat `chat_id`, oldest first, walking the
/// `(chat_conversation_id, id)` index, and hands each message to `each` without copying
/// it. The caller has checked that the chat is the reader's
/// ([`chats::require_claimed_chat`]). Returns the cursor for the next page: the last id
/// seen when paging forward, the first when paging backward; `None` when no message lies
/// beyond the window. Ids are never reused, so paging by id never skips or repeats a
/// message, even while messages are being added. Run it inside a read transaction: a
/// backward page is found by two queries, which must see the same messages.
pub(super) fn visit_messages<F>(
    conn: &Connection,
    chat_id: i64,
    window: MessageWindow,
    mut each: F,
) -> Result<Option<i64>>
where
    F: FnMut(MessageRef<'_>) -> Result<(), BoxError>,
{
    // Backward pages are found from their start, so that they can be read (and sent)
    // oldest first without holding the rows.
    let (after, before, limit, more_before) = match window {
        MessageWindow::All => (0, i64::MAX, None, false),
        MessageWindow::After { after, limit } => (after, i64::MAX, Some(limit), false),
        MessageWindow::Before { before, limit } => {
            let before = before.unwrap_or(i64::MAX);
            let start: Option<i64> = conn
                .prepare_cached(PAGE_START)?
                .query_row(params![chat_id, before, to_sql_count(limit)], |row| {
                    row.get(0)
                })
                .optional()?;
            (start.unwrap_or(0), before, None, start.is_some())
        }
    };
    // Forward, one row more than asked tells whether another page follows.
    let fetch = limit.map_or(-1, |limit| to_sql_count(limit).saturating_add(1));
    let mut stmt = conn.prepare_cached(PAGE)?;
    let mut rows = stmt.query(params![chat_id, after, before, fetch])?;
    let (mut seen, mut first, mut last) = (0_usize, None, None);
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        if limit.is_some_and(|limit| seen == limit) {
            return Ok(last);
        }
        each(message_ref(row, chat_id)?).map_err(Error::Render)?;
        seen += 1;
        first = first.or(Some(id));
        last = Some(id);
    }
    Ok(if more_before { first } else { None })
}

/// The newest message id of chat `chat_id`; `None` when it has no messages.
pub(super) fn last_message_id(conn: &Connection, chat_id: i64) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(LAST_ID)?
        .query_row([chat_id], |row| row.get(0))?)
}

/// Whether the message with this id is stored.
pub(super) fn message_exists(conn: &Connection, id: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM chat_messages WHERE id = ?1)")?
        .query_row([id], |row| row.get(0))?)
}

/// How much one slice of a whole-chat read takes: whichever limit comes first.
#[derive(Debug, Clone, Copy)]
pub(super) struct SliceBudget {
    /// Most messages.
    pub rows: usize,
    /// Most bytes of message text (the last message read may go past it).
    pub text_bytes: usize,
}

/// Reads one slice of chat `chat_id`: its messages with ids above `after` and up to
/// `through`, oldest first, until `budget` is spent, handing each to `each` as
/// [`visit_messages`] does. Returns the id of the last message read if more may follow,
/// `None` once `through` is reached.
pub(super) fn visit_slice<F>(
    conn: &Connection,
    chat_id: i64,
    after: i64,
    through: i64,
    budget: SliceBudget,
    mut each: F,
) -> Result<Option<i64>>
where
    F: FnMut(MessageRef<'_>) -> Result<(), BoxError>,
{
    let mut stmt = conn.prepare_cached(SLICE)?;
    let mut rows = stmt.query(params![chat_id, after, through, to_sql_count(budget.rows)])?;
    let (mut seen, mut text_bytes) = (0_usize, 0_usize);
    while let Some(row) = rows.next()? {
        let message = message_ref(row, chat_id)?;
        let id = message.id;
        text_bytes += message.message.len();
        each(message).map_err(Error::Render)?;
        seen += 1;
        if id < through && (seen == budget.rows || text_bytes >= budget.text_bytes) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// The message in `row` (a row of [`PAGE`] or [`SLICE`]), borrowed from SQLite.
pub(super) fn message_ref<'row>(
    row: &'row rusqlite::Row<'_>,
    chat_id: i64,
) -> Result<MessageRef<'row>> {
    Ok(MessageRef {
        id: row.get(0)?,
        chat_conversation_id: chat_id,
        neptun_user_id: text(row, 1)?,
        message: text(row, 2)?,
        actor: actor(row, 3)?,
        created_at: text(row, 4)?,
    })
}

/// A count as SQLite's LIMIT and OFFSET take it.
fn to_sql_count(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Column `index` of `row` as a message's role.
pub(super) fn actor(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Role> {
    Role::parse(text(row, index)?).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(index, Type::Text, "unknown actor".into())
    })
}

/// Column `index` of `row` as text, borrowed from SQLite.
fn text<'row>(row: &'row rusqlite::Row<'_>, index: usize) -> rusqlite::Result<&'row str> {
    row.get_ref(index)?
        .as_str()
        .map_err(|err| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, err.into()))
}

/// Deletes the last turn of `owner`'s chat so a client can regenerate an answer, and
/// returns the deleted ids, oldest first:
/// - the last message is the assistant's: it and the user messages directly before it;
/// - the last messages are the user's (unanswered): all of those trailing user messages;
/// - the last message is a system message: that message alone.
///
/// [`Error::NotFound`]`(Message)` when the chat has no messages.
pub(super) fn delete_last_turn(
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
    let detail = deleted_ids_detail(&doomed);
    let kind = ChangeKind::MessagesDeleted;
    changes::record(conn, owner, kind, Some(chat_id), None, Some(&detail), now)?;
    Ok(doomed)
}

/// The detail of a `messages_deleted` change: the ids, as a JSON array.
fn deleted_ids_detail(ids: &[i64]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())
}

/// Deletes up to `limit` messages of chat `chat_id`; how many it deleted (fewer than
/// `limit`: none are left).
pub(super) fn delete_chat_messages(conn: &Connection, chat_id: i64, limit: usize) -> Result<usize> {
    Ok(conn
        .prepare_cached(DELETE_SLICE)?
        .execute(params![chat_id, to_sql_count(limit)])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query plan of `sql`, one step per line.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let values = [1_i64, 0, 1000, 10];
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
        crate::db::sqlite::schema::migrate(&mut conn).unwrap();
        for sql in [PAGE, PAGE_START, LAST_TURN, SLICE, LAST_ID, DELETE_SLICE] {
            let plan = plan(&conn, sql);
            assert!(plan.contains("chat_messages_by_chat"), "{sql}:\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql} sorts:\n{plan}");
        }
    }
}
