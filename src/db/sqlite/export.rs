//! Reading a user's export (see [`crate::db::export`]): the user, each live chat in id
//! order followed by its messages in id order, in one read transaction.

use rusqlite::{Connection, params};

use super::{Error, Result, chats, messages, users};
use crate::db::export::{ExportRow, SliceSender, Slicer, hand_over};
use crate::db::{BoxError, Entity};

/// Every live chat of ?1, in id order.
const CHATS: &str = "SELECT id, name, model, neptun_user_id, created_at, updated_at \
     FROM chat_conversations WHERE neptun_user_id = ?1 AND deleted_at IS NULL ORDER BY id";

/// Every message of chat ?1, in id order.
const MESSAGES: &str = "SELECT id, neptun_user_id, message, actor, created_at \
     FROM chat_messages WHERE chat_conversation_id = ?1 ORDER BY id";

/// Hands `user`'s rows to `row`, in export order, without the end row. Run it inside
/// one read transaction. [`Error::NotFound`] if there is no such user.
pub(super) fn visit(
    conn: &Connection,
    user: &str,
    mut row: impl FnMut(ExportRow<'_>) -> Result<()>,
) -> Result<()> {
    let found = users::find_user(conn, user)?.ok_or(Error::NotFound(Entity::User))?;
    row(ExportRow::User(&found))?;
    debug_assert_eq!(
        CHATS.split_once(" FROM").map(|(columns, _)| columns),
        Some(format!("SELECT {}", chats::CHAT_COLUMNS).as_str())
    );
    let mut chat_stmt = conn.prepare_cached(CHATS)?;
    let mut chat_rows = chat_stmt.query([user])?;
    let mut message_stmt = conn.prepare_cached(MESSAGES)?;
    while let Some(chat_row) = chat_rows.next()? {
        let chat = chats::chat_from_row(chat_row)?;
        row(ExportRow::Chat(&chat))?;
        let mut message_rows = message_stmt.query(params![chat.id])?;
        while let Some(message_row) = message_rows.next()? {
            row(ExportRow::Message(messages::message_ref(
                message_row,
                chat.id,
            )?))?;
        }
    }
    Ok(())
}

/// Reads `user`'s export in one read transaction on `conn` and hands it to `slices` a
/// slice at a time, each rendered by `slicer`, waiting on `runtime` for the caller to
/// take the one before. Runs on a blocking thread.
pub(super) fn run<S, F>(
    conn: &Connection,
    user: &str,
    mut slicer: Slicer<S, F>,
    slices: &SliceSender<S>,
    runtime: &tokio::runtime::Handle,
) -> Result<()>
where
    S: Default,
    F: FnMut(&mut S, ExportRow<'_>) -> Result<(), BoxError>,
{
    super::in_read_transaction(conn, || {
        visit(conn, user, |row| match slicer.push(row)? {
            Some(slice) => runtime.block_on(hand_over(slices, slice)),
            None => Ok(()),
        })
    })?;
    let last = slicer.finish()?;
    runtime.block_on(hand_over(slices, last))
}
