//! The PostgreSQL side of a [`copy`](crate::db::copy): every table read in key order a
//! chunk at a time, and written a chunk per statement (`INSERT ... SELECT FROM
//! unnest(...)` of one array per column) with the ids and values it had; texts a client
//! sent (chat names, models, messages) are UTF-8 `bytea` here, as everywhere in this
//! backend. One connection
//! of its own, driven by a runtime of its own, as [`Admin`](super::Admin) is.
//!
//! A source is read in one `REPEATABLE READ READ ONLY` transaction, so every chunk
//! comes from the same snapshot. A target is written in one transaction that first
//! locks its tables against other writers (`EXCLUSIVE`: reads go on), waiting at most
//! the lock timeout for a server's writes to end; the copied ids are then set as the
//! identity sequences' last values, so new rows get fresh ids.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::admin::{TIMEOUT, block_on, client_runtime};
use super::{
    Durability, Error, PostgresUrl, Result, connection_config, instant, schema, text, tls,
};
use crate::db::copy::{ChatRow, KeyRow, MessageRow, NextIds, SessionRow, TableCounts, UserRow};
use crate::domain::Timestamp;
use crate::search;

/// A PostgreSQL database opened for a copy.
pub(in crate::db) struct Side {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Side {
    /// Connects to the database at `url` and brings its schema up to date (setting up
    /// an empty database; refusing another application's).
    pub(in crate::db) fn open(url: &PostgresUrl) -> Result<Side> {
        let runtime = client_runtime()?;
        let client = block_on(&runtime, async {
            let tls = tls::connector(url)?;
            let config = connection_config(url, Durability::Full, TIMEOUT);
            let (mut client, connection) = config.connect(tls).await?;
            // Driven whenever this side's runtime runs a statement.
            tokio::spawn(connection);
            schema::migrate(&mut client).await?;
            Ok::<_, Error>(client)
        })?;
        Ok(Side { runtime, client })
    }

    /// Runs `sql` (several statements, no parameters).
    fn batch(&mut self, sql: &str) -> Result<()> {
        let client = &self.client;
        block_on(&self.runtime, async move {
            Ok(client.batch_execute(sql).await?)
        })
    }

    /// The rows of the prepared statement `sql` for `params`, each made by `row`.
    fn rows<T: Send>(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        row: impl Fn(&tokio_postgres::Row) -> Result<T> + Send,
    ) -> Result<Vec<T>> {
        let client = &self.client;
        block_on(&self.runtime, async move {
            client.query(sql, params).await?.iter().map(row).collect()
        })
    }

    /// Runs `sql` once for `params`.
    fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<()> {
        let client = &self.client;
        block_on(&self.runtime, async move {
            client.execute(sql, params).await?;
            Ok(())
        })
    }
}

fn limit(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn shown(row: &tokio_postgres::Row, index: usize) -> Result<Timestamp> {
    Ok(Timestamp::from_datetime(
        row.try_get::<_, DateTime<Utc>>(index)?,
    ))
}

fn instants<'a>(values: impl Iterator<Item = &'a Timestamp>) -> Result<Vec<DateTime<Utc>>> {
    values.map(instant).collect()
}

fn count(row: &tokio_postgres::Row, index: usize) -> Result<u64> {
    Ok(u64::try_from(row.try_get::<_, i64>(index)?).unwrap_or_default())
}

/// The tables with identity ids.
const ID_TABLES: [&str; 2] = ["chat_conversations", "chat_messages"];

impl crate::db::copy::Side for Side {
    fn begin_snapshot(&mut self) -> Result<()> {
        self.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    }

    fn begin_write(&mut self) -> Result<()> {
        self.batch(
            "BEGIN; LOCK TABLE users, sessions, chat_conversations, chat_messages, \
             idempotency_keys IN EXCLUSIVE MODE",
        )
    }

    fn commit(&mut self) -> Result<()> {
        self.batch("COMMIT")
    }

    fn end(&mut self) -> Result<()> {
        self.batch("ROLLBACK")
    }

    fn counts(&mut self) -> Result<TableCounts> {
        let mut rows = self.rows(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM sessions), \
             (SELECT count(*) FROM chat_conversations), (SELECT count(*) FROM chat_messages), \
             (SELECT count(*) FROM idempotency_keys)",
            &[],
            |row| {
                Ok(TableCounts {
                    users: count(row, 0)?,
                    sessions: count(row, 1)?,
                    chats: count(row, 2)?,
                    messages: count(row, 3)?,
                    idempotency_keys: count(row, 4)?,
                })
            },
        )?;
        Ok(rows.pop().unwrap_or_default())
    }

