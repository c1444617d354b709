//! Full-text search on SQLite: the FTS5 table `message_words` (see `schema.sql`), kept
//! in the transaction of every insert (here) and every delete (a trigger).

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OptionalExtension, params};

use super::Result;
use super::messages::actor;
use crate::domain::{ChatMessage, Role, SearchFilter, SearchHit, SearchPosition, Timestamp};
use crate::search;

/// Indexes message `id` with text `message`. Run it in the transaction that stores it.
pub(super) fn index(conn: &Connection, id: i64, message: &str) -> Result<()> {
    conn.prepare_cached("INSERT INTO message_words (rowid, words) VALUES (?1, ?2)")?
        .execute(params![id, search::fts_text(message)])?;
    Ok(())
}

/// Makes [`search::score`] the SQL function `neptun_score(text, query)` on `conn`, the
/// query given as typed (read once per statement).
pub(super) fn register_score(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "neptun_score",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let query = ctx.get_or_create_aux(1, |value| -> Result<_, String> {
                let typed = value.as_str().map_err(|err| err.to_string())?;
                search::Query::parse(typed).map_err(|search::QueryError(message)| message)
            })?;
            let text = ctx
                .get_raw(0)
                .as_str()
                .map_err(|err| rusqlite::Error::UserFunctionError(Box::new(err)))?;
            Ok(search::score(text, &query))
        },
    )
}

