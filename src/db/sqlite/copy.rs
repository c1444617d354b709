//! The SQLite side of a [`copy`](crate::db::copy): every table read in key order a chunk
//! at a time, and written with the ids and values it had. One connection of its own,
//! outside the writer: a copy is one long transaction, read or write, that must not
//! hold up a server's writes on the source and keeps every other writer off the target
//! (`BEGIN IMMEDIATE`, waiting at most the busy timeout for a server's write to end).
//!
//! Chats that are deleted but not yet purged (`deleted_at` set) and their messages are
//! left out, as they are gone for their users, and their owners' storage counts are
//! read without those messages, as the purge will leave them.

use std::path::Path;

use rusqlite::{Connection, Row, params};

use super::{Durability, Result, open_for_writing};
use crate::db::copy::{ChatRow, KeyRow, MessageRow, NextIds, SessionRow, TableCounts, UserRow};
use crate::domain::Timestamp;

/// A database file opened for a copy.
pub(in crate::db) struct Side {
    conn: Connection,
}

impl Side {
    /// Opens (creating it and its schema, if new) the database at `path`.
    pub(in crate::db) fn open(path: &Path) -> Result<Side> {
        Ok(Side {
            conn: open_for_writing(path, Durability::Full)?,
        })
    }

    /// The rows of `sql` (a statement kept in the connection's cache) for `params`.
    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Runs the cached statement `sql` once per row.
    fn insert_each<R>(
        &self,
        sql: &str,
        rows: &[R],
        mut insert: impl FnMut(&mut rusqlite::CachedStatement<'_>, &R) -> rusqlite::Result<usize>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        for row in rows {
            insert(&mut stmt, row)?;
        }
        Ok(())
    }
}

/// The messages of chats still to be purged, which a copy leaves out.
const LIVE_MESSAGE: &str = "chat_conversation_id NOT IN \
     (SELECT id FROM chat_conversations WHERE deleted_at IS NOT NULL)";

const MESSAGE_COLUMNS: &str =
    "id, chat_conversation_id, neptun_user_id, message, actor, created_at";

fn message_row(row: &Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: row.get(0)?,
        chat_id: row.get(1)?,
        user_id: row.get(2)?,
        text: row.get(3)?,
        actor: row.get(4)?,
        created_at: stored(row.get(5)?),
    })
}

const KEY_COLUMNS: &str = "user_id, key, request_hash, first_message_id, last_message_id, \
     message_count, created_at";

fn key_row(row: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        user_id: row.get(0)?,
        key: row.get(1)?,
        request_hash: row.get(2)?,
        first_message_id: row.get(3)?,
        last_message_id: row.get(4)?,
        message_count: row.get(5)?,
        created_at: stored(row.get(6)?),
    })
}

fn limit(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn count(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(index)?).unwrap_or_default())
}

fn stored(text: String) -> Timestamp {
    Timestamp::from_stored(text)
}

impl crate::db::copy::Side for Side {
    fn begin_snapshot(&mut self) -> Result<()> {
        // A deferred transaction's snapshot starts with its first read: take it now.
        self.conn.execute_batch("BEGIN")?;
        self.conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        Ok(())
    }

