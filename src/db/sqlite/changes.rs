//! The `changes` table: the change feed the events stream reads (see `schema.sql`).

use rusqlite::{Connection, OptionalExtension, params};

use super::{Error, Result, Step, chats, messages};
use crate::domain::{Change, ChangeKind, ChangeLog, Timestamp};

/// Records a change of `user`'s data, numbered after their last one. Run it in the
/// transaction of the write it describes: the writer commits one write at a time, so the
/// numbers follow commit order.
pub(super) fn record(
    conn: &Connection,
    user: &str,
    kind: ChangeKind,
    chat_id: Option<i64>,
    ids: Option<(i64, i64)>,
    detail: Option<&str>,
    now: &Timestamp,
) -> Result<i64> {
    let seq: i64 = conn
        .prepare_cached(
            "UPDATE users SET last_change = last_change + 1 WHERE id = ?1 RETURNING last_change",
        )?
        .query_row([user], |row| row.get(0))
        .optional()?
        .ok_or(Error::NotFound(super::Entity::User))?;
    let (first_id, last_id) = ids.unzip();
    conn.prepare_cached(
        "INSERT INTO changes (user_id, seq, kind, chat_id, first_id, last_id, detail, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        user,
        seq,
        kind.as_str(),
        chat_id,
        first_id,
        last_id,
        detail,
        now.as_str()
    ])?;
    Ok(seq)
}

/// Up to `limit` of `user`'s changes after number `after`, oldest first, with the
/// messages each `messages_added` stored (those still there), and where the feed stands.
/// Run it in a read transaction: the changes and their messages are one snapshot.
pub(super) fn read(conn: &Connection, user: &str, after: i64, limit: usize) -> Result<ChangeLog> {
    let (last, oldest): (Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT last_change, (SELECT min(seq) FROM changes WHERE user_id = ?1) \
             FROM users WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM users_deleted WHERE id = ?1)",
        )?
        .query_row([user], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?
        .unwrap_or((None, None));
    let Some(last) = last else {
        return Err(Error::NotFound(super::Entity::User));
    };
    let mut stmt = conn.prepare_cached(
        "SELECT seq, kind, chat_id, first_id, last_id, detail, created_at FROM changes \
         WHERE user_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![user, after, limit])?;
    let mut changes = Vec::new();
    while let Some(row) = rows.next()? {
        let kind_text: String = row.get(1)?;
        let kind = ChangeKind::parse(&kind_text).ok_or_else(|| {
            Error::described(
                Step::Statement,
                format!("a change of an unknown kind: {kind_text}"),
            )
        })?;
        let chat_id: Option<i64> = row.get(2)?;
        let ids: (Option<i64>, Option<i64>) = (row.get(3)?, row.get(4)?);
        let messages = match (kind, chat_id, ids) {
            (ChangeKind::MessagesAdded, Some(chat), (Some(first), Some(last))) => {
                messages::find_message_range(conn, chat, first, last)?
            }
            _ => Vec::new(),
        };
        let chat = match (kind, chat_id) {
            (ChangeKind::ChatCreated | ChangeKind::ChatRenamed, Some(chat)) => {
                match chats::find_owned_chat(conn, user, chat) {
                    Ok(chat) => Some(chat),
                    Err(Error::NotFound(_)) => None,
                    Err(err) => return Err(err),
                }
            }
            _ => None,
        };
        changes.push(Change {
            seq: row.get(0)?,
            kind,
            chat_id,
            detail: row.get(5)?,
            chat,
            messages,
            created_at: Timestamp::from_stored(row.get(6)?),
        });
    }
    Ok(ChangeLog {
        changes,
        last,
        oldest,
    })
}

/// Deletes changes recorded before `before`; how many.
pub(super) fn delete_older(conn: &Connection, before: &Timestamp) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM changes WHERE created_at < ?1")?
        .execute([before.as_str()])?)
}
