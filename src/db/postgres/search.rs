//! Full-text search on PostgreSQL: `chat_messages.search`, a `tsvector` of the words
//! the program makes ([`crate::search`]), written by the statement that stores the
//! message and found through a GIN index.

use futures_util::join;
use tokio_postgres::types::ToSql;

use super::{Db, Result, actor, instant, sql_count, text};
use crate::domain::{
    ChatMessage, Role, SearchFilter, SearchHit, SearchPage, SearchPosition, Timestamp,
};
use crate::search;

/// The hits: user `$2`'s messages matching `$1` (a `tsquery`) up to id `$3` (NULL: the
/// newest now, as [`STATE`] reads it in the same snapshot), narrowed
/// by `$4` (chat), `$5` (actor), `$6` / `$7` (since / until), after position `$8` /
/// `$9` (score, id), best first, `$10` of them. The score is `ts_rank_cd` (how often
/// and how close together the words occur), divided by 1 + the log of the message's
/// number of distinct words (normalization 1), as double precision so that the next
/// page compares it exactly. It depends on the message alone, so pages never shift.
const FIND: &str = "SELECT m.id, m.chat_conversation_id, m.message, m.actor, m.created_at, \
         c.name, ts_rank_cd(m.search, $1::text::tsquery, 1)::float8 AS score \
     FROM chat_messages AS m JOIN chat_conversations AS c ON c.id = m.chat_conversation_id \
     WHERE m.search @@ $1::text::tsquery AND m.neptun_user_id = $2 \
         AND m.id <= coalesce($3::bigint, (SELECT max(id) FROM chat_messages)) \
         AND ($4::bigint IS NULL OR m.chat_conversation_id = $4) \
         AND ($5::text IS NULL OR m.actor = $5) \
         AND ($6::timestamptz IS NULL OR m.created_at >= $6) \
         AND ($7::timestamptz IS NULL OR m.created_at < $7) \
         AND ($8::float8 IS NULL OR ts_rank_cd(m.search, $1::text::tsquery, 1)::float8 < $8 \
              OR (ts_rank_cd(m.search, $1::text::tsquery, 1)::float8 = $8 AND m.id < $9)) \
     ORDER BY score DESC, m.id DESC LIMIT $10";

/// The newest message id of all, and whether every message is indexed.
const STATE: &str = "SELECT (SELECT coalesce(max(id), 0) FROM chat_messages), \
     NOT EXISTS (SELECT 1 FROM chat_messages WHERE search IS NULL)";

/// Up to `$1` of the messages not indexed yet, newest first, locked for this backfill
/// (others skip them).
const UNINDEXED: &str = "SELECT id, message FROM chat_messages WHERE search IS NULL \
     ORDER BY id DESC LIMIT $1 FOR UPDATE SKIP LOCKED";

/// Sets the words `$2` of the messages `$1`.
const SET_WORDS: &str = "UPDATE chat_messages SET search = given.words::tsvector \
     FROM unnest($1::bigint[], $2::text[]) AS given (id, words) \
     WHERE chat_messages.id = given.id";

impl Db {
    /// See [`crate::db::Db::search`].
    pub(in crate::db) async fn search(
        &self,
        user: String,
        query: search::Query,
        filter: SearchFilter,
        newest: Option<i64>,
        position: Option<SearchPosition>,
        limit: usize,
    ) -> Result<SearchPage> {
        let mut conn = self.conn().await?;
        let (find, state) = (conn.stmt(FIND).await?, conn.stmt(STATE).await?);
        let since = filter.since.as_ref().map(instant).transpose()?;
        let until = filter.until.as_ref().map(instant).transpose()?;
        let words = query.to_tsquery();
        let (role, score, after) = (
            filter.actor.map(Role::as_str),
            position.map(|p| p.score),
            position.map(|p| p.id),
        );
        let limit = sql_count(limit);
        // One round trip and one snapshot: where the search stops, and its hits.
        conn.clean = false;
        let (begun, state, rows, ended) = join!(
            conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
            async { conn.query_one(&state, &[]).await },
            async {
                let params: [&(dyn ToSql + Sync); 10] = [
                    &words,
                    &user,
                    &newest,
                    &filter.chat_id,
                    &role,
                    &since,
                    &until,
                    &score,
                    &after,
                    &limit,
                ];
                conn.query(&find, &params).await
            },
            conn.batch_execute("COMMIT"),
        );
        conn.guard(begun.and(ended))?;
        conn.clean = true;
        let state = conn.guard(state)?;
        let newest = match newest {
            Some(newest) => newest,
            None => state.try_get(0)?,
        };
        let complete: bool = state.try_get(1)?;
        let mut hits = Vec::new();
        for row in conn.guard(rows)? {
            hits.push(SearchHit {
                message: ChatMessage {
                    id: row.try_get(0)?,
                    chat_conversation_id: row.try_get(1)?,
                    neptun_user_id: user.clone(),
                    message: text(&row, 2)?.to_owned(),
                    actor: actor(row.try_get(3)?)?,
                    created_at: Timestamp::from_datetime(row.try_get(4)?),
                },
                chat_name: text(&row, 5)?.to_owned(),
                score: row.try_get(6)?,
            });
        }
        Ok(SearchPage {
            hits,
            newest,
            complete,
        })
    }

    /// See [`crate::db::Db::index_backlog`].
    pub(in crate::db) async fn index_backlog(&self, batch: usize) -> Result<Option<(usize, i64)>> {
        let mut conn = self.conn().await?;
        let (unindexed, set) = (conn.stmt(UNINDEXED).await?, conn.stmt(SET_WORDS).await?);
        conn.clean = false;
        let (begun, rows) = join!(conn.batch_execute("BEGIN"), async {
            conn.query(&unindexed, &[&sql_count(batch)]).await
        },);
        let rows = match begun.and(rows) {
            Ok(rows) => rows,
            Err(err) => return Err(conn.rollback(err.into()).await),
        };
        if rows.is_empty() {
            conn.end("ROLLBACK").await?;
            return Ok(None);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut words = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(row.try_get::<_, i64>(0)?);
            words.push(search::tsvector(text(row, 1)?));
        }
        let (updated, committed) = join!(
            async { conn.execute(&set, &[&ids, &words]).await },
            conn.batch_execute("COMMIT"),
        );
        if let Err(err) = updated.and(committed) {
            return Err(conn.rollback(err.into()).await);
        }
        conn.clean = true;
        let lowest = ids.last().copied().unwrap_or(0);
        Ok(Some((
            ids.len(),
            if ids.len() < batch { 0 } else { lowest },
        )))
    }
}
