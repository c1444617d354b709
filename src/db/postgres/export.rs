//! Reading a user's export (see [`crate::db::export`]): the user, each chat in id order
//! followed by its messages in id order, read a chunk at a time (keyset paging) in one
//! `REPEATABLE READ READ ONLY` transaction, so every chunk comes from one snapshot.

use super::{
    CHAT_COLUMNS, Conn, Db, Error, Result, actor, chat_from_row, find_user, sql_count, text,
};
use crate::db::export::{ExportRest, ExportRow, SliceSender, Slicer, fail, hand_over};
use crate::db::{BoxError, Entity};
use crate::domain::{MessageRef, Timestamp};

/// Up to `$3` chats of user `$1` with ids above `$2`, in id order.
const CHATS: &str = "SELECT id, name, model, neptun_user_id, created_at, updated_at \
     FROM chat_conversations WHERE neptun_user_id = $1 AND id > $2 ORDER BY id LIMIT $3";

/// Up to `$3` messages of chat `$1` with ids above `$2`, in id order.
const MESSAGES: &str = "SELECT id, neptun_user_id, message, actor, created_at \
     FROM chat_messages WHERE chat_conversation_id = $1 AND id > $2 ORDER BY id LIMIT $3";

/// Rows read per statement.
const CHUNK: usize = 256;

impl Db {
    /// See [`crate::db::Db::export`]: a task of its own, holding `turn` (and a pooled
    /// connection) until it ends.
    pub(in crate::db) async fn export<S, F>(
        &self,
        user: String,
        each: F,
        turn: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<ExportRest<S>>
    where
        S: Default + Send + 'static,
        F: FnMut(&mut S, ExportRow<'_>) -> Result<(), BoxError> + Send + 'static,
    {
        debug_assert_eq!(
            CHATS.split_once(" FROM").map(|(columns, _)| columns),
            Some(format!("SELECT {CHAT_COLUMNS}").as_str())
        );
        let (slices, rest) = ExportRest::channel();
        let db = self.clone();
        tokio::spawn(async move {
            let result = db.run_export(&user, Slicer::new(each), &slices).await;
            drop(turn);
            if let Err(err) = result {
                fail(&slices, &user, err);
            }
        });
        Ok(rest)
    }

    async fn run_export<S, F>(
        &self,
        user: &str,
        mut slicer: Slicer<S, F>,
        slices: &SliceSender<S>,
    ) -> Result<()>
    where
        S: Default,
        F: FnMut(&mut S, ExportRow<'_>) -> Result<(), BoxError>,
    {
        let mut conn = self.conn().await?;
        conn.clean = false;
        conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        match read_all(&conn, user, &mut slicer, slices).await {
            Ok(()) => conn.end("ROLLBACK").await?,
            Err(err) => return Err(conn.rollback(err).await),
        }
        drop(conn);
        hand_over(slices, slicer.finish()?).await
    }
}

/// Hands every row of `user`'s export to `slicer`, and each full slice to `slices`.
async fn read_all<S, F>(
    conn: &Conn,
    user: &str,
    slicer: &mut Slicer<S, F>,
    slices: &SliceSender<S>,
) -> Result<()>
where
    S: Default,
    F: FnMut(&mut S, ExportRow<'_>) -> Result<(), BoxError>,
{
    let found = find_user(conn, user)
        .await?
        .ok_or(Error::NotFound(Entity::User))?;
    if let Some(slice) = slicer.push(ExportRow::User(&found))? {
        hand_over(slices, slice).await?;
    }
    let chats = conn.stmt(CHATS).await?;
    let messages = conn.stmt(MESSAGES).await?;
    let mut after_chat = 0_i64;
    loop {
        let chat_rows = conn
            .query(&chats, &[&user, &after_chat, &sql_count(CHUNK)])
            .await?;
        for chat_row in &chat_rows {
            let chat = chat_from_row(chat_row)?;
            after_chat = chat.id;
            if let Some(slice) = slicer.push(ExportRow::Chat(&chat))? {
                hand_over(slices, slice).await?;
            }
            let mut after_message = 0_i64;
            loop {
                let rows = conn
                    .query(&messages, &[&chat.id, &after_message, &sql_count(CHUNK)])
                    .await?;
                for row in &rows {
                    after_message = row.try_get(0)?;
                    let created_at = Timestamp::from_datetime(row.try_get(4)?);
                    let message = MessageRef {
                        id: after_message,
                        chat_conversation_id: chat.id,
                        neptun_user_id: row.try_get(1)?,
                        message: text(row, 2)?,
                        actor: actor(row.try_get(3)?)?,
                        created_at: created_at.as_str(),
                    };
                    if let Some(slice) = slicer.push(ExportRow::Message(message))? {
                        hand_over(slices, slice).await?;
                    }
                }
                if rows.len() < CHUNK {
                    break;
                }
            }
        }
        if chat_rows.len() < CHUNK {
            return Ok(());
        }
    }
}