    fn next_ids(&mut self) -> Result<NextIds> {
        let mut next = [0; 2];
        for (table, next) in ID_TABLES.into_iter().zip(&mut next) {
            // A sequence's last value is not transactional: it may be past the snapshot,
            // which only leaves a gap.
            let sql = format!(
                "SELECT greatest(coalesce(max(id), 0), coalesce(pg_sequence_last_value(\
                 pg_get_serial_sequence('{table}', 'id')::regclass), 0)) + 1 FROM {table}"
            );
            *next = self
                .rows(&sql, &[], |row| Ok(row.try_get::<_, i64>(0)?))?
                .pop()
                .unwrap_or(1);
        }
        Ok(NextIds {
            chats: next[0],
            messages: next[1],
        })
    }

    fn users(&mut self, after: Option<&UserRow>, limit_: usize) -> Result<Vec<UserRow>> {
        let after = after.map_or("", |row| row.id.as_str());
        self.rows(
            "SELECT id, primary_email, password_hash, created_at, stored_messages, stored_bytes, \
             last_change FROM users WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &limit(limit_)],
            |row| {
                Ok(UserRow {
                    id: row.try_get(0)?,
                    primary_email: row.try_get(1)?,
                    password_hash: row.try_get(2)?,
                    created_at: shown(row, 3)?,
                    stored_messages: row.try_get(4)?,
                    stored_bytes: row.try_get(5)?,
                    last_change: row.try_get(6)?,
                })
            },
        )
    }

    fn sessions(&mut self, after: Option<&SessionRow>, limit_: usize) -> Result<Vec<SessionRow>> {
        let after = after.map_or(&[][..], |row| row.token_hash.as_slice());
        self.rows(
            "SELECT token_hash, user_id, created_at, expires_at FROM sessions \
             WHERE token_hash > $1 ORDER BY token_hash LIMIT $2",
            &[&after, &limit(limit_)],
            |row| {
                Ok(SessionRow {
                    token_hash: row.try_get(0)?,
                    user_id: row.try_get(1)?,
                    created_at: shown(row, 2)?,
                    expires_at: shown(row, 3)?,
                })
            },
        )
    }

    fn chats(&mut self, after: Option<&ChatRow>, limit_: usize) -> Result<Vec<ChatRow>> {
        let after = after.map_or(i64::MIN, |row| row.id);
        self.rows(
            "SELECT id, neptun_user_id, name, model, created_at, updated_at \
             FROM chat_conversations WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &limit(limit_)],
            |row| {
                Ok(ChatRow {
                    id: row.try_get(0)?,
                    user_id: row.try_get(1)?,
                    name: text(row, 2)?.to_owned(),
                    model: text(row, 3)?.to_owned(),
                    created_at: shown(row, 4)?,
                    updated_at: shown(row, 5)?,
                })
            },
        )
    }

    fn messages(&mut self, after: Option<&MessageRow>, limit_: usize) -> Result<Vec<MessageRow>> {
        let (chat, id) = after.map_or((i64::MIN, i64::MIN), |row| (row.chat_id, row.id));
        self.rows(
            "SELECT id, chat_conversation_id, neptun_user_id, message, actor, created_at \
             FROM chat_messages WHERE (chat_conversation_id, id) > ($1, $2) \
             ORDER BY chat_conversation_id, id LIMIT $3",
            &[&chat, &id, &limit(limit_)],
            |row| {
                Ok(MessageRow {
                    id: row.try_get(0)?,
                    chat_id: row.try_get(1)?,
                    user_id: row.try_get(2)?,
                    text: text(row, 3)?.to_owned(),
                    actor: row.try_get(4)?,
                    created_at: shown(row, 5)?,
                })
            },
        )
    }

    fn keys(&mut self, after: Option<&KeyRow>, limit_: usize) -> Result<Vec<KeyRow>> {
        let (user, key) = after.map_or(("", ""), |row| (row.user_id.as_str(), row.key.as_str()));
        self.rows(
            "SELECT user_id, key, request_hash, first_message_id, last_message_id, \
             message_count, created_at FROM idempotency_keys \
             WHERE (user_id, key) > ($1, $2) ORDER BY user_id, key LIMIT $3",
            &[&user, &key, &limit(limit_)],
            |row| {
                Ok(KeyRow {
                    user_id: row.try_get(0)?,
                    key: row.try_get(1)?,
                    request_hash: row.try_get(2)?,
                    first_message_id: row.try_get(3)?,
                    last_message_id: row.try_get(4)?,
                    message_count: row.try_get(5)?,
                    created_at: shown(row, 6)?,
                })
            },
        )
    }