/// Up to `limit` of `user`'s messages matching `query` and `filter`, best first (by
/// [`search::score`]; ties newest first), after `position` if given, among the
/// messages up to id `newest`. FTS5 finds the messages that have the words; the score
/// is the program's, not FTS5's bm25, which weighs words by the whole index and so
/// would move a page's cursor whenever a message is stored. The CROSS JOINs keep
/// SQLite from walking the user's messages and asking the index about each: the index
/// is asked once, for the messages that have the words. Run it in a read transaction.
pub(super) fn find(
    conn: &Connection,
    user: &str,
    query: &search::Query,
    filter: &SearchFilter,
    newest: i64,
    position: Option<SearchPosition>,
    limit: usize,
) -> Result<Vec<SearchHit>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, chat_conversation_id, message, actor, created_at, name, score FROM ( \
             SELECT m.id, m.chat_conversation_id, m.message, m.actor, m.created_at, c.name, \
                 neptun_score(m.message, ?11) AS score \
             FROM message_words \
             CROSS JOIN chat_messages AS m ON m.id = message_words.rowid \
             CROSS JOIN chat_conversations AS c ON c.id = m.chat_conversation_id \
             WHERE message_words MATCH ?1 AND m.neptun_user_id = ?2 \
                 AND c.deleted_at IS NULL AND m.id <= ?3 \
                 AND (?4 IS NULL OR m.chat_conversation_id = ?4) \
                 AND (?5 IS NULL OR m.actor = ?5) \
                 AND (?6 IS NULL OR m.created_at >= ?6) \
                 AND (?7 IS NULL OR m.created_at < ?7)) \
         WHERE ?8 IS NULL OR score < ?8 OR (score = ?8 AND id < ?9) \
         ORDER BY score DESC, id DESC LIMIT ?10",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // The query as typed again, for the score (which reads it once per statement).
    let typed = query.to_string();
    let rows = stmt.query_map(
        params![
            query.to_fts5(),
            user,
            newest,
            filter.chat_id,
            filter.actor.map(Role::as_str),
            filter.since.as_ref().map(Timestamp::as_str),
            filter.until.as_ref().map(Timestamp::as_str),
            position.map(|p| p.score),
            position.map(|p| p.id),
            limit,
            typed,
        ],
        |row| {
            Ok(SearchHit {
                message: ChatMessage {
                    id: row.get(0)?,
                    chat_conversation_id: row.get(1)?,
                    neptun_user_id: user.to_owned(),
                    message: row.get(2)?,
                    actor: actor(row, 3)?,
                    created_at: Timestamp::from_stored(row.get(4)?),
                },
                chat_name: row.get(5)?,
                score: row.get(6)?,
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The newest message id of all (0 if none): where a new search's pages stop.
pub(super) fn newest_message(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT coalesce(max(id), 0) FROM chat_messages")?
        .query_row([], |row| row.get(0))?)
}

/// While messages stored before search existed are still to be indexed: the id below
/// which they are.
fn backlog(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT below FROM search_backfill")?
        .query_row([], |row| row.get(0))
        .optional()?)
}

/// Whether every message is indexed (no backfill left).
pub(super) fn complete(conn: &Connection) -> Result<bool> {
    Ok(backlog(conn)?.is_none())
}

/// Indexes up to `batch` of the messages stored before search existed, newest first;
/// how many it indexed and the id below which messages are still to be done (0 once
/// all are), or `None` when there was nothing left to do. Run it in a write
/// transaction of its own.
pub(super) fn backfill(conn: &Connection, batch: usize) -> Result<Option<(usize, i64)>> {
    let Some(below) = backlog(conn)? else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT id, message FROM chat_messages WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let limit = i64::try_from(batch).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![below, limit], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (id, message) in &rows {
        index(conn, *id, message)?;
    }
    match rows.last() {
        Some((lowest, _)) if rows.len() == batch => {
            conn.prepare_cached("UPDATE search_backfill SET below = ?1")?
                .execute([lowest])?;
            Ok(Some((rows.len(), *lowest)))
        }
        _ => {
            conn.prepare_cached("DELETE FROM search_backfill")?
                .execute([])?;
            Ok(Some((rows.len(), 0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of the newest schema with `count` messages stored before search
    /// existed: not indexed, and the backlog marked as migration 007 marks it.
    fn with_unindexed_messages(count: usize) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        register_score(&conn).unwrap();
        conn.execute_batch(
            "INSERT INTO users (id, created_at) VALUES ('u', '2026-01-01T00:00:00.000Z'); \
             INSERT INTO chat_conversations (neptun_user_id, name, model, created_at, updated_at) \
             VALUES ('u', 'c', 'm', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z');",
        )
        .unwrap();
        for n in 0..count {
            conn.execute(
                "INSERT INTO chat_messages (chat_conversation_id, neptun_user_id, message, actor, \
                 created_at) VALUES (1, 'u', ?1, 'user', '2026-01-01T00:00:00.000Z')",
                [format!("Olá número {n}")],
            )
            .unwrap();
        }
        conn.execute_batch(include_str!("migrations/007_search.sql"))
            .unwrap();
        conn
    }

    fn hits(conn: &Connection, typed: &str) -> Vec<i64> {
        let query = search::Query::parse(typed).unwrap();
        let filter = SearchFilter::default();
        find(conn, "u", &query, &filter, i64::MAX, None, 10_000)
            .unwrap()
            .iter()
            .map(|hit| hit.message.id)
            .collect()
    }

    #[test]
    fn the_backlog_indexes_older_messages_a_batch_at_a_time_newest_first() {
        let conn = with_unindexed_messages(1200);
        assert!(!complete(&conn).unwrap());
        assert_eq!(hits(&conn, "ola").len(), 0);

        assert_eq!(backfill(&conn, 500).unwrap(), Some((500, 701)));
        assert_eq!(hits(&conn, "ola").len(), 500);
        assert_eq!(hits(&conn, "numero 1000"), [1001]);
        assert_eq!(backfill(&conn, 500).unwrap(), Some((500, 201)));
        assert_eq!(backfill(&conn, 500).unwrap(), Some((200, 0)));
        assert!(complete(&conn).unwrap());
        assert_eq!(backfill(&conn, 500).unwrap(), None);
        assert_eq!(hits(&conn, "ola").len(), 1200);
    }

    #[test]
    fn a_database_without_messages_has_no_backlog() {
        let conn = with_unindexed_messages(0);
        assert!(complete(&conn).unwrap());
        assert_eq!(backfill(&conn, 500).unwrap(), None);
    }
}