    fn begin_write(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK")?;
        }
        Ok(())
    }

    fn counts(&mut self) -> Result<TableCounts> {
        let sql = format!(
            "SELECT (SELECT count(*) FROM users WHERE id NOT IN (SELECT id FROM users_deleted)), \
             (SELECT count(*) FROM sessions), \
             (SELECT count(*) FROM chat_conversations WHERE deleted_at IS NULL), \
             (SELECT count(*) FROM chat_messages WHERE {LIVE_MESSAGE}), \
             (SELECT count(*) FROM idempotency_keys)"
        );
        let counts = self.conn.query_row(&sql, [], |row| {
            Ok(TableCounts {
                users: count(row, 0)?,
                sessions: count(row, 1)?,
                chats: count(row, 2)?,
                messages: count(row, 3)?,
                idempotency_keys: count(row, 4)?,
            })
        })?;
        Ok(counts)
    }

    fn next_ids(&mut self) -> Result<NextIds> {
        let next = |table: &str| -> Result<i64> {
            let sql = format!(
                "SELECT max(coalesce((SELECT max(id) FROM {table}), 0), \
                 coalesce((SELECT seq FROM sqlite_sequence WHERE name = '{table}'), 0)) + 1"
            );
            Ok(self.conn.query_row(&sql, [], |row| row.get(0))?)
        };
        Ok(NextIds {
            chats: next("chat_conversations")?,
            messages: next("chat_messages")?,
        })
    }

    fn users(&mut self, after: Option<&UserRow>, limit_: usize) -> Result<Vec<UserRow>> {
        let after = after.map_or("", |row| row.id.as_str());
        self.rows(
            "SELECT u.id, u.primary_email, u.password_hash, u.created_at, \
             u.stored_messages - coalesce(gone.messages, 0), \
             u.stored_bytes - coalesce(gone.bytes, 0), u.last_change \
             FROM users u LEFT JOIN ( \
                 SELECT m.neptun_user_id AS user_id, count(*) AS messages, \
                     sum(length(CAST(m.message AS BLOB))) AS bytes \
                 FROM chat_messages m JOIN chat_conversations c ON c.id = m.chat_conversation_id \
                 WHERE c.deleted_at IS NOT NULL GROUP BY m.neptun_user_id \
             ) gone ON gone.user_id = u.id \
             WHERE u.id > ?1 AND u.id NOT IN (SELECT id FROM users_deleted) \
             ORDER BY u.id LIMIT ?2",
            params![after, limit(limit_)],
            |row| {
                Ok(UserRow {
                    id: row.get(0)?,
                    primary_email: row.get(1)?,
                    password_hash: row.get(2)?,
                    created_at: stored(row.get(3)?),
                    stored_messages: row.get(4)?,
                    stored_bytes: row.get(5)?,
                    last_change: row.get(6)?,
                })
            },
        )
    }

    fn sessions(&mut self, after: Option<&SessionRow>, limit_: usize) -> Result<Vec<SessionRow>> {
        let after = after.map_or(&[][..], |row| row.token_hash.as_slice());
        self.rows(
            "SELECT token_hash, user_id, created_at, expires_at FROM sessions \
             WHERE token_hash > ?1 ORDER BY token_hash LIMIT ?2",
            params![after, limit(limit_)],
            |row| {
                Ok(SessionRow {
                    token_hash: row.get(0)?,
                    user_id: row.get(1)?,
                    created_at: stored(row.get(2)?),
                    expires_at: stored(row.get(3)?),
                })
            },
        )
    }

    fn chats(&mut self, after: Option<&ChatRow>, limit_: usize) -> Result<Vec<ChatRow>> {
        let after = after.map_or(i64::MIN, |row| row.id);
        self.rows(
            "SELECT id, neptun_user_id, name, model, created_at, updated_at \
             FROM chat_conversations WHERE id > ?1 AND deleted_at IS NULL ORDER BY id LIMIT ?2",
            params![after, limit(limit_)],
            |row| {
                Ok(ChatRow {
                    id: row.get(0)?,
                    user_id: row.get(1)?,
                    name: row.get(2)?,
                    model: row.get(3)?,
                    created_at: stored(row.get(4)?),
                    updated_at: stored(row.get(5)?),
                })
            },
        )
    }

    fn messages(&mut self, after: Option<&MessageRow>, limit_: usize) -> Result<Vec<MessageRow>> {
        let (chat, id) = after.map_or((i64::MIN, i64::MIN), |row| (row.chat_id, row.id));
        // The rest of this chat, then the chats after it: two index range searches. (A
        // row-value comparison, `(chat, id) > (?, ?)`, searches by the chat alone and
        // scans the chat from its start for every chunk.)
        let mut rows = self.rows(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM chat_messages \
                 WHERE chat_conversation_id = ?1 AND id > ?2 AND {LIVE_MESSAGE} \
                 ORDER BY id LIMIT ?3"
            ),
            params![chat, id, limit(limit_)],
            message_row,
        )?;
        if rows.len() < limit_ {
            let more = self.rows(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM chat_messages \
                     WHERE chat_conversation_id > ?1 AND {LIVE_MESSAGE} \
                     ORDER BY chat_conversation_id, id LIMIT ?2"
                ),
                params![chat, limit(limit_ - rows.len())],
                message_row,
            )?;
            rows.extend(more);
        }
        Ok(rows)
    }

    fn keys(&mut self, after: Option<&KeyRow>, limit_: usize) -> Result<Vec<KeyRow>> {
        let (user, key) = after.map_or(("", ""), |row| (row.user_id.as_str(), row.key.as_str()));
        // As for messages: the rest of this user's keys, then the users after.
        let mut rows = self.rows(
            &format!(
                "SELECT {KEY_COLUMNS} FROM idempotency_keys WHERE user_id = ?1 AND key > ?2 \
                 ORDER BY key LIMIT ?3"
            ),
            params![user, key, limit(limit_)],
            key_row,
        )?;
        if rows.len() < limit_ {
            let more = self.rows(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM idempotency_keys WHERE user_id > ?1 \
                     ORDER BY user_id, key LIMIT ?2"
                ),
                params![user, limit(limit_ - rows.len())],
                key_row,
            )?;
            rows.extend(more);
        }
        Ok(rows)
    }

    fn insert_users(&mut self, rows: &[UserRow]) -> Result<()> {
        self.insert_each(
            "INSERT INTO users (id, primary_email, password_hash, created_at, \
             stored_messages, stored_bytes, last_change) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rows,
            |stmt, row| {
                stmt.execute(params![
                    row.id,
                    row.primary_email,
                    row.password_hash,
                    row.created_at.as_str(),
                    row.stored_messages,
                    row.stored_bytes,
                    row.last_change,
                ])
            },
        )
    }

    fn insert_sessions(&mut self, rows: &[SessionRow]) -> Result<()> {
        self.insert_each(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4)",
            rows,
            |stmt, row| {
                stmt.execute(params![
                    row.token_hash,
                    row.user_id,
                    row.created_at.as_str(),
                    row.expires_at.as_str(),
                ])
            },
        )
    }

    fn insert_chats(&mut self, rows: &[ChatRow]) -> Result<()> {
        self.insert_each(
            "INSERT INTO chat_conversations (id, neptun_user_id, name, model, created_at, \
             updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rows,
            |stmt, row| {
                stmt.execute(params![
                    row.id,
                    row.user_id,
                    row.name,
                    row.model,
                    row.created_at.as_str(),
                    row.updated_at.as_str(),
                ])
            },
        )
    }

    fn insert_messages(&mut self, rows: &[MessageRow]) -> Result<()> {
        self.insert_each(
            "INSERT INTO chat_messages (id, chat_conversation_id, neptun_user_id, message, \
             actor, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rows,
            |stmt, row| {
                stmt.execute(params![
                    row.id,
                    row.chat_id,
                    row.user_id,
                    row.text,
                    row.actor,
                    row.created_at.as_str(),
                ])
            },
        )?;
        for row in rows {
            super::search::index(&self.conn, row.id, &row.text)?;
        }
        Ok(())
    }

    fn insert_keys(&mut self, rows: &[KeyRow]) -> Result<()> {
        self.insert_each(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, first_message_id, \
             last_message_id, message_count, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rows,
            |stmt, row| {
                stmt.execute(params![
                    row.user_id,
                    row.key,
                    row.request_hash,
                    row.first_message_id,
                    row.last_message_id,
                    row.message_count,
                    row.created_at.as_str(),
                ])
            },
        )
    }

    fn set_next_ids(&mut self, next: NextIds) -> Result<()> {
        // AUTOINCREMENT hands out one past the larger of sqlite_sequence's entry and the
        // largest id; inserting the copied rows set the entry to their largest id.
        for (table, next) in [
            ("chat_conversations", next.chats),
            ("chat_messages", next.messages),
        ] {
            let seq = next - 1;
            self.conn.execute(
                "UPDATE sqlite_sequence SET seq = ?2 WHERE name = ?1 AND seq < ?2",
                params![table, seq],
            )?;
            self.conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) SELECT ?1, ?2 \
                 WHERE ?2 > 0 AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?1)",
                params![table, seq],
            )?;
        }
        Ok(())
    }
}