    fn insert_users(&mut self, rows: &[UserRow]) -> Result<()> {
        let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
        let emails: Vec<Option<&str>> = rows.iter().map(|r| r.primary_email.as_deref()).collect();
        let hashes: Vec<Option<&str>> = rows.iter().map(|r| r.password_hash.as_deref()).collect();
        let created = instants(rows.iter().map(|row| &row.created_at))?;
        let messages: Vec<i64> = rows.iter().map(|row| row.stored_messages).collect();
        let bytes: Vec<i64> = rows.iter().map(|row| row.stored_bytes).collect();
        let changes: Vec<i64> = rows.iter().map(|row| row.last_change).collect();
        self.execute(
            "INSERT INTO users (id, primary_email, password_hash, created_at, stored_messages, \
             stored_bytes, last_change) SELECT * FROM unnest($1::text[], $2::text[], \
             $3::text[], $4::timestamptz[], $5::bigint[], $6::bigint[], $7::bigint[])",
            &[
                &ids, &emails, &hashes, &created, &messages, &bytes, &changes,
            ],
        )
    }

    fn insert_sessions(&mut self, rows: &[SessionRow]) -> Result<()> {
        let hashes: Vec<&[u8]> = rows.iter().map(|row| row.token_hash.as_slice()).collect();
        let users: Vec<&str> = rows.iter().map(|row| row.user_id.as_str()).collect();
        let created = instants(rows.iter().map(|row| &row.created_at))?;
        let expires = instants(rows.iter().map(|row| &row.expires_at))?;
        self.execute(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) \
             SELECT * FROM unnest($1::bytea[], $2::text[], $3::timestamptz[], $4::timestamptz[])",
            &[&hashes, &users, &created, &expires],
        )
    }

    fn insert_chats(&mut self, rows: &[ChatRow]) -> Result<()> {
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        let users: Vec<&str> = rows.iter().map(|row| row.user_id.as_str()).collect();
        let names: Vec<&[u8]> = rows.iter().map(|row| row.name.as_bytes()).collect();
        let models: Vec<&[u8]> = rows.iter().map(|row| row.model.as_bytes()).collect();
        let created = instants(rows.iter().map(|row| &row.created_at))?;
        let updated = instants(rows.iter().map(|row| &row.updated_at))?;
        self.execute(
            "INSERT INTO chat_conversations (id, neptun_user_id, name, model, created_at, \
             updated_at) SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::bytea[], \
             $5::timestamptz[], $6::timestamptz[])",
            &[&ids, &users, &names, &models, &created, &updated],
        )
    }

    fn insert_messages(&mut self, rows: &[MessageRow]) -> Result<()> {
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        let chats: Vec<i64> = rows.iter().map(|row| row.chat_id).collect();
        let users: Vec<&str> = rows.iter().map(|row| row.user_id.as_str()).collect();
        let texts: Vec<&[u8]> = rows.iter().map(|row| row.text.as_bytes()).collect();
        let actors: Vec<&str> = rows.iter().map(|row| row.actor.as_str()).collect();
        let created = instants(rows.iter().map(|row| &row.created_at))?;
        let words: Vec<String> = rows.iter().map(|row| search::tsvector(&row.text)).collect();
        self.execute(
            "INSERT INTO chat_messages (id, chat_conversation_id, neptun_user_id, message, \
             actor, created_at, search) SELECT id, chat, owner, message, actor, created_at, \
             words::tsvector FROM unnest($1::bigint[], $2::bigint[], $3::text[], \
             $4::bytea[], $5::text[], $6::timestamptz[], $7::text[]) \
             AS given (id, chat, owner, message, actor, created_at, words)",
            &[&ids, &chats, &users, &texts, &actors, &created, &words],
        )
    }

    fn insert_keys(&mut self, rows: &[KeyRow]) -> Result<()> {
        let users: Vec<&str> = rows.iter().map(|row| row.user_id.as_str()).collect();
        let keys: Vec<&str> = rows.iter().map(|row| row.key.as_str()).collect();
        let hashes: Vec<&[u8]> = rows.iter().map(|row| row.request_hash.as_slice()).collect();
        let firsts: Vec<i64> = rows.iter().map(|row| row.first_message_id).collect();
        let lasts: Vec<i64> = rows.iter().map(|row| row.last_message_id).collect();
        let counts: Vec<i64> = rows.iter().map(|row| row.message_count).collect();
        let created = instants(rows.iter().map(|row| &row.created_at))?;
        self.execute(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, first_message_id, \
             last_message_id, message_count, created_at) SELECT * FROM unnest($1::text[], \
             $2::text[], $3::bytea[], $4::bigint[], $5::bigint[], $6::bigint[], \
             $7::timestamptz[])",
            &[&users, &keys, &hashes, &firsts, &lasts, &counts, &created],
        )
    }

    fn set_next_ids(&mut self, next: NextIds) -> Result<()> {
        for (table, next) in ID_TABLES.into_iter().zip([next.chats, next.messages]) {
            // The last value handed out: one before `next`, or past the largest id stored.
            // With nothing handed out yet (0), the sequence starts over at 1.
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                 greatest($1::bigint - 1, coalesce(max(id), 0), 1), \
                 greatest($1::bigint - 1, coalesce(max(id), 0)) > 0) FROM {table}"
            );
            self.execute(&sql, &[&next])?;
        }
        Ok(())
    }
}
